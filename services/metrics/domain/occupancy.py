"""Chat and SNS seats: how long each conversation held its seat, and the seats' occupancy.

Definitions (the metrics README says them to the secretariat):

- a *spell* is one ``routing.assigned`` that names a seat: the contact holds that seat from the
  assignment until the first of: the contact's next seat decision (another assignment, a
  ``routing.withdrawn`` or a ``contact.transferred``), its end (``contact.ended``, else
  ``contact.abandoned``). A spell with neither is still open and not counted yet (its length is unknown);
  one whose end came before it (a late assignment) lasts zero seconds;
- a spell is a *conversation* when the contact had its first response (its earliest
  ``contact.answered``) by the spell's end; an offer withdrawn before it, or a person who left before it,
  held the seat all the same (its seconds count) but had no conversation there. A transferred
  conversation is one at each seat that held it (the answer rate still counts the contact once);
- a seat is *in use* while it holds at least one spell (the union of its spells' intervals);
- held seconds (会話保持秒): the spells' seconds, a call taken at a blended seat weighted by the seat's
  capacity (it takes the whole seat); capacity seconds (席容量秒): in-use seconds × N, the most
  conversations the seat could hold then (the largest ``seat_capacity`` of the spells in use);
- seat occupancy (席の占有率) = held seconds / capacity seconds;
- conversations per seat-hour (席あたり時間あたり会話数) = conversations / in-use seat-hours.

Time is cut by the period and, for groups by hour of day or day, by the hours (Japan time) it falls in;
a conversation counts in the hour and day its spell began. Everything is computed from the set of seat
events and the contacts' facts, so it is the same under duplicates and any reordering.
``store/occupancy.py`` computes the same in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas.timezone import JST
from services.metrics.domain.facts import ContactFacts, SeatEvent
from services.metrics.domain.periods import Period

SEAT_DIMENSIONS = ("desk", "organisation", "hour", "day")
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Spell:
    """One contact's time at one seat."""

    contact_id: str
    desk: str | None
    organisation: str | None
    seat: int
    capacity: int
    channel: str | None
    start: datetime
    end: datetime
    conversation: bool  # False: no first response by the spell's end (an offer withdrawn, a person who left)

    @property
    def weight(self) -> int:
        """A call at a blended seat takes the whole seat; a chat or SNS conversation one place of N."""
        return self.capacity if self.channel == "phone" else 1


def contact_end(f: ContactFacts | None) -> datetime | None:
    """When the contact's conversation ended: its latest end, else its abandonment."""
    if f is None:
        return None
    slot = f.ended if f.ended is not None else f.abandoned
    at: datetime | None = slot[0] if slot is not None else None
    return at


def spells(seat_events: Iterable[SeatEvent], contacts: Mapping[str, ContactFacts]) -> list[Spell]:
    """The closed spells the seat events and the contacts' ends give."""
    by_contact: dict[str, list[SeatEvent]] = {}
    for e in seat_events:
        by_contact.setdefault(e.contact_id, []).append(e)
    out = []
    for cid, events in by_contact.items():
        events.sort(key=lambda e: (e.at, e.tb))
        facts = contacts.get(cid)
        ended = contact_end(facts)
        first_response = facts.answered[0] if facts is not None and facts.answered is not None else None
        for i, e in enumerate(events):
            if e.kind != "assigned" or e.seat is None:
                continue
            following = events[i + 1] if i + 1 < len(events) else None
            ends = [t for t in (following.at if following else None, ended) if t is not None]
            if not ends:
                continue  # still open
            end = max(min(ends), e.at)
            talked = first_response is not None and first_response <= end
            out.append(Spell(cid, e.desk, e.organisation, e.seat, e.capacity or 1, e.channel, e.at, end, talked))
    return out


def _hours(lo: datetime, hi: datetime) -> Iterable[tuple[datetime, float]]:
    """(hour start, seconds of [lo, hi) in it) for each hour [lo, hi) touches (Japan time is a whole
    number of hours from UTC, so UTC hours are Japan's hours)."""
    h = lo.replace(minute=0, second=0, microsecond=0)
    while h < hi:
        yield h, (min(hi, h + HOUR) - max(lo, h)).total_seconds()
        h += HOUR


def _key(dimension: str | None, place: tuple[str | None, str | None], at: datetime) -> Any:
    desk, organisation = place
    if dimension == "desk":
        return desk
    if dimension == "organisation":
        return organisation
    if dimension == "hour":
        return at.astimezone(JST).hour
    if dimension == "day":
        return at.astimezone(JST).date().isoformat()
    return None


def _islands(held: list[Spell]) -> list[tuple[datetime, datetime, int]]:
    """The union of one seat's spells as (from, to, capacity), touching spells merged."""
    out: list[list[Any]] = []
    for s in sorted(held, key=lambda s: (s.start, s.end)):
        if out and s.start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], s.end)
            out[-1][2] = max(out[-1][2], s.capacity)
        else:
            out.append([s.start, s.end, s.capacity])
    return [(a, b, c) for a, b, c in out]


EMPTY = {"conversations": 0, "held_seconds": 0.0, "in_use_seconds": 0.0, "capacity_seconds": 0.0}


def seat_counts(
    all_spells: Iterable[Spell], period: Period, dimension: str | None = None, organisation: str | None = None,
) -> dict[Any, dict[str, Any]]:
    """Per group key (``"total"`` for all): conversations, held, in-use and capacity seconds, seats in use."""
    groups: dict[Any, dict[str, Any]] = {}

    def group(key: Any) -> dict[str, Any]:
        return groups.setdefault(key, {**EMPTY, "seats": set()})

    def add(place: tuple[str | None, str | None], at: datetime, **values: float) -> list[dict[str, Any]]:
        touched = [group("total")] + ([group(_key(dimension, place, at))] if dimension else [])
        for g in touched:
            for name, v in values.items():
                g[name] += v
        return touched

    mine = [s for s in all_spells if organisation is None or s.organisation == organisation]
    seats: dict[tuple[str | None, str | None, int], list[Spell]] = {}
    for s in mine:
        place = (s.desk, s.organisation)
        if s.conversation and period.start <= s.start < period.end:
            add(place, s.start, conversations=1)
        lo, hi = max(s.start, period.start), min(s.end, period.end)
        if s.start < period.end and s.end > period.start:
            seats.setdefault((s.desk, s.organisation, s.seat), []).append(Spell(
                s.contact_id, s.desk, s.organisation, s.seat, s.capacity, s.channel, lo, hi, s.conversation))
            for h, seconds in _hours(lo, hi):
                add(place, h, held_seconds=seconds * s.weight)
    for (desk, org, seat), held in seats.items():
        for lo, hi, capacity in _islands(held):
            for h, seconds in _hours(lo, hi):
                for g in add((desk, org), h, in_use_seconds=seconds, capacity_seconds=seconds * capacity):
                    if seconds > 0:
                        g["seats"].add((desk, seat))
    return {k: {**{n: v for n, v in g.items() if n != "seats"}, "seats": len(g["seats"])} for k, g in groups.items()}
