"""metrics' store driven straight, without the service: a fresh schema, a log consumed in random
batches as the consumer would, and every figure the store can read (tests/integration's rollup, pipeline,
callers and rebuild tests compare runs by these)."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

from services.metrics.domain.counting import DIMENSIONS
from services.metrics.domain.periods import Period
from services.metrics.handlers import apply_events
from services.metrics.periods_file import load_periods
from services.metrics.store import reading
from services.metrics.store.callers import derive_links
from services.metrics.store.schema import migrate_schema
from tests.integration.metrics_support import TRIAL1, synthetic_log, validated

PERIODS = load_periods(Path(__file__).parents[2] / "config" / "periods.yaml")
LOG = validated(synthetic_log(500, seed=31, span=timedelta(days=8)))
# not aligned to hours, days or months: edges come from the facts
ODD = Period(TRIAL1 + timedelta(hours=5, minutes=17, seconds=3), TRIAL1 + timedelta(days=6, hours=2, minutes=41))


async def fresh_schema(pool) -> None:
    await pool.execute("DROP SCHEMA IF EXISTS metrics CASCADE")
    await migrate_schema(pool)


async def consume(pool, log, batches: int, rnd: random.Random) -> None:
    cuts = sorted(rnd.sample(range(1, len(log)), k=min(batches - 1, len(log) - 1)))
    for a, b in zip([0, *cuts], [*cuts, len(log)], strict=True):
        async with pool.acquire() as conn, conn.transaction():
            await apply_events(conn, log[a:b])
        if rnd.random() < 0.5:  # the callers' links moved after some batches, the union of several after others
            await derive_links(pool)


async def every_figure(pool) -> dict:
    out = {}
    for period in (PERIODS["trial1"], ODD):
        for dim in (None, *DIMENSIONS):
            for channel in ("phone", None):
                out[("answer", period, dim, channel)] = await reading.answer_rate(pool, period, dim, channel)
            out[("waits", period, dim)] = await reading.waits(pool, period, dim, [20, 60])
        for dim in (None, "field", "age_band", "risk", "organisation", "day", "hour"):
            out[("consultations", period, dim)] = await reading.consultations(pool, period, dim)
    out["npo-a"] = await reading.answer_rate(pool, PERIODS["trial1"], "field", "phone", "npo-a")
    return out
