"""Against a real PostgreSQL: duplicates open nothing twice, and deadline scanners racing each
other escalate every missed deadline exactly once."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from types import SimpleNamespace

import pytest

from services.referral import store
from services.referral.directory import generated
from services.referral.handlers import Referrals, apply_batch, escalate_due, policy_of
from services.referral.settings import ReferralSettings
from tests.integration.referral_support import consultation
from tests.support import T0
from tsunagu.db import create_pool

pytestmark = pytest.mark.integration


def records(events: list[dict]) -> list[SimpleNamespace]:
    return [SimpleNamespace(value=json.dumps(e).encode(), topic="t", partition=0, offset=i)
            for i, e in enumerate(events)]


async def test_racing_scanners_escalate_each_missed_deadline_once(make_settings):
    settings = make_settings(ReferralSettings)
    pools = [await create_pool(settings.database_url) for _ in range(2)]
    try:
        await store.migrate_schema(pools[0])
        await store.load_directory(pools[0], generated())
        instances = [Referrals(settings=settings, policy=policy_of(settings), pool=p) for p in pools]
        events = [consultation(n, risk="imminent", at=T0 + timedelta(seconds=n)) for n in range(300)]
        # at-least-once: the same records again, split differently, through both instances
        opened = await asyncio.gather(apply_batch(instances[0], records(events)),
                                      apply_batch(instances[1], records(events[::-1])))
        assert sum(opened) == 300
        assert await apply_batch(instances[0], records(events[:50])) == 0

        now = T0 + timedelta(hours=1)
        rounds = await asyncio.gather(*(escalate_due(instances[i % 2], now, limit=25) for i in range(6)))
        ids = [c.id for r in rounds for c in r]
        assert len(ids) == len(set(ids)) == 300
        assert await escalate_due(instances[0], now) == []
        assert await pools[0].fetchval("SELECT count(*) FROM referral.referral WHERE escalations = 1") == 300
        assert await pools[0].fetchval("SELECT count(*) FROM referral.outbox") == 600  # created + escalated
        assert await store.watermark(pools[0]) == T0 + timedelta(seconds=299)
    finally:
        for p in pools:
            await p.close()


async def test_on_event_time_no_deadline_is_due_before_the_first_event_is_consumed(make_settings):
    # a scan that fell back to the wall clock here would find the first batch's referrals years overdue
    settings = make_settings(ReferralSettings, referral_clock="event_time")
    pool = await create_pool(settings.database_url)
    try:
        await store.migrate_schema(pool)
        await store.load_directory(pool, generated())
        referrals = Referrals(settings=settings, policy=policy_of(settings), pool=pool)
        assert await referrals.deadline_now() is None
        await apply_batch(referrals, records([consultation(1, risk="imminent")]))
        assert await referrals.deadline_now() == T0
        assert await escalate_due(referrals, await referrals.deadline_now()) == []
    finally:
        await pool.close()
