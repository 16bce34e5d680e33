"""The pipelined fold on a real PostgreSQL: a batch applied in chunks, the next one folded while the
one before commits, gives the very rollups and figures of one transaction over the whole log — also
when the consumer dies between chunks (some committed, the rest rolled back, no offsets committed)
and the whole batch is redelivered; in catch-up (facts only), the rollups derived afterwards are the
same."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.metrics import handlers
from services.metrics.handlers import Metrics, apply_batch
from services.metrics.settings import MetricsSettings
from services.metrics.store.fold_mode import derive_and_go_live
from services.metrics.telemetry import OpsTelemetry
from tests.integration.metrics_support import records_of, rollup_rows, synthetic_log
from tests.integration.rollups_support import LOG, consume, every_figure, fresh_schema

pytestmark = pytest.mark.integration

RAW = synthetic_log(500, seed=31, span=timedelta(days=8))  # the very events of LOG


class Died(Exception):
    """The consumer process dying at this point (SIGKILL: nothing after it runs)."""


@pytest.fixture
def metrics_of(pool):
    def make(live: bool = True) -> Metrics:
        metrics = Metrics(settings=MetricsSettings(), telemetry=OpsTelemetry(), pool=pool)
        metrics.live = live  # else read from the schema's fold_mode, 'catch_up' in a new schema
        return metrics
    return make


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), repeats=st.integers(0, 200), chunk=st.integers(1, 400),
       dies_at=st.one_of(st.none(), st.tuples(st.sampled_from(["transaction", "fold"]), st.integers(1, 12))),
       live=st.booleans())
async def test_a_pipelined_batch_killed_between_chunks_and_redelivered_counts_exactly(
        pool, metrics_of, monkeypatch, seed, repeats, chunk, dies_at, live):
    rnd = random.Random(seed)
    raw = list(RAW) + [rnd.choice(RAW) for _ in range(repeats)]
    rnd.shuffle(raw)
    await fresh_schema(pool)
    await consume(pool, LOG, 1, rnd)  # one transaction over the whole log, unpipelined
    reference, reference_figures = await rollup_rows(pool), await every_figure(pool)
    await fresh_schema(pool)

    records = records_of(raw)
    if dies_at is not None:
        where, nth = dies_at
        calls = 0
        # the handler's writes: the facts with their rollups (live), or the facts alone (catching up)
        writes = (handlers, "apply_rows") if live else (handlers, "apply_facts_only")
        target = writes if where == "transaction" else (handlers, "prepare")
        original = getattr(*target)

        async def dying(*args):
            nonlocal calls
            calls += 1
            if calls == nth:
                raise Died
            return await original(*args)

        with monkeypatch.context() as patched:
            patched.setattr(*target, dying)
            try:
                await apply_batch(metrics_of(live), records, chunk=chunk)
            except Died:
                pass
    # the batch's offsets were not committed: the whole batch comes again, to a fresh process
    again = metrics_of(live)
    await apply_batch(again, records, chunk=chunk)
    if not live:
        assert not any((await rollup_rows(pool)).values())
        assert await derive_and_go_live(pool)

    assert await pool.fetchval("SELECT count(*) FROM metrics.inbox") == len(LOG)
    assert await rollup_rows(pool) == reference
    assert await every_figure(pool) == reference_figures
    assert await apply_batch(metrics_of(), records, chunk=chunk) == 0  # a third delivery changes nothing
    assert await rollup_rows(pool) == reference


async def test_the_new_events_of_a_pipelined_batch_are_counted_once_each(pool, metrics_of):
    await fresh_schema(pool)
    metrics = metrics_of()
    records = records_of(RAW + RAW[:50])  # a repeat within the batch is applied once
    assert await apply_batch(metrics, records, chunk=37) == len(RAW)
    assert metrics.consumed == len(RAW)
    assert await apply_batch(metrics, records[:100], chunk=37) == 0
    assert metrics.consumed == len(RAW)
