"""Distinct callers for any from–to on a real PostgreSQL: the callers' links and rollup, kept by each
batch's deltas, give the same callers and callers who got through as count(DISTINCT caller_key) over
the facts — for any from–to (edges inside days, whole days and months), whatever order and however
often the events arrive, late events included — and a rebuild from the facts gives the same rows."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.metrics.domain.periods import JST, Period
from services.metrics.handlers import apply_events
from services.metrics.store import callers
from services.metrics.store.rebuild import rebuild_rollups
from tests.integration.metrics_support import event, rollup_rows, synthetic_log, validated
from tests.integration.rollups_support import consume, fresh_schema

pytestmark = pytest.mark.integration

START = datetime(2022, 6, 24, 9, 30, tzinfo=JST)
# ten weeks over three month ends; few callers, so most call again (within hours, days or weeks)
LOG = validated(synthetic_log(700, seed=43, start=START, span=timedelta(days=70), callers=140))
# every question the links answer (store.callers.caller_plan): (group_by, channel, organisation)
QUESTIONS = [(None, "phone", None), (None, None, None), (None, "chat", None), ("channel", None, None),
             ("field", "phone", None), ("organisation", "phone", None), (None, "phone", "npo-a"),
             ("field", "phone", "npo-b"), ("organisation", "phone", "npo-a"),
             ("day", "phone", None), ("day", None, None), ("day", "phone", "npo-a"),
             ("desk", "phone", None), ("desk", "phone", "npo-b"), ("prefecture", "phone", None),
             ("hour", "phone", None), ("hour", "chat", None),
             # every channel: each channel's callers summed (a caller key belongs to one channel)
             ("field", None, None), ("organisation", None, None), ("desk", None, None), ("prefecture", None, None),
             ("hour", None, None), (None, None, "npo-a"), ("field", None, "npo-b"), ("desk", None, "npo-a")]


def periods(rnd: random.Random, n: int) -> list[Period]:
    """Periods of every shape: inside an hour, across a midnight, whole days, whole months, odd edges."""
    fixed = [
        Period(datetime(2022, 7, 1, tzinfo=JST), datetime(2022, 8, 1, tzinfo=JST)),
        Period(datetime(2022, 7, 1, tzinfo=JST), datetime(2022, 9, 1, tzinfo=JST)),
        Period(datetime(2022, 6, 1, tzinfo=JST), datetime(2022, 10, 1, tzinfo=JST)),
        Period(datetime(2022, 7, 5, 13, 7, tzinfo=JST), datetime(2022, 8, 20, 2, 11, tzinfo=JST)),
        Period(datetime(2022, 7, 9, 23, 10, tzinfo=JST), datetime(2022, 7, 10, 0, 50, tzinfo=JST)),
        Period(datetime(2022, 7, 9, 10, tzinfo=JST), datetime(2022, 7, 9, 11, tzinfo=JST)),
        Period(datetime(2022, 7, 31, 18, tzinfo=JST), datetime(2022, 8, 2, 6, tzinfo=JST)),
    ]
    out = list(fixed)
    for _ in range(n):
        a = START - timedelta(days=2) + timedelta(seconds=rnd.randrange(74 * 86400))
        b = a + timedelta(seconds=rnd.choice([600, 5000, 86400, 3 * 86400, 20 * 86400, 50 * 86400])
                          * rnd.random() + 1)
        out.append(Period(a, b))
    return out


def nonzero(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if k == "total" or v != (0, 0)}


async def assert_exact(pool, checked: list[Period]) -> None:
    for period in checked:
        for group_by, channel, org in QUESTIONS:
            assert callers.caller_plan(group_by, channel, org) is not None
            mine = await callers.distinct_callers(pool, period, group_by, channel, org)
            facts = await callers.callers_from_facts(pool, period, group_by, channel, org)
            assert nonzero(mine) == nonzero(facts), (period, group_by, channel, org)


async def test_callers_from_the_links_equal_the_distinct_callers_of_the_facts_and_survive_a_rebuild(
        pool, monkeypatch):
    await fresh_schema(pool)
    rnd = random.Random(5)
    sent = LOG + rnd.sample(LOG, 400)
    rnd.shuffle(sent)  # late events everywhere: a contact's answer before its arrival, weeks out of order
    await consume(pool, sent, 25, rnd)
    checked = periods(rnd, 40)
    await assert_exact(pool, checked)
    kept = await rollup_rows(pool)
    assert kept["caller_links"] and kept["caller_rollup"]
    monkeypatch.setattr(callers, "LINK_SLICE_CONTACTS", 60)  # the rebuild's links in about ten slices of callers
    async with pool.acquire() as conn:
        await rebuild_rollups(conn)
    assert await rollup_rows(pool) == kept
    await assert_exact(pool, checked[:12])


async def test_an_attempt_arriving_late_between_two_others_moves_its_neighbours_links(pool):
    await fresh_schema(pool)
    tel = "/partners/tel-platform/telephony"
    caller = "a" * 64
    day = datetime(2022, 7, 4, tzinfo=JST)

    def attempt(n: int, at: datetime) -> list:
        cid = f"late-{n}"
        return validated([
            event("contact.received", f"{cid}-r", at, {"contact_id": cid, "channel": "phone", "caller_key": caller},
                  tel),
            event("contact.answered", f"{cid}-w", at + timedelta(seconds=30),
                  {"contact_id": cid, "desk_id": "npo-a-1", "organisation_id": "npo-a", "wait_seconds": 3.0}, tel),
        ])

    for n, at in ((1, day + timedelta(hours=9)), (3, day + timedelta(days=3, hours=9))):
        async with pool.acquire() as conn, conn.transaction():
            await apply_events(conn, attempt(n, at))
    between = Period(day + timedelta(days=1), day + timedelta(days=2, hours=12))
    assert (await callers.distinct_callers(pool, between, None, "phone", None))["total"] == (0, 0)
    async with pool.acquire() as conn, conn.transaction():
        await apply_events(conn, attempt(2, day + timedelta(days=2, hours=1)))  # late: between the two
    assert (await callers.distinct_callers(pool, between, None, "phone", None))["total"] == (1, 1)
    for period in (Period(day, day + timedelta(days=5)), Period(day + timedelta(hours=10), day + timedelta(days=3)),
                   Period(day + timedelta(days=2, hours=2), day + timedelta(days=4))):
        for group_by, channel, org in QUESTIONS:
            assert (nonzero(await callers.distinct_callers(pool, period, group_by, channel, org))
                    == nonzero(await callers.callers_from_facts(pool, period, group_by, channel, org)))
    kept = await rollup_rows(pool)
    async with pool.acquire() as conn:
        await rebuild_rollups(conn)
    assert await rollup_rows(pool) == kept


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), repeats=st.integers(0, 300), batches=st.integers(1, 40))
async def test_shuffling_and_duplicating_the_log_never_changes_a_link_or_a_caller_count(pool, seed, repeats, batches):
    rnd = random.Random(seed)
    log = LOG + [rnd.choice(LOG) for _ in range(repeats)]
    rnd.shuffle(log)
    await fresh_schema(pool)
    await consume(pool, LOG, 1, rnd)
    reference = await rollup_rows(pool)
    await fresh_schema(pool)
    await consume(pool, log, batches, rnd)
    assert await rollup_rows(pool) == reference
    await assert_exact(pool, periods(rnd, 6))
