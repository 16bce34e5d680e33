"""Two referral processes, one SIGKILLed while consuming and the other while escalating: every
referral opens once and every missed deadline escalates exactly once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import timedelta

import asyncpg
import pytest

from tests.integration.referral_support import consultation, prepare, publish, referral_env
from tests.support import T0, ServiceProcess, read_topic
from tsunagu_tools import stack

pytestmark = pytest.mark.integration

N = 240


async def count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def wait_until(dsn: str, sql: str, at_least: int, timeout: float = 60.0) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        n = await count(dsn, sql)
        if n >= at_least or asyncio.get_running_loop().time() > deadline:
            return n
        await asyncio.sleep(0.05)


async def test_a_missed_deadline_escalates_exactly_once_with_two_processes_and_one_killed(
    settings, create_all_topics, tmp_path
):
    await prepare(settings, create_all_topics)
    dsn = settings.database_url
    env = referral_env(settings)
    port_b = stack.free_port()
    a = ServiceProcess("referral", env, settings.referral_port, tmp_path / "a.log")
    b = ServiceProcess("referral", {**env, "TSUNAGU_REFERRAL_PORT": str(port_b)}, port_b, tmp_path / "b.log")
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    try:
        topic = settings.topic("consultation.events")
        # imminent risk, no consent: vital interest → the police, 15 minutes to acknowledge
        events = [consultation(n, risk="imminent", at=T0 + timedelta(seconds=n)) for n in range(N)]

        async def feed() -> None:
            for i in range(0, N, 20):
                await publish(settings.kafka_bootstrap_servers, topic, events[i:i + 20])
                await asyncio.sleep(0.05)

        feeding = asyncio.create_task(feed())
        await wait_until(dsn, "SELECT count(*) FROM referral.referral", 40)
        await asyncio.to_thread(a.kill)  # mid-stream: some of its batches consumed, some not committed
        await feeding
        await asyncio.to_thread(a.start)  # and back
        opened = await wait_until(dsn, "SELECT count(*) FROM referral.referral", N)
        assert opened == N

        # event time moves 30 minutes on: every deadline has passed; both processes scan
        await publish(settings.kafka_bootstrap_servers, topic,
                      [consultation(10_000, at=T0 + timedelta(minutes=30), referral_needed=False)])
        await asyncio.to_thread(b.kill)  # one of them dies as the deadlines pass (before, during or after its scan)
        escalated = await wait_until(dsn, "SELECT count(*) FROM referral.referral WHERE escalations = 1", N)
        assert escalated == N
        assert await count(dsn, "SELECT count(*) FROM referral.referral WHERE escalations <> 1") == 0
        restarting = asyncio.create_task(asyncio.to_thread(b.start))  # back, while we read the topic

        records = await read_topic(settings.kafka_bootstrap_servers, settings.topic("referral.events"),
                                   expect=2 * N, timeout=60)
        published = [json.loads(r.value) for r in records]
        ids = {(e["source"], e["id"]) for e in published}
        by_type = Counter(e["type"].split(".")[3] for e in {e["id"]: e for e in published}.values())
        assert by_type == {"created": N, "escalated": N}
        escalations_per_referral = Counter(e["subject"] for e in {e["id"]: e for e in published}.values()
                                           if e["type"].endswith(".escalated.v1"))
        assert set(escalations_per_referral.values()) == {1}
        assert len(ids) == 2 * N  # a record re-sent after a crash carries the same id; none has a new one
        await restarting
        await asyncio.sleep(0.5)  # a few scans of the restarted process: nothing escalates again
        assert await count(dsn, "SELECT count(*) FROM referral.history") == 2 * N
        assert await count(dsn, "SELECT count(*) FROM referral.referral WHERE escalations <> 1") == 0
    finally:
        for p in (a, b):
            p.stop()
