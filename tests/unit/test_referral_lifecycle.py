"""A referral's life: who receives it, on what basis, by when, and which step may follow which."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from schemas.codes import LegalBasisKind, ReceiverType, ReferralOutcome, ReferralReason, RiskLevel, Urgency
from schemas.events import Consent, ConsultationRecorded, LegalBasis, ReferralChanged
from services.referral.domain import (
    JST,
    OPEN,
    TERMINAL,
    TRANSITIONS,
    Action,
    DeadlinePolicy,
    IllegalTransition,
    MissingDetail,
    NewReferral,
    Receiver,
    Status,
    add_business_days,
    addressed_to,
    allowed_actions,
    apply_action,
    escalate_until,
    from_consultation,
    is_business_day,
    open_referral,
    prefecture_row,
    receiver_chain,
    referral_id_for_consultation,
)

T0 = datetime(2022, 7, 7, 10, 0, tzinfo=JST)  # a Thursday
POLICY = DeadlinePolicy()
CHIYODA = "131016"
FOUND = [
    Receiver("muni-131016", ReceiverType.municipality, CHIYODA),
    Receiver("srsc-131016", ReceiverType.self_reliance_centre, CHIYODA),
    Receiver("srsc-pref-13", ReceiverType.self_reliance_centre, "130001"),
    Receiver("police-13", ReceiverType.police, "130001"),
]


def consent(*scope: ReceiverType) -> Consent:
    return Consent(given=True, scope=list(scope), recorded_by="staff-7", recorded_at=T0)


def consented(*scope: ReceiverType) -> LegalBasis:
    return LegalBasis(kind=LegalBasisKind.consent, consent=consent(*scope))


ALL_LOCAL = (ReceiverType.municipality, ReceiverType.self_reliance_centre, ReceiverType.police)


def request(urgency: Urgency = Urgency.standard, basis: LegalBasis | None = None, *, need=None,
            municipality: str | None = CHIYODA) -> NewReferral:
    return NewReferral("ref-1", "c-1", "npo-a", municipality, need, urgency,
                       basis if basis is not None else consented(*ALL_LOCAL), T0)


def opened(urgency: Urgency = Urgency.standard, **kw):
    return open_referral(request(urgency, **kw), FOUND, POLICY)


def at_state(status: Status):
    """A referral brought to ``status`` through legal steps."""
    ref, _ = opened()
    path = {
        Status.requested: [],
        Status.received: [Action.acknowledge],
        Status.accepted: [Action.acknowledge, Action.accept],
        Status.rejected: [Action.acknowledge, Action.reject],
        Status.in_progress: [Action.acknowledge, Action.accept, Action.start],
        Status.completed: [Action.acknowledge, Action.accept, Action.start, Action.complete],
        Status.failed: [Action.acknowledge, Action.accept, Action.start, Action.fail],
        Status.cancelled: [Action.cancel],
    }[status]
    for action in path:
        ref, _ = apply_action(ref, action, T0, "muni-131016", POLICY, **details(action))
    return ref


def details(action: Action) -> dict:
    if action in (Action.reject, Action.fail, Action.cancel):
        return {"reason": ReferralReason.no_capacity}
    if action is Action.complete:
        return {"outcome": ReferralOutcome.got_help}
    return {}


# --- the state machine ----------------------------------------------------------------------------

LEGAL = sorted(((s, a) for (s, a) in TRANSITIONS), key=str)
ILLEGAL = sorted(((s, a) for s in Status for a in Action if (s, a) not in TRANSITIONS), key=str)


@pytest.mark.parametrize(("status", "action"), LEGAL)
def test_every_legal_step_moves_the_referral_and_says_so_in_an_event(status, action):
    ref = at_state(status)
    new, change = apply_action(ref, action, T0 + timedelta(minutes=1), "muni-131016", POLICY, **details(action))
    assert new.status is TRANSITIONS[(status, action)]
    assert new.version == ref.version + 1
    assert change.type == f"referral.{new.status.value}"
    assert change.id == f"ref-1.v{new.version}.{new.status.value}"
    assert isinstance(change.data, ReferralChanged) and change.data.referral_id == "ref-1"


@pytest.mark.parametrize(("status", "action"), ILLEGAL)
def test_every_illegal_step_is_refused_with_the_allowed_ones(status, action):
    ref = at_state(status)
    with pytest.raises(IllegalTransition) as caught:
        apply_action(ref, action, T0, "muni-131016", POLICY, **details(action))
    assert caught.value.allowed == allowed_actions(status)
    assert action not in caught.value.allowed


def test_terminal_states_allow_nothing_and_open_ones_allow_cancel():
    for status in TERMINAL:
        assert allowed_actions(status) == []
    for status in OPEN:
        assert Action.cancel in allowed_actions(status)


def test_rejecting_failing_and_cancelling_need_a_reason_and_completing_an_outcome():
    with pytest.raises(MissingDetail):
        apply_action(at_state(Status.received), Action.reject, T0, "x", POLICY)
    with pytest.raises(MissingDetail):
        apply_action(at_state(Status.in_progress), Action.fail, T0, "x", POLICY)
    with pytest.raises(MissingDetail):
        apply_action(at_state(Status.in_progress), Action.complete, T0, "x", POLICY)
    done, change = apply_action(at_state(Status.in_progress), Action.complete, T0, "x", POLICY,
                                outcome=ReferralOutcome.declined_by_person)
    assert change.data.outcome is ReferralOutcome.declined_by_person and done.status is Status.completed


# --- receivers -------------------------------------------------------------------------------------


def test_a_referral_goes_to_the_municipal_office_then_its_centre_then_the_prefectures_then_the_secretariat():
    chain = receiver_chain(CHIYODA, None, False, list(reversed(FOUND)))
    assert [r.id for r in chain] == ["muni-131016", "srsc-131016", "srsc-pref-13", "secretariat"]


def test_imminent_risk_goes_to_the_police_first():
    assert [r.id for r in receiver_chain(CHIYODA, None, True, FOUND)] == ["police-13", "secretariat"]


def test_a_need_for_a_self_reliance_centre_starts_there():
    chain = receiver_chain(CHIYODA, ReceiverType.self_reliance_centre, False, FOUND)
    assert [r.id for r in chain] == ["srsc-131016", "srsc-pref-13", "secretariat"]


def test_without_a_municipality_the_secretariat_receives_it():
    assert [r.id for r in receiver_chain(None, None, False, FOUND)] == ["secretariat"]


def test_the_prefecture_row_carries_its_check_digit():
    assert prefecture_row("131016") == "130001"
    assert prefecture_row("011002") == "010006"


def test_a_receiver_sees_only_what_is_addressed_to_it():
    ref, _ = opened()
    assert addressed_to(ref, "muni-131016")
    assert not addressed_to(ref, "srsc-131016")


# --- legal basis -----------------------------------------------------------------------------------


def test_a_request_without_legal_basis_is_rejected_with_a_clear_reason():
    ref, change = open_referral(
        NewReferral("ref-2", "c-2", "npo-a", CHIYODA, None, Urgency.standard, None, T0), FOUND, POLICY
    )
    assert ref.status is Status.rejected and ref.receiver is None
    assert change.type == "referral.rejected" and change.data.reason == "no_legal_basis"


def test_consent_reaches_only_the_receivers_it_names():
    ref, _ = opened(basis=consented(ReceiverType.self_reliance_centre))
    assert [r.id for r in ref.chain] == ["srsc-131016", "srsc-pref-13", "secretariat"]


def test_consent_for_no_receiver_on_the_chain_is_refused():
    _, change = opened(basis=consented(ReceiverType.npo))
    assert change.data.reason == ReferralReason.consent_out_of_scope.value


def test_with_consent_but_no_known_municipality_the_secretariat_receives_it():
    ref, change = opened(municipality=None)
    assert change.type == "referral.created" and [r.id for r in ref.chain] == ["secretariat"]
    assert ref.deadline is None  # the last resort has no deadline


def test_vital_interest_is_a_basis_only_for_imminent_risk():
    _, change = opened(Urgency.standard, basis=LegalBasis(kind=LegalBasisKind.vital_interest))
    assert change.data.reason == "vital_interest_not_imminent"
    ref, change = opened(Urgency.imminent, basis=LegalBasis(kind=LegalBasisKind.vital_interest))
    assert change.type == "referral.created" and ref.receiver.id == "police-13"
    assert change.data.legal_basis is LegalBasisKind.vital_interest


def record(**changes) -> ConsultationRecorded:
    values = dict(contact_id="c-9", organisation_id="npo-a", categories=["loneliness"], age_band="age30s",
                  risk=RiskLevel.medium, referral_needed=True, municipality=CHIYODA,
                  consent=consent(ReceiverType.municipality))
    values.update(changes)
    return ConsultationRecorded(**values)


def test_a_consultation_at_imminent_risk_without_consent_is_passed_on_for_vital_interest():
    new = from_consultation(record(risk=RiskLevel.imminent, consent=None), T0)
    assert new.basis.kind is LegalBasisKind.vital_interest and new.urgency is Urgency.imminent


def test_a_consultation_without_consent_or_imminent_risk_has_no_basis():
    assert from_consultation(record(consent=None), T0).basis is None


def test_a_consultation_that_needs_no_referral_opens_none_and_one_that_does_has_a_stable_id():
    assert from_consultation(record(referral_needed=False), T0) is None
    assert from_consultation(record(), T0).referral_id == referral_id_for_consultation("c-9")
    assert from_consultation(record(), T0 + timedelta(hours=1)).referral_id == referral_id_for_consultation("c-9")


# --- deadlines ---------------------------------------------------------------------------------------


def test_imminent_referrals_must_be_acknowledged_within_15_minutes():
    ref, change = opened(Urgency.imminent)
    assert ref.deadline == T0 + timedelta(minutes=15) == change.data.deadline


def test_standard_referrals_must_be_acknowledged_within_one_business_day():
    ref, _ = opened(Urgency.standard)
    assert ref.deadline == T0 + timedelta(days=1)  # Thursday → Friday


def test_business_days_skip_weekends_and_japanese_public_holidays():
    friday_before_marine_day = datetime(2022, 7, 15, 10, 0, tzinfo=JST)  # 7/18 海の日
    assert add_business_days(friday_before_marine_day, 1) == datetime(2022, 7, 19, 10, 0, tzinfo=JST)
    saturday = datetime(2022, 7, 9, 22, 0, tzinfo=JST)
    assert add_business_days(saturday, 1) == datetime(2022, 7, 11, 22, 0, tzinfo=JST)
    assert not is_business_day(datetime(2022, 12, 30).date())  # the year-end break of public offices
    assert not is_business_day(datetime(2023, 1, 9).date())  # 成人の日


def test_acknowledging_starts_a_deadline_for_the_decision_and_accepting_ends_it():
    ref, _ = opened(Urgency.imminent)
    acked, change = apply_action(ref, Action.acknowledge, T0 + timedelta(minutes=5), "muni-131016", POLICY)
    assert acked.deadline == T0 + timedelta(minutes=20) == change.data.deadline
    accepted, change = apply_action(acked, Action.accept, T0 + timedelta(minutes=6), "muni-131016", POLICY)
    assert accepted.overdue_at is None and change.data.deadline is None


def test_a_missed_deadline_escalates_to_the_next_receiver_at_the_deadline_itself():
    ref, _ = opened(Urgency.imminent, basis=LegalBasis(kind=LegalBasisKind.vital_interest))
    [(moved, change)] = escalate_until(ref, T0 + timedelta(minutes=16), POLICY)
    assert change.type == "referral.escalated" and change.time == T0 + timedelta(minutes=15)
    assert change.data.from_receiver_id == "police-13" and change.data.receiver_id == "secretariat"
    assert change.data.reason == "deadline_missed" and change.id == "ref-1.v2.escalated"
    assert moved.status is Status.requested and moved.deadline is None  # the secretariat is the last resort


def test_a_clock_that_jumps_over_several_deadlines_escalates_once_for_each():
    ref, _ = opened(Urgency.standard)
    steps = escalate_until(ref, T0 + timedelta(days=30), POLICY)
    assert [c.data.receiver_id for _, c in steps] == ["srsc-131016", "srsc-pref-13", "secretariat"]
    assert [c.time for _, c in steps] == [T0 + timedelta(days=1), T0 + timedelta(days=4), T0 + timedelta(days=5)]
    assert escalate_until(steps[-1][0], T0 + timedelta(days=300), POLICY) == []


def test_nothing_escalates_before_the_deadline_or_after_the_receiver_accepted():
    ref, _ = opened(Urgency.imminent)
    assert escalate_until(ref, T0 + timedelta(minutes=14, seconds=59), POLICY) == []
    assert escalate_until(at_state(Status.accepted), T0 + timedelta(days=30), POLICY) == []
