"""What each event tells about a contact, a consultation or a referral, and how facts from several
events combine.

Every event becomes a *slot* of facts (its event time, a tie-break, the values it carries). Slots of
the same kind combine by a rule that is commutative, associative and idempotent — keep the earliest
(``min``) or the latest (``max``) by (event time, tie-break) — so the facts of a contact are the same
whatever order its events arrive in, and however often. ``store/facts.py`` applies the very same rules
in SQL (``ON CONFLICT ... DO UPDATE``), so figures computed over the facts are exact under duplicates,
reordering and late events, and a replay from the start gives identical results.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from schemas import ValidatedEvent
from schemas.codes import LabelledCode

# A slot: (event time, tie-break, values...). The tie-break (source + id) only matters when two
# different events of the same kind carry the same event time.
Slot = tuple[Any, ...] | None


def _earliest(a: Slot, b: Slot) -> Slot:
    if a is None:
        return b
    if b is None:
        return a
    return a if a[:2] <= b[:2] else b


def _latest(a: Slot, b: Slot) -> Slot:
    if a is None:
        return b
    if b is None:
        return a
    return a if a[:2] >= b[:2] else b


def _least(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _greatest(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


# --- contacts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContactFacts:
    """What the events say about one contact. Each slot: (at, tie-break, values...)."""

    contact_id: str
    received: Slot = None  # earliest contact.received: (at, tb, channel, caller_key, prefecture)
    chosen: Slot = None  # latest contact.field_selected: (at, tb, field)
    answered: Slot = None  # earliest contact.answered: (at, tb, wait_seconds, desk_id, organisation_id)
    abandoned: Slot = None  # earliest contact.abandoned: (at, tb, stage, wait_seconds)
    ended: Slot = None  # latest contact.ended: (at, tb, talk_seconds)
    # latest routing.assigned: (at, tb, desk_id, organisation_id, field, channel, seat, seat_capacity)
    assigned: Slot = None
    queued_at: datetime | None = None  # earliest routing.queued
    overflow_tier: int | None = None  # highest routing.overflowed tier
    triaged: Slot = None  # latest contact.triaged: (at, tb, risk)
    # earliest contact.transferred: a transfer hands the same contact on, so it only marks the contact
    # (the earliest answer stays its one connection, whatever the number of transfers)
    transferred_at: datetime | None = None

    def merge(self, other: ContactFacts) -> ContactFacts:
        assert other.contact_id == self.contact_id
        return ContactFacts(
            self.contact_id,
            received=_earliest(self.received, other.received),
            chosen=_latest(self.chosen, other.chosen),
            answered=_earliest(self.answered, other.answered),
            abandoned=_earliest(self.abandoned, other.abandoned),
            ended=_latest(self.ended, other.ended),
            assigned=_latest(self.assigned, other.assigned),
            queued_at=_least(self.queued_at, other.queued_at),
            overflow_tier=_greatest(self.overflow_tier, other.overflow_tier),
            triaged=_latest(self.triaged, other.triaged),
            transferred_at=_least(self.transferred_at, other.transferred_at),
        )


@dataclass(frozen=True)
class ConsultationFacts:
    """The latest consultation.recorded of a contact (a correction replaces the record)."""

    contact_id: str
    recorded: Slot = None  # (at, tb, organisation_id, desk_id, field, categories, age_band, risk, referral_needed)

    def merge(self, other: ConsultationFacts) -> ConsultationFacts:
        return ConsultationFacts(self.contact_id, _latest(self.recorded, other.recorded))


# Where a referral stands; on equal event times the later step wins.
REFERRAL_STATES = (
    "requested", "created", "received", "accepted", "in_progress", "rejected", "completed", "failed", "cancelled",
)
STATE_RANK = {s: i for i, s in enumerate(REFERRAL_STATES)}
ACKNOWLEDGING = frozenset({"received", "accepted", "rejected", "in_progress", "completed", "failed"})


@dataclass(frozen=True)
class ReferralFacts:
    referral_id: str
    contact_id: str | None = None
    requested: Slot = None  # earliest referral.requested: (at, tb, organisation_id, municipality, need, urgency)
    state: Slot = None  # latest lifecycle step: (at, rank, tb, state)
    receiver: Slot = None  # latest step naming a receiver type: (at, tb, receiver_type)
    acknowledged_at: datetime | None = None  # earliest step by the receiver
    escalated_at: datetime | None = None  # earliest referral.escalated

    def merge(self, other: ReferralFacts) -> ReferralFacts:
        return ReferralFacts(
            self.referral_id,
            contact_id=_least(self.contact_id, other.contact_id),
            requested=_earliest(self.requested, other.requested),
            state=_latest(self.state, other.state) if self.state is None or other.state is None
            else (self.state if self.state[:3] >= other.state[:3] else other.state),
            receiver=_latest(self.receiver, other.receiver),
            acknowledged_at=_least(self.acknowledged_at, other.acknowledged_at),
            escalated_at=_least(self.escalated_at, other.escalated_at),
        )


@dataclass(frozen=True)
class SeatEvent:
    """A decision that takes or releases a seat: a ``routing.assigned`` naming a seat, or a
    ``routing.withdrawn`` / ``contact.transferred`` (which release whatever the contact held).

    Seat occupancy needs every assignment of a contact, not only its latest, so these are kept as a
    set of events (keyed by their tie-break, source + id): a duplicate is the same member and the set
    does not depend on arrival order. domain.occupancy reads a conversation's time at a seat from it."""

    tb: str
    contact_id: str
    at: datetime
    kind: str  # assigned | withdrawn | transferred
    desk: str | None = None
    organisation: str | None = None
    seat: int | None = None
    capacity: int | None = None
    channel: str | None = None


@dataclass
class Facts:
    """The facts of a batch (or of a whole log), keyed by contact / referral id (seat events by theirs)."""

    contacts: dict[str, ContactFacts] = field(default_factory=dict)
    consultations: dict[str, ConsultationFacts] = field(default_factory=dict)
    referrals: dict[str, ReferralFacts] = field(default_factory=dict)
    seat_events: dict[str, SeatEvent] = field(default_factory=dict)

    def add(self, facts: ContactFacts | ConsultationFacts | ReferralFacts) -> None:
        if isinstance(facts, ContactFacts):
            table: dict[str, Any] = self.contacts
            key = facts.contact_id
        elif isinstance(facts, ConsultationFacts):
            table, key = self.consultations, facts.contact_id
        else:
            table, key = self.referrals, facts.referral_id
        old = table.get(key)
        table[key] = facts if old is None else old.merge(facts)


def _code(value: Any) -> Any:
    return value.value if isinstance(value, LabelledCode) else value


# Types that say nothing about a contact's own facts: heartbeats only advance routing's clock, and a
# withdrawn assignment is followed by the contact's next routing decision (the latest one counts); a
# withdrawal only ends the contact's time at a seat (seat_event_of).
IGNORED = frozenset({"platform.heartbeat", "routing.withdrawn"})


def facts_of(event: ValidatedEvent) -> ContactFacts | ConsultationFacts | ReferralFacts | None:
    """The facts one canonical event carries (None for a type metrics does not count)."""
    at = event.envelope.time
    tb = f"{event.envelope.source} {event.envelope.id}"
    d: Any = event.data
    short = event.event_type.short
    if short == "contact.received":
        return ContactFacts(d.contact_id, received=(at, tb, _code(d.channel), d.caller_key, d.prefecture))
    if short == "contact.field_selected":
        return ContactFacts(d.contact_id, chosen=(at, tb, _code(d.field)))
    if short == "contact.answered":
        return ContactFacts(d.contact_id, answered=(at, tb, d.wait_seconds, d.desk_id, d.organisation_id))
    if short == "contact.abandoned":
        return ContactFacts(d.contact_id, abandoned=(at, tb, _code(d.stage), d.wait_seconds))
    if short == "contact.ended":
        return ContactFacts(d.contact_id, ended=(at, tb, d.talk_seconds))
    if short == "routing.assigned":
        return ContactFacts(d.contact_id, assigned=(
            at, tb, d.desk_id, d.organisation_id, _code(d.field), _code(d.channel), d.seat, d.seat_capacity,
        ))
    if short == "contact.triaged":
        return ContactFacts(d.contact_id, triaged=(at, tb, _code(d.risk)))
    if short == "contact.transferred":
        return ContactFacts(d.contact_id, transferred_at=at)
    if short == "routing.queued":
        return ContactFacts(d.contact_id, queued_at=at)
    if short == "routing.overflowed":
        return ContactFacts(d.contact_id, overflow_tier=d.tier)
    if short == "consultation.recorded":
        categories = tuple(sorted(_code(c) for c in d.categories))
        return ConsultationFacts(d.contact_id, recorded=(
            at, tb, d.organisation_id, d.desk_id, _code(d.field), categories, _code(d.age_band), _code(d.risk),
            d.referral_needed,
        ))
    if short in ("referral.requested", "referral.created"):
        # referral opens a referral from a consultation record with referral.created (no request
        # event exists then): it is the request, with its first receiver.
        facts = ReferralFacts(
            d.referral_id, contact_id=d.contact_id, state=(at, STATE_RANK["requested"], tb, "requested"),
            requested=(at, tb, d.organisation_id, d.municipality, _code(getattr(d, "need", None)), _code(d.urgency)),
        )
        receiver_type = getattr(d, "receiver_type", None)
        return replace(facts, receiver=(at, tb, _code(receiver_type))) if receiver_type is not None else facts
    step = short.removeprefix("referral.")
    if short in IGNORED or not short.startswith("referral.") or (step not in STATE_RANK and step != "escalated"):
        return None  # a type added to the contract after this service: consumed, not counted
    facts = ReferralFacts(d.referral_id, contact_id=d.contact_id)
    if d.receiver_type is not None:
        facts = replace(facts, receiver=(at, tb, _code(d.receiver_type)))
    if step == "escalated":
        return replace(facts, escalated_at=at)
    return replace(
        facts,
        state=(at, STATE_RANK[step], tb, step),
        acknowledged_at=at if step in ACKNOWLEDGING else None,
    )


def seat_event_of(event: ValidatedEvent) -> SeatEvent | None:
    """The seat decision one canonical event is (None unless it takes or releases a seat). An
    assignment to a phone line (no seat) is not kept: only seats have an occupancy."""
    short = event.event_type.short
    d: Any = event.data
    tb = f"{event.envelope.source} {event.envelope.id}"
    at = event.envelope.time
    if short == "routing.assigned" and d.seat is not None:
        return SeatEvent(tb, d.contact_id, at, "assigned", d.desk_id, d.organisation_id, d.seat,
                         d.seat_capacity, _code(d.channel))
    if short == "routing.withdrawn":
        return SeatEvent(tb, d.contact_id, at, "withdrawn", d.desk_id, d.organisation_id)
    if short == "contact.transferred":
        return SeatEvent(tb, d.contact_id, at, "transferred", d.from_desk_id)
    return None


def fold(events: Iterable[ValidatedEvent], into: Facts | None = None) -> Facts:
    """The combined facts of ``events`` (order and repetition do not matter)."""
    facts = into if into is not None else Facts()
    for event in events:
        found = facts_of(event)
        if found is not None:
            facts.add(found)
        seat = seat_event_of(event)
        if seat is not None:
            facts.seat_events[seat.tb] = seat
    return facts
