"""While PostgreSQL is away, routing, referral and metrics (each its own process on the real broker)
answer their API with 503, ``Retry-After`` and a JSON body — never a plain-text 500 — and answer as
before once it is back (tsunagu/http_errors.py).

PostgreSQL here is a private embedded server of this test, so stopping it breaks no other test (as in
tests/faults/infra_stack.py); its unix socket's path depends on the data directory only, so the DSN the
services hold stays valid across the restart.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support import ServiceProcess, service_env
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu_tools import stack

pytestmark = pytest.mark.integration

# an API route of each service, behind a key (each request looks the key up in PostgreSQL)
ROUTES = {"routing": "/v1/desks", "referral": "/v1/referrals", "metrics": "/v1/metrics/answer-rate?period=trial1"}


@pytest.fixture
async def private_postgres(tmp_path):
    datadir = tmp_path / "pgdata"
    server = await asyncio.to_thread(stack.start_embedded_postgres, datadir)
    try:
        yield datadir, server
    finally:
        await asyncio.to_thread(stack.stop_embedded_postgres, datadir)


async def test_routing_referral_and_metrics_answer_503_with_retry_after_while_postgres_is_away(
        private_postgres, make_settings, create_all_topics, tmp_path):
    datadir, server = private_postgres
    settings = make_settings(database_url=await stack.ensure_database(server, "away"))
    await create_all_topics(settings)
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        await auth.migrate_schema(pool)
        key = (await auth.issue_credential(pool, "secretariat", "secretariat"))[1]
    finally:
        await pool.close()
    env = {**service_env(settings), "PYTHONUNBUFFERED": "1"}
    processes = {name: ServiceProcess(name, env, settings.service_port(name), tmp_path / f"{name}.log")
                 for name in ROUTES}
    headers = {"Authorization": f"Bearer {key}"}
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start, 180.0) for p in processes.values()))
        async with httpx.AsyncClient(timeout=30, headers=headers) as client:

            async def answering(name: str, route: str) -> int:
                """200 once it answers (metrics on a new schema first catches up with the topics)."""
                for _ in range(150):
                    status = (await client.get(processes[name].url + route)).status_code
                    if status == 200:
                        return status
                    await asyncio.sleep(0.2)
                return status

            for name, route in ROUTES.items():
                assert await answering(name, route) == 200, (name, processes[name].log_tail())

            await asyncio.to_thread(stack.stop_embedded_postgres, datadir)
            for name, route in ROUTES.items():
                for _ in range(2):  # a pooled connection cut by the shutdown, then a new one refused
                    answer = await client.get(processes[name].url + route)
                    assert answer.status_code == 503, (name, answer.status_code, answer.text,
                                                       processes[name].log_tail())
                    assert answer.headers["retry-after"] == "1", name
                    assert answer.headers["content-type"].startswith("application/json"), name
                    body = answer.json()
                    assert body["error"] == "unavailable" and name in body["message"], (name, body)

            assert await asyncio.to_thread(stack.start_embedded_postgres, datadir) == server
            for name, route in ROUTES.items():
                assert await answering(name, route) == 200, (name, processes[name].log_tail())
    finally:
        for process in processes.values():
            await asyncio.to_thread(process.stop)
