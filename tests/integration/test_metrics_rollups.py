"""The rollups on a real PostgreSQL: kept by deltas in the inbox-claim transaction, they equal the
rollups computed from the facts from scratch whatever order and however often the events arrive, and
the figures read from them equal the figures counted from the facts for any from–to."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.metrics.domain.counting import DIMENSIONS, answer_rate_counts
from services.metrics.domain.facts import fold
from services.metrics.domain.periods import Period
from services.metrics.domain.rollups import bin_bounds
from services.metrics.store import reading
from services.metrics.store.rebuild import rebuild_rollups
from services.metrics.store.sql import CONTACTS_VIEW
from tests.integration.metrics_support import (
    TRIAL1,
    answer_rate_from_facts,
    consultations_from_facts,
    rollup_rows,
)
from tests.integration.rollups_support import LOG, ODD, PERIODS, consume, every_figure, fresh_schema

pytestmark = pytest.mark.integration

COUNTS = ("attempts", "connected", "abandoned", "abandoned_ivr", "abandoned_queue", "callers", "callers_connected")


async def test_rollups_kept_by_deltas_equal_the_rollups_rebuilt_from_the_facts(pool):
    await fresh_schema(pool)
    rnd = random.Random(3)
    sent = LOG + rnd.sample(LOG, 300)
    rnd.shuffle(sent)
    await consume(pool, sent, 12, rnd)
    kept = await rollup_rows(pool)
    figures = await every_figure(pool)
    async with pool.acquire() as conn:
        await rebuild_rollups(conn)
    assert await rollup_rows(pool) == kept
    assert await every_figure(pool) == figures
    assert all(kept.values())


async def test_figures_from_the_rollups_equal_the_figures_counted_from_the_facts_for_any_from_to(pool):
    await fresh_schema(pool)
    await consume(pool, LOG, 5, random.Random(1))
    facts = fold(LOG)
    for period in (PERIODS["trial1"], ODD, Period(ODD.start, ODD.start + timedelta(minutes=50))):
        for dim in (None, *DIMENSIONS):
            for channel, org in (("phone", None), (None, None), ("phone", "npo-b")):
                totals, groups = await reading.answer_rate(pool, period, dim, channel, org)
                got = {"total": {k: totals[k] for k in COUNTS}}
                got |= {g["key"]: {k: g[k] for k in COUNTS} for g in groups}
                want = answer_rate_counts(facts.contacts.values(), period, dim, channel=channel, organisation=org)
                assert got == (want or {"total": dict.fromkeys(COUNTS, 0)}), (period, dim, channel, org)
                assert (totals, groups) == await answer_rate_from_facts(pool, period, dim, channel, org)
            totals, groups = await reading.waits(pool, period, dim, [0, 20, 60, 300])
            exact, exact_groups = await reading.waits_from_facts(pool, period, dim, [0, 20, 60, 300])
            for mine, theirs in ((totals, exact), *zip(groups, exact_groups, strict=True)):
                for k in ("attempts", "connected", "abandoned_queue", "within_0", "within_20", "within_60",
                          "within_300"):
                    assert mine[k] == theirs[k], (period, dim, k)
                for k in ("wait_mean", "talk_mean"):
                    assert (mine[k] is None) == (theirs[k] is None), (period, dim, k)
                    assert mine[k] is None or mine[k] == pytest.approx(theirs[k], rel=1e-9), (period, dim, k)
        for dim in (None, "field", "desk", "age_band", "risk", "organisation", "day", "hour"):
            assert (await reading.consultations(pool, period, dim)
                    == await consultations_from_facts(pool, period, dim)), (period, dim)


async def test_a_percentile_from_the_bins_lies_in_the_bin_of_the_exact_sample_value_of_its_rank(pool):
    await fresh_schema(pool)
    await consume(pool, LOG, 3, random.Random(2))
    binned, _ = await reading.waits(pool, PERIODS["trial1"], None, [20])
    trial = PERIODS["trial1"]
    for key, column, qs in (("wait_p", "wait", (0.5, 0.9, 0.95)), ("talk_p", "talk", (0.5, 0.9))):
        values = sorted(r[0] for r in await pool.fetch(
            f"SELECT {column}_seconds FROM ({CONTACTS_VIEW}) v WHERE connected AND {column}_seconds IS NOT NULL",
            trial.start, trial.end, "phone", None))
        for q, mine in zip(qs, binned[key], strict=True):
            rank = q * (len(values) - 1)
            lo, hi = bin_bounds(values[int(rank)])
            assert lo <= mine <= hi, (key, q, mine, values[int(rank)])


async def test_a_period_named_after_the_events_answers_exactly_at_once(pool):
    """A named period is only its from–to: one added to (or moved in) the config after its events were
    folded needs nothing filled, and answers as the facts count."""
    await fresh_schema(pool)
    await consume(pool, LOG, 4, random.Random(4))
    added = Period(TRIAL1 + timedelta(days=1), TRIAL1 + timedelta(days=3), "mid")
    moved = Period(added.start, added.end + timedelta(hours=7), "mid")
    for period in (added, moved):
        for dim in ("field", "day"):
            assert (await reading.answer_rate(pool, period, dim)
                    == await answer_rate_from_facts(pool, period, dim)), (period, dim)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), repeats=st.integers(0, 300), batches=st.integers(1, 30))
async def test_shuffling_and_duplicating_the_log_never_changes_a_rollup_or_a_figure(pool, seed, repeats, batches):
    rnd = random.Random(seed)
    log = LOG + [rnd.choice(LOG) for _ in range(repeats)]
    rnd.shuffle(log)
    await fresh_schema(pool)
    await consume(pool, LOG, 1, rnd)
    reference, reference_figures = await rollup_rows(pool), await every_figure(pool)
    await fresh_schema(pool)
    await consume(pool, log, batches, rnd)
    assert await rollup_rows(pool) == reference
    assert await every_figure(pool) == reference_figures
