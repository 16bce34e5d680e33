"""SIGKILL metrics mid-batch and restart it: nothing is lost and nothing counted twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from services.metrics.domain.counting import DIMENSIONS, answer_rate_counts
from services.metrics.domain.facts import fold
from services.metrics.domain.periods import Period
from tests.integration.metrics_support import (
    TRIAL1,
    by_key,
    issue_keys,
    publish,
    start_metrics,
    synthetic_log,
    validated,
)

pytestmark = pytest.mark.integration

WEEK = Period(TRIAL1, TRIAL1 + timedelta(days=7))
COUNTS = ("attempts", "connected", "abandoned", "abandoned_ivr", "abandoned_queue", "callers", "callers_connected")


async def test_a_sigkill_mid_batch_and_a_restart_lose_nothing_and_count_nothing_twice(settings, create_all_topics,
                                                                                       tmp_path):
    await create_all_topics(settings)
    keys = await issue_keys(settings)
    metrics = await asyncio.to_thread(start_metrics, settings, keys, tmp_path / "metrics.log")
    try:
        log = synthetic_log(4000, seed=21)
        publishing = asyncio.create_task(publish(settings, log))
        while (seen := await metrics.consumed()) < 2000:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(metrics.process.kill)
        assert seen < len(log), "killed too late to be mid-stream"
        await publishing
        await asyncio.to_thread(metrics.process.start)
        await metrics.wait_until_consumed(len(log), timeout=120)

        assert await metrics.consumed() == len(log)
        facts = fold(validated(log))
        for dimension in (None, *DIMENSIONS):
            channel = None if dimension == "channel" else "phone"
            want = answer_rate_counts(facts.contacts.values(), WEEK, dimension, channel=channel)
            params = {"period": "trial1", **({"group_by": dimension} if dimension else {})}
            body = (await metrics.get("/v1/metrics/answer-rate", **params)).json()
            got = {"total": {k: body["totals"][k] for k in COUNTS}}
            got |= {key: {k: g[k] for k in COUNTS} for key, g in by_key(body["groups"]).items()}
            assert got == want, dimension
        referrals = (await metrics.get("/v1/metrics/referrals", period="trial1")).json()["totals"]
        in_week = [r for r in facts.referrals.values() if WEEK.start <= r.requested[0] < WEEK.end]
        assert referrals["referrals"] == len(in_week)
        assert referrals["escalated"] == sum(1 for r in in_week if r.escalated_at is not None)
    finally:
        await asyncio.to_thread(metrics.process.stop)
