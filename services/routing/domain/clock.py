"""The board's time: how far timers may lag (``GAP``), and one tzinfo per UTC offset for every time on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from schemas.timezone import JST

EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
MINUTE = timedelta(minutes=1)
# How far past the clock timers still fire each at its own time (the package docstring, "A jump in time").
# Long enough that no replay, nor a live network whose platforms send heartbeats every few seconds,
# ever leaves the board that long without an event; short enough that the ring timeouts and minutes
# lived through after a jump stay few (an hour: 180 rings of a 20 s ring timeout, 60 minutes).
GAP = timedelta(hours=1)
# One tzinfo per UTC offset for every time on the board. Two aware datetimes whose tzinfo objects differ
# compare by asking both for their offsets — about ten times the cost of a plain comparison, and pydantic
# gives every time it parses a tzinfo of its own; the board compares times all the time (timers, marks,
# registry versions). Same instant, same offset, so the same text when written: nothing else changes.
_ZONES: dict[timedelta, timezone] = {timedelta(hours=9): JST, timedelta(0): UTC}
_SHARED = {id(zone) for zone in _ZONES.values()}


def board_time(at: datetime) -> datetime:
    """``at`` with the board's one tzinfo for its UTC offset (a naive time is left as it is). The board
    does this to every time handed to it; a caller that hands one time to several calls (``observe``,
    then ``apply``) can do it once."""
    zone = at.tzinfo
    if id(zone) in _SHARED or zone is None:
        return at
    offset = at.utcoffset()
    if offset is None:
        return at
    shared = _ZONES.get(offset)
    if shared is None:
        shared = _ZONES[offset] = timezone(offset)
        _SHARED.add(id(shared))
    return at.replace(tzinfo=shared)


def parse_time(text: str) -> datetime:
    return board_time(datetime.fromisoformat(text))
