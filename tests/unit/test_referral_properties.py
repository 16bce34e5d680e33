"""Whatever order requests arrive in, however often, and whatever receivers do or fail to do:
every referral ends in a terminal state or is escalated exactly when its deadline passes."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codes import LegalBasisKind, ReceiverType, ReferralOutcome, ReferralReason, Urgency
from schemas.events import Consent, LegalBasis
from services.referral.domain import (
    AWAITING_RECEIVER,
    JST,
    TERMINAL,
    TRANSITIONS,
    Action,
    DeadlinePolicy,
    NewReferral,
    Receiver,
    Referral,
    Status,
    allowed_actions,
    apply_action,
    escalate_until,
    open_referral,
)

T0 = datetime(2022, 7, 7, 10, 0, tzinfo=JST)
POLICY = DeadlinePolicy()
FOUND = [
    Receiver("muni-131016", ReceiverType.municipality, "131016"),
    Receiver("srsc-131016", ReceiverType.self_reliance_centre, "131016"),
    Receiver("srsc-pref-13", ReceiverType.self_reliance_centre, "130001"),
    Receiver("police-13", ReceiverType.police, "130001"),
]
CONSENT = Consent(given=True, scope=list(ReceiverType), recorded_by="staff-1", recorded_at=T0)
BASES = [
    None,
    LegalBasis(kind=LegalBasisKind.consent, consent=CONSENT),
    LegalBasis(kind=LegalBasisKind.vital_interest),
    LegalBasis(kind=LegalBasisKind.law, reference="law-1"),
]


def detail(action: Action) -> dict:
    if action in (Action.reject, Action.fail, Action.cancel):
        return {"reason": ReferralReason.other}
    return {"outcome": ReferralOutcome.got_help} if action is Action.complete else {}


requests = st.lists(
    st.tuples(st.sampled_from(list(Urgency)), st.sampled_from(BASES), st.integers(0, 60) | st.integers(0, 3 * 24 * 60)),
    min_size=1,
    max_size=6,
)
# (minutes after the previous step, referral index, action): any action, legal or not, or a number that picks
# one of the actions legal at that moment (so that referrals also travel deep into their lives)
steps = st.lists(
    st.tuples(
        st.integers(0, 5) | st.integers(0, 5) | st.integers(0, 2 * 24 * 60),  # minutes after the previous step
        st.integers(0, 5),
        st.integers(0, 5) | st.integers(0, 5) | st.sampled_from(list(Action)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(requests, steps, st.randoms(use_true_random=False), st.integers(1, 3))
def test_every_referral_ends_terminal_or_is_escalated_on_time(asked, steps_, rnd, copies):
    news = [
        NewReferral(f"ref-{i}", f"c-{i}", "npo-a", "131016", None, urgency, basis, T0 + timedelta(minutes=minute))
        for i, (urgency, basis, minute) in enumerate(asked)
    ]
    # at-least-once delivery: each request arrives 1..3 times, in any order, at a random moment
    deliveries = [(minute + rnd.randint(0, 30), n) for (_, _, minute), n in zip(asked, news, strict=True)
                  for _ in range(copies)]
    clock = 0
    acts = []
    for delay, i, a in steps_:
        clock += delay
        acts.append((clock, 1, ("step", i, a)))
    timeline = sorted([(m, 0, ("deliver", n)) for m, n in deliveries] + acts, key=lambda x: (x[0], x[1]))
    state: dict[str, Referral] = {}
    emitted: list = []

    def scan(now: datetime) -> None:
        for rid, ref in list(state.items()):
            for moved, change in escalate_until(ref, now, POLICY):
                assert change.time == ref.overdue_at, "escalated at the moment the deadline passed"
                assert change.time <= now
                ref = moved
                emitted.append(change)
            state[rid] = ref
            assert ref.overdue_at is None or ref.overdue_at > now

    for minute, _, what in timeline:
        now = T0 + timedelta(minutes=minute)
        scan(now)
        if what[0] == "deliver":
            n = what[1]
            if n.referral_id not in state:  # the store's ON CONFLICT DO NOTHING
                ref, change = open_referral(n, FOUND, POLICY)
                state[n.referral_id] = ref
                emitted.append(change)
        else:
            _, i, action = what
            ref = state.get(f"ref-{i % len(news)}")
            if ref is None:
                continue
            if isinstance(action, int):
                legal = [a for a in allowed_actions(ref.status) if a is not Action.cancel]
                if not legal:
                    continue
                action = legal[action % len(legal)]
            if (ref.status, action) not in TRANSITIONS:
                continue
            at = max(now, ref.updated_at or now)
            new, change = apply_action(ref, action, at, "someone", POLICY, **detail(action))
            state[ref.referral_id] = new
            emitted.append(change)

    scan(T0 + timedelta(days=400))
    assert len({c.id for c in emitted}) == len(emitted), "every event id is emitted once"
    assert set(state) == {n.referral_id for n in news}, "duplicates open nothing twice"
    for ref in state.values():
        assert ref.status in TERMINAL or ref.overdue_at is None
        if ref.status in AWAITING_RECEIVER:  # still waiting: then it waits at the last resort
            assert ref.receiver is not None and ref.receiver.type is ReceiverType.secretariat
    for change in emitted:
        if change.type == "referral.escalated":
            assert change.data.reason == "deadline_missed"


@settings(max_examples=100, deadline=None)
@given(requests, st.randoms(use_true_random=False))
def test_the_referrals_opened_do_not_depend_on_the_order_requests_arrive_in(asked, rnd):
    news = [
        NewReferral(f"ref-{i}", f"c-{i}", "npo-a", "131016", None, u, b, T0 + timedelta(minutes=m))
        for i, (u, b, m) in enumerate(asked)
    ]
    shuffled = news * 2
    rnd.shuffle(shuffled)

    def opened(order: list[NewReferral]) -> dict[str, tuple]:
        out: dict[str, tuple] = {}
        for n in order:
            if n.referral_id not in out:
                ref, change = open_referral(n, FOUND, POLICY)
                out[n.referral_id] = (ref, change.id, change.data)
        return out

    assert opened(shuffled) == opened(news)
    assert all(r.status in (Status.requested, Status.rejected) for r, _, _ in opened(news).values())
