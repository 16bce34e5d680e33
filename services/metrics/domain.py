"""metrics' rules: what each event tells about a contact, a consultation or a referral, and how
facts from several events combine — plus the secretariat's definitions and named periods.

Every event becomes a *slot* of facts (its event time, a tie-break, the values it carries). Slots of
the same kind combine by a rule that is commutative, associative and idempotent — keep the earliest
(``min``) or the latest (``max``) by (event time, tie-break) — so the facts of a contact are the same
whatever order its events arrive in, and however often. ``store.py`` applies the very same rules in
SQL (``ON CONFLICT ... DO UPDATE``), so figures computed over the facts are exact under duplicates,
reordering and late events, and a replay from the start gives identical results.

The secretariat's definitions (DESIGN.md, binding):
- call attempts (呼出件数): phone ``contact.received`` in the period (by its event time);
- connected (接続完了): ``contact.answered`` for those contacts, whenever it was answered;
- answer rate (応答率): connected / attempts; per field among the contacts that chose it;
- a contact that hangs up in the IVR before choosing counts as an attempt with no field.

No I/O, no clock: times come from the events.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from schemas import ValidatedEvent
from schemas.codes import (
    AbandonStage,
    AgeBand,
    Channel,
    ConsultationCategory,
    FieldCode,
    LabelledCode,
    ReceiverType,
    RiskLevel,
    Urgency,
)

JST = timezone(timedelta(hours=9), "Asia/Tokyo")

# --- the representable window -------------------------------------------------------------------
# Event times and query bounds metrics accepts: from 1900-01-01 (inclusive) to 2200-01-01 (exclusive),
# UTC. Well inside what Python and PostgreSQL can hold and convert between time zones (0001-01-01 in
# +09:00 is year 0 in UTC; asyncpg stores 0001-01-01 UTC as -infinity), and wide enough for any real
# event or report. An event outside it is set aside (handlers.py), a query bound outside it is a 400.
EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive
WINDOW_TEXT = f"{EARLIEST_TIME.isoformat()} (inclusive) to {LATEST_TIME.isoformat()} (exclusive)"
TIME_OUT_OF_RANGE = "time_out_of_range"  # the reason an event was set aside for its time


def representable(at: datetime) -> bool:
    """Whether an (aware) event time lies in the window metrics can store and count."""
    return EARLIEST_TIME <= at < LATEST_TIME


def time_problem(event: ValidatedEvent) -> str | None:
    """Why an event cannot be counted for its time (None when it can); never repeats the value."""
    if representable(event.envelope.time):
        return None
    return f"event time outside the window metrics counts: {WINDOW_TEXT}"

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
    assigned: Slot = None  # latest routing.assigned: (at, tb, desk_id, organisation_id, field)
    queued_at: datetime | None = None  # earliest routing.queued
    overflow_tier: int | None = None  # highest routing.overflowed tier

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


@dataclass
class Facts:
    """The facts of a batch (or of a whole log), keyed by contact / referral id."""

    contacts: dict[str, ContactFacts] = field(default_factory=dict)
    consultations: dict[str, ConsultationFacts] = field(default_factory=dict)
    referrals: dict[str, ReferralFacts] = field(default_factory=dict)

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


# Types that say nothing the secretariat counts: heartbeats only advance routing's clock, and a
# withdrawn assignment is followed by the contact's next routing decision (the latest one counts).
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
        return ContactFacts(d.contact_id, assigned=(at, tb, d.desk_id, d.organisation_id, _code(d.field)))
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


def fold(events: Iterable[ValidatedEvent], into: Facts | None = None) -> Facts:
    """The combined facts of ``events`` (order and repetition do not matter)."""
    facts = into if into is not None else Facts()
    for event in events:
        found = facts_of(event)
        if found is not None:
            facts.add(found)
    return facts


def slot_fields(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


# --- the questions: periods and dimensions ----------------------------------------------------


class PeriodError(ValueError):
    """A question's period cannot be answered: ``parameter`` names the one at fault (``from``, ``to``,
    ``period``) when one is, ``allowed`` the window a bound must lie in when that is what is wrong."""

    def __init__(self, message: str, parameter: str | None = None, allowed: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.allowed = allowed


ALLOWED_WINDOW = {"from": EARLIEST_TIME.isoformat(), "to": LATEST_TIME.isoformat()}


def _outside(parameter: str) -> PeriodError:
    return PeriodError(f"{parameter} is outside the range metrics answers for: {WINDOW_TEXT}",
                       parameter, ALLOWED_WINDOW)


@dataclass(frozen=True)
class Period:
    start: datetime  # inclusive
    end: datetime  # exclusive
    name: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "from": self.start.isoformat(), "to": self.end.isoformat()}

    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600


def parse_instant(text: str, *, end: bool = False, parameter: str | None = None) -> datetime:
    """An RFC 3339 time, or a date (a day in Japan time: its start, or the next day's start for ``to``),
    within the window (``EARLIEST_TIME`` inclusive to ``LATEST_TIME``; a ``to`` may be the latest)."""
    parameter = parameter or ("to" if end else "from")
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=JST)
            value = start + timedelta(days=1) if end else start
        else:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except OverflowError:  # the day after 9999-12-31
        raise _outside(parameter) from None
    except ValueError:
        raise PeriodError(f"{parameter}: not a date or an RFC 3339 time: {text[:40]!r}", parameter) from None
    if value.tzinfo is None:
        raise PeriodError(f"{parameter}: a time must carry a UTC offset, e.g. 2022-07-07T10:00:00+09:00", parameter)
    if not (EARLIEST_TIME <= value <= LATEST_TIME if end else representable(value)):
        raise _outside(parameter)
    return value


def load_periods(path: Path) -> dict[str, Period]:
    """Named periods from a YAML file: ``name: {from: ..., to: ..., label: ...}``."""
    raw = yaml.safe_load(path.read_text()) or {}
    periods: dict[str, Period] = {}
    for name, spec in (raw.get("periods") or {}).items():
        start, end = str(spec["from"]), str(spec["to"])
        periods[name] = Period(parse_instant(start), parse_instant(end, end=True), name)
    return periods


def resolve_period(periods: dict[str, Period], name: str | None, start: str | None, end: str | None) -> Period:
    """A named period, or ``from``–``to`` (both needed); from must be before to."""
    if name is not None:
        if start is not None or end is not None:
            raise PeriodError("give either period or from and to, not both", "period")
        if name not in periods:
            raise PeriodError(f"unknown period {name[:40]!r}; known: {', '.join(sorted(periods)) or 'none'}",
                              "period")
        found = periods[name]
        if not (representable(found.start) and EARLIEST_TIME <= found.end <= LATEST_TIME):
            raise _outside("period")
        return found
    if start is None or end is None:
        raise PeriodError("give period (e.g. trial1) or both from and to", "from" if start is None else "to")
    period = Period(parse_instant(start, parameter="from"), parse_instant(end, end=True, parameter="to"))
    if period.end <= period.start:
        raise PeriodError("from must be before to", "to")
    return period


# group_by dimension -> the code list that labels its keys (None: keys are ids, hours or days)
DIMENSIONS: dict[str, type[LabelledCode] | None] = {
    "field": FieldCode,
    "organisation": None,
    "desk": None,
    "channel": Channel,
    "prefecture": None,
    "hour": None,
    "day": None,
}
CONSULTATION_DIMENSIONS: dict[str, type[LabelledCode] | None] = {
    "field": FieldCode, "organisation": None, "desk": None, "hour": None, "day": None,
    "age_band": AgeBand, "risk": RiskLevel,
}
REFERRAL_DIMENSIONS: dict[str, type[LabelledCode] | None] = {
    "receiver_type": ReceiverType, "state": None, "urgency": Urgency, "organisation": None, "day": None,
}
NO_FIELD = {"code": None, "ja": "分野未選択", "en": "no field chosen"}


def key_label(dimension: str, key: Any, codes: dict[str, type[LabelledCode] | None] = DIMENSIONS) -> dict[str, Any]:
    """``{"code", "ja", "en"}`` for a group key (the code list's labels where there is one)."""
    code_list = codes.get(dimension)
    if key is None:
        return NO_FIELD if dimension == "field" else {"code": None, "ja": "不明", "en": "unknown"}
    if code_list is not None:
        try:
            member = code_list(key)
            return {"code": member.value, "ja": member.ja, "en": member.en}
        except ValueError:
            pass
    return {"code": key, "ja": str(key), "en": str(key)}


@dataclass(frozen=True)
class CountedContact:
    """A contact as the secretariat counts it (the same view store.CONTACTS_VIEW computes in SQL)."""

    received_at: datetime
    channel: str
    prefecture: str | None
    caller_key: str | None
    field: str | None  # chosen in the menu, else the field routing assigned
    organisation: str | None  # that answered, else last assigned
    desk: str | None
    connected: bool
    abandon_stage: str | None  # only when not answered

    def key(self, dimension: str) -> Any:
        if dimension == "hour":
            return self.received_at.astimezone(JST).hour
        if dimension == "day":
            return self.received_at.astimezone(JST).date().isoformat()
        return getattr(self, dimension)


def counted(f: ContactFacts) -> CountedContact | None:
    """None until the contact's contact.received has arrived (it is not an attempt before that)."""
    if f.received is None:
        return None
    answered = f.answered
    assigned = f.assigned
    return CountedContact(
        received_at=f.received[0], channel=f.received[2], caller_key=f.received[3], prefecture=f.received[4],
        field=f.chosen[2] if f.chosen else (assigned[4] if assigned else None),
        organisation=answered[4] if answered else (assigned[3] if assigned else None),
        desk=answered[3] if answered else (assigned[2] if assigned else None),
        connected=answered is not None,
        abandon_stage=f.abandoned[2] if f.abandoned and answered is None else None,
    )


def answer_rate_counts(
    contacts: Iterable[ContactFacts], period: Period, dimension: str | None = None,
    channel: str | None = "phone", organisation: str | None = None,
) -> dict[Any, dict[str, int]]:
    """The secretariat's counts per group key (``"total"`` for all): attempts, connected, abandoned
    (and in the IVR / queue), callers and callers who got through at least once."""
    groups: dict[Any, dict[str, Any]] = {}
    for facts in contacts:
        c = counted(facts)
        if c is None or not (period.start <= c.received_at < period.end):
            continue
        if channel is not None and c.channel != channel:
            continue
        if organisation is not None and c.organisation != organisation:
            continue
        for key in ("total", *((c.key(dimension),) if dimension else ())):
            g = groups.setdefault(key, {"attempts": 0, "connected": 0, "abandoned": 0, "abandoned_ivr": 0,
                                        "abandoned_queue": 0, "callers": set(), "callers_connected": set()})
            g["attempts"] += 1
            g["connected"] += c.connected
            g["abandoned"] += c.abandon_stage is not None
            g["abandoned_ivr"] += c.abandon_stage == "ivr"
            g["abandoned_queue"] += c.abandon_stage == "queue"
            if c.caller_key is not None:
                g["callers"].add(c.caller_key)
                if c.connected:
                    g["callers_connected"].add(c.caller_key)
    return {k: {n: len(v) if isinstance(v, set) else v for n, v in g.items()} for k, g in groups.items()}


def hours_by_hour_of_day(period: Period) -> dict[int, float]:
    """How many hours of each hour of day (Japan time) the period spans — the exposure for rates."""
    out: dict[int, float] = {}
    t = period.start
    while t < period.end:
        local = t.astimezone(JST)
        next_hour = local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        step_end = min(next_hour, period.end.astimezone(JST))
        out[local.hour] = out.get(local.hour, 0.0) + (step_end - local).total_seconds() / 3600
        t = step_end
    return out



# --- rollups: buckets of event time, histograms -----------------------------------------------

# Histogram bin edges (seconds) for waits and talk times. A value v falls in bin
# ``bisect_left(HISTOGRAM_EDGES, v)`` (the number of edges below it): bin 0 holds v <= 0, bin i holds
# edges[i-1] < v <= edges[i]. So "answered within N s" is exact for every N that is an edge (the
# usual service levels 10, 15, 20, 30, 60, 120 s among them; store.py counts any other N from the
# facts), and a percentile read from the bins lies in the bin of the exact sample value of its rank:
# within 5 s up to 30 s, 15 s to 2 min, 30 s to 5 min, 60 s to 10 min, 5 min to 1 h, then coarser.
# Few bins, because each one is a row per day and group in the rollups.
HISTOGRAM_EDGES: tuple[int, ...] = (
    0, 5, 10, 15, 20, 25, 30, 40, 45, 50, 60, 75, 90, 105, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480, 540, 600,
    720, 900, 1200, 1500, 1800, 2400, 3000, 3600, 5400, 7200, 10800, 14400, 21600, 43200, 86400,
)
EDGE_INDEX = {e: i for i, e in enumerate(HISTOGRAM_EDGES)}


def bin_of(value: float) -> int:
    return bisect_left(HISTOGRAM_EDGES, value)


def within_from_bins(bins: dict[int, int], seconds: int) -> int | None:
    """How many values are <= ``seconds`` (None unless ``seconds`` is a bin edge)."""
    idx = EDGE_INDEX.get(seconds)
    if idx is None:
        return None
    return sum(n for b, n in bins.items() if b <= idx)


def quantiles_from_bins(bins: dict[int, int], qs: tuple[float, ...]) -> list[float] | None:
    """Quantiles read from binned counts (None when empty): the value of rank q·(n−1) (counting from
    0, as percentile_cont does) is located in its bin and interpolated linearly inside it, so the result
    lies in the same bin as the exact sample value of that rank."""
    total = sum(bins.values())
    if total <= 0:
        return None
    ordered = sorted((b, n) for b, n in bins.items() if n)
    out = []
    for q in qs:
        target = q * (total - 1)
        seen = 0
        value = float(HISTOGRAM_EDGES[-1])
        for b, n in ordered:
            if seen + n > target:
                if b == 0:
                    value = 0.0
                elif b < len(HISTOGRAM_EDGES):
                    lo, hi = HISTOGRAM_EDGES[b - 1], HISTOGRAM_EDGES[b]
                    value = lo + (hi - lo) * ((int(target) - seen + 0.5) / n)
                break
            seen += n
        out.append(value)
    return out


def bin_bounds(value: float) -> tuple[float, float]:
    """The (exclusive low, inclusive high) edges of the bin that holds ``value``."""
    b = bin_of(value)
    if b == 0:
        return (float("-inf"), 0.0)
    if b >= len(HISTOGRAM_EDGES):
        return (float(HISTOGRAM_EDGES[-1]), float("inf"))
    return (float(HISTOGRAM_EDGES[b - 1]), float(HISTOGRAM_EDGES[b]))


# Rollup buckets: a day and a month in Japan time. Hours are not rolled up: a bucket per hour holds
# about one contact per group, so it would cost as much to keep as the facts it summarises.
GRAINS = ("d", "m")


def _floor(t: datetime, grain: str) -> datetime:
    local = t.astimezone(JST)
    if grain == "d":
        return local.replace(hour=0, minute=0, second=0, microsecond=0)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _ceil(t: datetime, grain: str) -> datetime:
    floor = _floor(t, grain)
    if floor == t:
        return floor
    if grain == "d":
        return floor + timedelta(days=1)
    return floor.replace(year=floor.year + floor.month // 12, month=floor.month % 12 + 1)


@dataclass(frozen=True)
class Cover:
    """A period as rollup buckets (grain, from, to) plus the edge ranges read from the facts."""

    buckets: tuple[tuple[str, datetime, datetime], ...]
    edges: tuple[tuple[datetime, datetime], ...]


def cover(period: Period, coarsest: str = "m") -> Cover:
    """Split ``period`` into whole months and days (no coarser than ``coarsest``) and the hours at its
    edges (read from the facts), which are exactly the period — so figures stay exact for any from–to."""
    buckets: list[tuple[str, datetime, datetime]] = []
    edges: list[tuple[datetime, datetime]] = []

    def split(lo: datetime, hi: datetime, level: int) -> None:
        if lo >= hi:
            return
        grain = GRAINS[level]
        inner_lo, inner_hi = _ceil(lo, grain), _floor(hi, grain)
        if inner_lo >= inner_hi:
            if level > 0:
                split(lo, hi, level - 1)
            elif lo < inner_lo == inner_hi < hi:  # no whole day, but it crosses one midnight
                edges.extend([(lo, inner_lo), (inner_hi, hi)])
            else:
                edges.append((lo, hi))
            return
        if level == 0:
            if lo < inner_lo:
                edges.append((lo, inner_lo))
            if inner_hi < hi:
                edges.append((inner_hi, hi))
        else:
            split(lo, inner_lo, level - 1)
            split(inner_hi, hi, level - 1)
        buckets.append((grain, inner_lo, inner_hi))

    split(period.start, period.end, GRAINS.index(coarsest))
    return Cover(tuple(buckets), tuple(edges))


# --- distinct callers over any from–to ------------------------------------------------------------
# Distinct callers are not additive, but the attempts that are the LAST of their caller in a period are:
# the callers of [from, to) are the attempts in [from, to) whose caller's next attempt (in the same
# group) is at or after ``to``, or absent. So each attempt keeps the event time of its caller's previous
# and next attempt in each *chain* — the caller's attempts in one group, ordered by (event time, contact
# id) — and the rollup counts attempts by (bucket, day of the next attempt). "Got through" is the same
# over the chains of connected attempts only. A chain is named by the caller key and these values:
# Every chain is within one channel: a caller key belongs to one channel (intake hashes the E.164 number
# for phones and ``<channel>:<id>`` otherwise — schemas' ContactReceived.caller_key), so the callers of
# every channel together are the sum of each channel's.
CALLER_CHAINS: tuple[tuple[str, ...], ...] = (
    ("channel",),  # 0: the totals; group_by=channel
    ("channel", "field"),  # 1: group_by=field
    ("channel", "organisation"),  # 2: group_by=organisation, and a partner's scope
    ("channel", "organisation", "field"),  # 3: a partner's scope by field
    ("channel", "organisation", "desk"),  # 4: group_by=desk (a desk answers for one organisation)
    ("channel", "prefecture"),  # 5: group_by=prefecture
    ("channel", "hour"),  # 6: group_by=hour (of day, Japan time)
)
# (chain, connected only) in the order of the stored arrays of previous / next times
CHAIN_LINKS: tuple[tuple[int, bool], ...] = tuple((c, k) for c in range(len(CALLER_CHAINS)) for k in (False, True))

Link = tuple[datetime | None, datetime | None]  # (previous, next) event time in the chain


def chain_of(c: CountedContact, chain: int) -> tuple[Any, ...]:
    return (c.caller_key, *(c.key(name) for name in CALLER_CHAINS[chain]))


def chain_links(contacts: dict[str, CountedContact]) -> dict[str, tuple[Link | None, ...]]:
    """contact id -> per CHAIN_LINKS its (previous, next) attempt time (None where it is not in that
    chain: no caller key, or not connected for a chain of connected attempts)."""
    members: dict[tuple[Any, ...], list[tuple[datetime, str]]] = {}
    for cid, c in contacts.items():
        if c.caller_key is None:
            continue
        for i, (chain, connected) in enumerate(CHAIN_LINKS):
            if c.connected or not connected:
                members.setdefault((i, *chain_of(c, chain)), []).append((c.received_at, cid))
    links: dict[str, list[Link | None]] = {cid: [None] * len(CHAIN_LINKS) for cid in contacts}
    for (i, *_), ordered in members.items():
        ordered.sort()
        for j, (_, cid) in enumerate(ordered):
            prev = ordered[j - 1][0] if j > 0 else None
            nxt = ordered[j + 1][0] if j + 1 < len(ordered) else None
            links[cid][i] = (prev, nxt)
    return {cid: tuple(v) for cid, v in links.items()}


def whole_span(c: Cover) -> tuple[datetime, datetime] | None:
    """The whole days and months of a cover as one range [D1, D2) (None when it has none)."""
    if not c.buckets:
        return None
    return min(b[1] for b in c.buckets), max(b[2] for b in c.buckets)


def callers_in(period: Period, members: Iterable[tuple[datetime, datetime | None, datetime | None]]) -> int:
    """Distinct callers of one chain group in ``period``, from its attempts' (time, previous, next) — by
    the rule the store applies to its rollup and edges: the attempts whose next is at or after the end.
    Over whole days [D1, D2) the rollup can only tell "next on or after D2" (it keeps the next's day);
    those whose next falls in [D2, to) are exactly the attempts of the tail [D2, to) whose previous lies in
    [D1, D2), so they are subtracted from the tail's facts."""
    c = cover(period)
    span = whole_span(c)
    n = 0
    for t, prev, nxt in members:
        if span is not None and span[0] <= t < span[1]:
            n += nxt is None or nxt >= span[1]  # the rollup: next's day on or after D2
        elif period.start <= t < period.end:
            n += nxt is None or nxt >= period.end  # the edges, from the facts
            if span is not None and t >= span[1] and prev is not None and span[0] <= prev < span[1]:
                n -= 1  # its previous was counted in the whole days as a last attempt, but is not
    return n


# --- catch-up: when a replay has reached the end of the topics -------------------------------------
# A partition is (topic, partition number); "done" is the next offset the group still has to apply.


def behind(ends: dict[Any, int], done: dict[Any, int]) -> int:
    """Records not yet applied over every partition of ``ends``: end offset minus done, never below
    zero per partition (a partition with nothing done counts from offset 0)."""
    return sum(max(end - done.get(p, 0), 0) for p, end in ends.items())


@dataclass
class CatchUpRule:
    """Caught up once ``needed`` consecutive checks find nothing behind on a non-empty set of partitions.

    End offsets can read low (the embedded broker reports a partition's last record batch's first
    offset + 1), so one check at zero may still be a record batch short; the next check, after that
    batch was applied, confirms. Any check that finds records behind starts the count again."""

    needed: int = 2
    streak: int = 0

    def observe(self, ends: dict[Any, int], done: dict[Any, int]) -> bool:
        if ends and behind(ends, done) == 0:
            self.streak += 1
        else:
            self.streak = 0
        return self.streak >= self.needed


LABELS_JA = {
    "attempts": ("呼出件数", "call attempts"),
    "connected": ("接続完了", "connected"),
    "answer_rate": ("応答率", "answer rate"),
    "abandoned": ("放棄", "abandoned"),
    "abandoned_ivr": ("音声ガイダンス中の放棄", "abandoned in the voice menu"),
    "abandoned_queue": ("待ち行列での放棄", "abandoned in the queue"),
    "overflowed": ("あふれ", "overflowed"),
    "callers": ("発信者数", "callers"),
    "callers_connected": ("つながった発信者数", "callers who got through"),
    "caller_rate": ("発信者あたり応答率", "per-caller answer rate"),
}


def rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


# re-exported for the report
__all__ = [
    "AbandonStage", "ConsultationCategory", "ContactFacts", "ConsultationFacts", "ReferralFacts", "Facts",
    "fold", "facts_of", "Period", "resolve_period", "load_periods", "key_label", "rate",
]
