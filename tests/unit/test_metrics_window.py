"""The window of times metrics can store and count, and periods refused outside it (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas import validate_event
from services.metrics.domain.periods import (
    EARLIEST_TIME,
    LATEST_TIME,
    Period,
    PeriodError,
    representable,
    resolve_period,
    time_problem,
)
from tests.integration.metrics_support import SOURCES, caller_key, event

WINDOW = {"from": "1900-01-01T00:00:00+00:00", "to": "2200-01-01T00:00:00+00:00"}


def received(at: datetime):
    return validate_event(event("contact.received", "c1-r", at,
                                {"contact_id": "c1", "channel": "phone", "caller_key": caller_key(1)},
                                SOURCES["partner"]))


@pytest.mark.parametrize("at", [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=9))),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-9))),
    datetime(1899, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(1900, 1, 1, 8, 59, 59, tzinfo=timezone(timedelta(hours=9))),  # 1899-12-31T23:59:59Z
    LATEST_TIME,
])
def test_an_event_outside_the_window_has_a_time_problem_that_never_repeats_the_value(at):
    problem = time_problem(received(at))
    assert problem is not None and "1900-01-01T00:00:00+00:00" in problem and "2200-01-01" in problem
    assert (at == LATEST_TIME or at.isoformat() not in problem) and not representable(at)


@pytest.mark.parametrize("at", [EARLIEST_TIME, datetime(2022, 9, 1, 10, tzinfo=timezone(timedelta(hours=9))),
                                LATEST_TIME - timedelta(microseconds=1)])
def test_an_event_inside_the_window_has_none(at):
    assert time_problem(received(at)) is None and representable(at)


@pytest.mark.parametrize(("start", "end", "parameter"), [
    ("0001-01-01", "2022-09-08", "from"),
    ("0001-01-01T00:00:00+09:00", "2022-09-08", "from"),
    ("2022-09-01", "9999-12-31", "to"),  # the day after is beyond what Python holds
    ("2022-09-01", "2200-01-01", "to"),  # ends 2200-01-02 JST
    ("1899-12-31T23:59:59Z", "2022-09-08", "from"),
])
def test_a_period_outside_the_window_names_its_parameter_and_the_range(start, end, parameter):
    with pytest.raises(PeriodError) as refused:
        resolve_period({}, None, start, end)
    assert refused.value.parameter == parameter and refused.value.allowed == WINDOW
    assert str(refused.value).startswith(f"{parameter} is outside the range")


def test_the_widest_period_is_answerable():
    period = resolve_period({}, None, "1900-01-01T00:00:00Z", "2199-12-31")
    assert period.start == EARLIEST_TIME and period.end <= LATEST_TIME


def test_a_named_period_outside_the_window_is_refused_by_name():
    periods = {"old": Period(datetime(1, 1, 1, tzinfo=UTC), datetime(2000, 1, 1, tzinfo=UTC), "old")}
    with pytest.raises(PeriodError) as refused:
        resolve_period(periods, "old", None, None)
    assert refused.value.parameter == "period"


def test_other_period_problems_name_their_parameter():
    for args, parameter in (((None, "x", "2022-01-01"), "from"), ((None, "2022-01-01", "y"), "to"),
                            ((None, None, "2022-01-01"), "from"), ((None, "2022-01-02", "2022-01-01"), "to"),
                            (("nope", None, None), "period")):
        with pytest.raises(PeriodError) as refused:
            resolve_period({}, *args)
        assert refused.value.parameter == parameter, args
