"""The event times metrics can count and the periods a question names (a from–to, or a named period).

The secretariat's days are days in Japan time (``JST``): a date as a bound is a day in Japan time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from schemas import ValidatedEvent
from schemas.timezone import JST

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

