"""referral's rules: who receives a case, on what legal basis, by when, and what may happen next.

Pure: no I/O, no clock. Every function takes the moment it decides at (an event's time, or the
"now" the caller's clock injected) and returns new state plus the events that make it known.

- Lifecycle (FHIR/Gravity names): requested → received → accepted | rejected → in_progress →
  completed | failed; cancelled from any open state. ``TRANSITIONS`` is the whole machine.
- Receivers: the chain for a municipality and a need (its own office, its self-reliance centre, the
  prefecture's centre; police for imminent risk), ending with the secretariat, the last resort.
- Deadlines: while a referral waits for its receiver (requested: acknowledge; received: accept or
  reject) it has a deadline by urgency. A missed one escalates to the next receiver in the chain.
  The escalation happens *at* the missed deadline (its event time is the deadline), so whoever
  notices it — and whenever — derives the same event.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

import jpholiday

from schemas.codes import LegalBasisKind, ReceiverType, ReferralOutcome, ReferralReason, RiskLevel, Urgency
from schemas.events import ConsultationRecorded, LegalBasis, ReferralChanged, ReferralRequested
from schemas.timezone import JST

SECRETARIAT = "secretariat"  # the secretariat's organisation id (tsunagu.auth.SECRETARIAT_ORG)
ACTOR_SERVICE = "referral"  # changes the service makes by itself (creation, refusal, escalation)


class Status(StrEnum):
    requested = "requested"
    received = "received"
    accepted = "accepted"
    rejected = "rejected"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class Action(StrEnum):
    acknowledge = "acknowledge"
    accept = "accept"
    reject = "reject"
    start = "start"
    complete = "complete"
    fail = "fail"
    cancel = "cancel"


OPEN = frozenset({Status.requested, Status.received, Status.accepted, Status.in_progress})
TERMINAL = frozenset({Status.rejected, Status.completed, Status.failed, Status.cancelled})
AWAITING_RECEIVER = frozenset({Status.requested, Status.received})  # the states that carry a deadline

TRANSITIONS: dict[tuple[Status, Action], Status] = {
    (Status.requested, Action.acknowledge): Status.received,
    (Status.received, Action.accept): Status.accepted,
    (Status.received, Action.reject): Status.rejected,
    (Status.accepted, Action.start): Status.in_progress,
    (Status.in_progress, Action.complete): Status.completed,
    (Status.in_progress, Action.fail): Status.failed,
    **{(s, Action.cancel): Status.cancelled for s in OPEN},
}
NEEDS_REASON = frozenset({Action.reject, Action.fail, Action.cancel})
NEEDS_OUTCOME = frozenset({Action.complete})
# Only the secretariat cancels; the receiver a referral is addressed to does the rest.
SECRETARIAT_ONLY = frozenset({Action.cancel})

EVENT_OF: dict[Status, str] = {
    Status.received: "referral.received",
    Status.accepted: "referral.accepted",
    Status.rejected: "referral.rejected",
    Status.in_progress: "referral.in_progress",
    Status.completed: "referral.completed",
    Status.failed: "referral.failed",
    Status.cancelled: "referral.cancelled",
}


def allowed_actions(status: Status) -> list[Action]:
    """The actions that are legal from ``status``, in lifecycle order."""
    return [a for (s, a) in TRANSITIONS if s == status]


class IllegalTransition(Exception):
    def __init__(self, status: Status, action: Action) -> None:
        self.status = status
        self.action = action
        self.allowed = allowed_actions(status)
        super().__init__(f"cannot {action.value} a referral that is {status.value}")


class MissingDetail(ValueError):
    """An action was asked for without the reason or outcome it needs."""


# --- business days ---------------------------------------------------------------------------


def is_business_day(day: date) -> bool:
    """Mon–Fri, not a national holiday (jpholiday), not the year-end break of public offices (12/29–1/3)."""
    if day.weekday() >= 5 or jpholiday.is_holiday(day):
        return False
    return not ((day.month == 12 and day.day >= 29) or (day.month == 1 and day.day <= 3))


def add_business_days(start: datetime, days: int) -> datetime:
    """The same time of day (JST) on the ``days``-th business day after ``start``'s date.

    Friday 10:00 + 1 → Monday 10:00 (Tuesday if Monday is a holiday); Saturday 10:00 + 1 → Monday 10:00.
    """
    local = start.astimezone(JST)
    day = local.date()
    counted = 0
    while counted < days:
        day += timedelta(days=1)
        if is_business_day(day):
            counted += 1
    return datetime.combine(day, local.timetz()).replace(tzinfo=JST)


@dataclass(frozen=True)
class DeadlinePolicy:
    imminent_minutes: int = 15
    urgent_hours: int = 4
    standard_business_days: int = 1

    def deadline(self, start: datetime, urgency: Urgency) -> datetime:
        if urgency is Urgency.imminent:
            return start + timedelta(minutes=self.imminent_minutes)
        if urgency is Urgency.urgent:
            return start + timedelta(hours=self.urgent_hours)
        return add_business_days(start, self.standard_business_days)


# --- the directory -----------------------------------------------------------------------------


def prefecture_row(code: str) -> str:
    """The official list's row of the prefecture of a municipality or prefecture code ("131016" → "130001")."""
    first_five = f"{code[:2]}000"
    weights = (6, 5, 4, 3, 2)
    check = (11 - sum(int(d) * w for d, w in zip(first_five, weights, strict=True)) % 11) % 10
    return f"{first_five}{check}"


@dataclass(frozen=True)
class Receiver:
    """A receiving service from the directory, as seen from one area it covers."""

    id: str  # the organisation id: receivers authenticate with keys issued for it
    type: ReceiverType
    area: str  # the JIS code of the area through which it was found


SECRETARIAT_RECEIVER = Receiver(SECRETARIAT, ReceiverType.secretariat, "")


def receiver_chain(
    municipality: str | None, need: ReceiverType | None, imminent: bool, found: list[Receiver]
) -> list[Receiver]:
    """The receivers to try, in order, ending with the secretariat.

    ``found`` are the directory's services covering the municipality or its prefecture (in any
    order). Ties within one tier go by organisation id, so every process derives the same chain.
    """
    if municipality is None:
        return [SECRETARIAT_RECEIVER]
    pref = prefecture_row(municipality)
    ordered = sorted(found, key=lambda r: r.id)

    def tier(kind: ReceiverType, area: str) -> list[Receiver]:
        return [r for r in ordered if r.type is kind and r.area == area]

    office = tier(ReceiverType.municipality, municipality)
    centre = tier(ReceiverType.self_reliance_centre, municipality) + tier(ReceiverType.self_reliance_centre, pref)
    police = tier(ReceiverType.police, municipality) + tier(ReceiverType.police, pref)
    npo = tier(ReceiverType.npo, municipality) + tier(ReceiverType.npo, pref)
    if imminent or need is ReceiverType.police:
        chain = police
    elif need is ReceiverType.self_reliance_centre:
        chain = centre
    elif need is ReceiverType.npo:
        chain = npo + office + centre
    else:
        chain = office + centre
    unique = list({r.id: r for r in chain}.values())
    return [*unique, SECRETARIAT_RECEIVER]


# --- opening a referral ------------------------------------------------------------------------


@dataclass(frozen=True)
class NewReferral:
    """What a consultation record or a counsellor's request asks for."""

    referral_id: str
    contact_id: str
    organisation_id: str
    municipality: str | None
    need: ReceiverType | None
    urgency: Urgency
    basis: LegalBasis | None
    at: datetime  # the event time of the request


def referral_id_for_consultation(contact_id: str) -> str:
    # One referral per contact from consultation records: a corrected re-send opens no second one.
    return "ref-" + hashlib.sha256(f"consultation:{contact_id}".encode()).hexdigest()[:24]


def urgency_of(risk: RiskLevel) -> Urgency:
    if risk is RiskLevel.imminent:
        return Urgency.imminent
    if risk is RiskLevel.high:
        return Urgency.urgent
    return Urgency.standard


def basis_of_consultation(record: ConsultationRecorded) -> LegalBasis | None:
    """Consent when it was given; vital interest when life is at imminent risk and consent does not
    cover the police; otherwise none (the request will be refused)."""
    consent = record.consent if record.consent is not None and record.consent.given else None
    if record.risk is RiskLevel.imminent and (consent is None or ReceiverType.police not in consent.scope):
        return LegalBasis(kind=LegalBasisKind.vital_interest)
    if consent is not None:
        return LegalBasis(kind=LegalBasisKind.consent, consent=consent)
    return None


def from_consultation(record: ConsultationRecorded, at: datetime) -> NewReferral | None:
    if not record.referral_needed:
        return None
    return NewReferral(
        referral_id=referral_id_for_consultation(record.contact_id),
        contact_id=record.contact_id,
        organisation_id=record.organisation_id,
        municipality=record.municipality,
        need=None,
        urgency=urgency_of(record.risk),
        basis=basis_of_consultation(record),
        at=at,
    )


def from_request(request: ReferralRequested, at: datetime) -> NewReferral:
    return NewReferral(
        referral_id=request.referral_id,
        contact_id=request.contact_id,
        organisation_id=request.organisation_id,
        municipality=request.municipality,
        need=request.need,
        urgency=request.urgency,
        basis=request.legal_basis,
        at=at,
    )


@dataclass(frozen=True)
class Referral:
    referral_id: str
    contact_id: str
    organisation_id: str
    municipality: str | None
    urgency: Urgency
    status: Status
    chain: tuple[Receiver, ...]  # ends with the secretariat
    position: int  # index in chain of the current receiver
    deadline: datetime | None
    escalations: int
    version: int  # one more with every change; part of each event id
    basis: LegalBasis | None
    reason: ReferralReason | None = None
    outcome: ReferralOutcome | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    need: ReceiverType | None = None  # the receiver type the request asked for (fixed with the chain)

    @property
    def receiver(self) -> Receiver | None:
        return self.chain[self.position] if self.chain else None

    @property
    def overdue_at(self) -> datetime | None:
        """When this referral is escalated if nothing happens: its deadline while awaiting the receiver."""
        return self.deadline if self.status in AWAITING_RECEIVER else None


@dataclass(frozen=True)
class Change:
    """One step of a referral's life, as the event that makes it known."""

    type: str  # short type, e.g. referral.received
    id: str  # deterministic: referral id, version, step
    time: datetime
    data: ReferralChanged


def _change(ref: Referral, short: str, at: datetime, actor: str, **more: Any) -> Change:
    receiver = ref.receiver
    data = ReferralChanged(
        referral_id=ref.referral_id,
        contact_id=ref.contact_id,
        receiver_id=receiver.id if receiver else None,
        receiver_type=receiver.type if receiver else None,
        urgency=ref.urgency,
        deadline=ref.overdue_at,
        reason=ref.reason.value if ref.reason else None,
        outcome=ref.outcome,
        organisation_id=ref.organisation_id,
        municipality=ref.municipality,
        legal_basis=ref.basis.kind if ref.basis else None,
        escalations=ref.escalations,
        actor=actor,
        **more,
    )
    step = short.removeprefix("referral.")
    return Change(type=short, id=f"{ref.referral_id}.v{ref.version}.{step}", time=at, data=data)


def _refusal(
    basis: LegalBasis | None, urgency: Urgency, chain: list[Receiver], consented: list[Receiver]
) -> ReferralReason | None:
    if basis is None:
        return ReferralReason.no_legal_basis
    if basis.kind is LegalBasisKind.vital_interest and urgency is not Urgency.imminent:
        return ReferralReason.vital_interest_not_imminent
    if len(chain) > 1 and len(consented) == 1:  # there were local receivers, but the consent covers none
        return ReferralReason.consent_out_of_scope
    return None


# What a stored referral holds of the request that opened it, compared when another request names
# the same referral_id. Not the event time: a re-sent request is the same request.
REQUEST_FIELDS = ("contact_id", "organisation_id", "municipality", "urgency", "need", "legal_basis")


def differing_fields(stored: Referral, asked: NewReferral, *, need_recorded: bool = True) -> list[str]:
    """The names of the request's fields (``REQUEST_FIELDS``, in that order) whose values differ from
    what the referral already stored under the same id holds — never the values. Empty: the same
    request again (an at-least-once re-delivery, or a re-send). ``need_recorded`` false: the stored
    row predates the recording of ``need``, which is then not compared."""

    def basis(b: LegalBasis | None) -> dict[str, Any] | None:
        return b.model_dump() if b is not None else None  # datetimes compare by instant

    values = {
        "contact_id": (stored.contact_id, asked.contact_id),
        "organisation_id": (stored.organisation_id, asked.organisation_id),
        "municipality": (stored.municipality, asked.municipality),
        "urgency": (stored.urgency, asked.urgency),
        "need": (stored.need, asked.need) if need_recorded else (None, None),
        "legal_basis": (basis(stored.basis), basis(asked.basis)),
    }
    return [name for name in REQUEST_FIELDS if values[name][0] != values[name][1]]


def open_referral(request: NewReferral, found: list[Receiver], policy: DeadlinePolicy) -> tuple[Referral, Change]:
    """A new referral addressed to the first receiver of its chain — or, without a legal basis for
    any receiver, a referral rejected at once with the reason (event ``referral.rejected``, no receiver)."""
    imminent = request.urgency is Urgency.imminent
    full = receiver_chain(request.municipality, request.need, imminent, found)
    chain = full
    basis = request.basis
    if basis is not None and basis.kind is LegalBasisKind.consent and basis.consent is not None:
        # Consent reaches only the receiver types it names (the secretariat runs the network itself).
        scope = set(basis.consent.scope)
        chain = [r for r in full if r.type in scope or r.type is ReceiverType.secretariat]
    refusal = _refusal(basis, request.urgency, full, chain)
    base = Referral(
        referral_id=request.referral_id,
        contact_id=request.contact_id,
        organisation_id=request.organisation_id,
        municipality=request.municipality,
        urgency=request.urgency,
        status=Status.requested,
        chain=tuple(chain),
        position=0,
        deadline=None,
        escalations=0,
        version=1,
        basis=basis,
        created_at=request.at,
        updated_at=request.at,
        need=request.need,
    )
    if refusal is not None:
        ref = replace(base, status=Status.rejected, chain=(), reason=refusal)
        return ref, _change(ref, "referral.rejected", request.at, ACTOR_SERVICE)
    ref = replace(base, deadline=_deadline_for(base, request.at, policy))
    return ref, _change(ref, "referral.created", request.at, ACTOR_SERVICE)


def _deadline_for(ref: Referral, start: datetime, policy: DeadlinePolicy) -> datetime | None:
    receiver = ref.receiver
    if receiver is None or receiver.type is ReceiverType.secretariat:
        return None  # the last resort: the secretariat sees every open referral, nobody is after it
    return policy.deadline(start, ref.urgency)


# --- what receivers do ---------------------------------------------------------------------------


def apply_action(
    ref: Referral,
    action: Action,
    at: datetime,
    actor: str,
    policy: DeadlinePolicy,
    *,
    reason: ReferralReason | None = None,
    outcome: ReferralOutcome | None = None,
) -> tuple[Referral, Change]:
    """The receiver (or the secretariat) acts; raises IllegalTransition or MissingDetail."""
    target = TRANSITIONS.get((ref.status, action))
    if target is None:
        raise IllegalTransition(ref.status, action)
    if action in NEEDS_REASON and reason is None:
        raise MissingDetail(f"{action.value} needs a reason code")
    if action in NEEDS_OUTCOME and outcome is None:
        raise MissingDetail(f"{action.value} needs an outcome code")
    new = replace(
        ref,
        status=target,
        version=ref.version + 1,
        reason=reason if action in NEEDS_REASON else ref.reason,
        outcome=outcome if action in NEEDS_OUTCOME else ref.outcome,
        updated_at=at,
    )
    # Acknowledging starts the clock for the decision (accept or reject); after that, no deadline.
    new = replace(new, deadline=_deadline_for(new, at, policy) if target is Status.received else None)
    return new, _change(new, EVENT_OF[target], at, actor)


# --- missed deadlines ----------------------------------------------------------------------------


def is_overdue(ref: Referral, now: datetime) -> bool:
    due = ref.overdue_at
    return due is not None and due <= now


def escalate(ref: Referral, policy: DeadlinePolicy) -> tuple[Referral, Change]:
    """The deadline passed: hand the referral to the next receiver of its chain (at last the
    secretariat). The event's time is the missed deadline, so it does not depend on when it was noticed."""
    missed = ref.overdue_at
    assert missed is not None, "only a referral awaiting its receiver past a deadline escalates"
    position = min(ref.position + 1, len(ref.chain) - 1)
    moved = replace(
        ref,
        status=Status.requested,
        position=position,
        escalations=ref.escalations + 1,
        version=ref.version + 1,
        reason=ReferralReason.deadline_missed,
        updated_at=missed,
    )
    moved = replace(moved, deadline=_deadline_for(moved, missed, policy))
    before = ref.receiver
    return moved, _change(
        moved, "referral.escalated", missed, ACTOR_SERVICE, from_receiver_id=before.id if before else None
    )


def escalate_until(ref: Referral, now: datetime, policy: DeadlinePolicy) -> list[tuple[Referral, Change]]:
    """Every escalation due by ``now`` (several when the clock jumped over more than one deadline),
    each with the referral as it stood after it; the last is the current state."""
    steps: list[tuple[Referral, Change]] = []
    while is_overdue(ref, now):
        ref, change = escalate(ref, policy)
        steps.append((ref, change))
    return steps


def addressed_to(ref: Referral, org_id: str) -> bool:
    """Receivers see only what is addressed to them now."""
    receiver = ref.receiver
    return receiver is not None and receiver.id == org_id

