"""Every consuming service, not only metrics: a batch that keeps failing is logged with its cause, the
service turns not ready with the reason, and it recovers with the next batch that succeeds — on the
real broker and PostgreSQL, each service its own process."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.integration.referral_support import consultation, publish
from tests.integration.routing_support import received
from tests.support import T0, ServiceProcess, service_env, until
from tsunagu.db import create_pool

pytestmark = pytest.mark.integration

# service -> (the topic it consumes, an event for it, the schema whose inbox goes away)
CASES = {
    "routing": ("contact.events", lambda n: received(f"c-fail-{n}", T0), "routing"),
    "referral": ("consultation.events", lambda n: consultation(n, consent=["municipality"]), "referral"),
}


async def ready(url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        return await client.get("/health/ready")



@pytest.mark.parametrize("service", sorted(CASES))
async def test_a_consumer_whose_batches_keep_failing_turns_not_ready_with_the_cause_and_recovers(
        service, settings, create_all_topics, tmp_path):
    topic, event, schema = CASES[service]
    await create_all_topics(settings)
    env = {**service_env(settings), "TSUNAGU_ROUTING_DESKS_FILES": "", "TSUNAGU_REFERRAL_CLOCK": "event_time"}
    process = ServiceProcess(service, env, settings.service_port(service), tmp_path / f"{service}.log")
    await asyncio.to_thread(process.start)
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        assert (await ready(process.url)).status_code == 200
        await pool.execute(f"ALTER TABLE {schema}.inbox RENAME TO inbox_away")
        await publish(settings.kafka_bootstrap_servers, settings.topic(topic), [event(1)])

        async def not_ready() -> bool:
            answer = await ready(process.url)
            return answer.status_code == 503 and answer.json()["checks"].get("consumer") is False

        await until(not_ready, 60, f"{service}: /health/ready 503 with consumer false")
        reason = (await ready(process.url)).json()["reasons"]["consumer"]
        assert "UndefinedTableError" in reason, reason
        lines = [json.loads(line) for line in process.log_path.read_text().splitlines() if line.startswith("{")]
        failures = [r for r in lines if r.get("event") == "batch_failed"]
        assert len(failures) >= 2 and all(f["level"] == "error" and "inbox" in f["cause"] for f in failures)

        await pool.execute(f"ALTER TABLE {schema}.inbox_away RENAME TO inbox")

        async def ready_again() -> bool:
            return (await ready(process.url)).status_code == 200

        await until(ready_again, 60, f"{service}: /health/ready 200 again")
        claimed = await pool.fetchval(f"SELECT count(*) FROM {schema}.inbox")
        assert claimed >= 1  # the batch that failed was applied once its cause was gone
    finally:
        await pool.close()
        await asyncio.to_thread(process.stop)
