"""metrics as its own process on the real broker and PostgreSQL, defending itself:

- an event whose time it cannot store (0001-01-01 in UTC or +09:00, year 9999, 1899) is set aside —
  on the rejected topic with the reason, counted, logged without its payload — and never stored, while
  the rest of the batch is counted and every figure keeps answering;
- a from/to outside the window it answers for is a 400 naming the parameter and the range, never a 500;
- a consumer whose batches keep failing logs each failure with its cause, turns /health/ready false
  with the reason, and recovers by itself once the cause is gone;
- on a PostgreSQL older than it needs, a service refuses to start and says which version it needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from services.metrics.domain.counting import answer_rate_counts
from services.metrics.domain.facts import fold
from services.metrics.domain.periods import Period
from tests.integration.metrics_support import (
    SOURCES,
    TRIAL1,
    caller_key,
    event,
    issue_keys,
    publish,
    start_metrics,
    synthetic_log,
    validated,
)
from tests.support import ServiceProcess, read_topic, service_env, until
from tsunagu import topics
from tsunagu.db import REQUIRED_VERSION_ENV, UnsupportedServer, check_server_version, create_pool

pytestmark = pytest.mark.integration

WEEK = Period(TRIAL1, TRIAL1 + timedelta(days=7))
COUNTS = ("attempts", "connected", "abandoned", "callers", "callers_connected")
WINDOW = {"from": "1900-01-01T00:00:00+00:00", "to": "2200-01-01T00:00:00+00:00"}


@pytest.fixture
async def metrics(settings, create_all_topics, tmp_path):
    await create_all_topics(settings)
    keys = await issue_keys(settings)
    running = await asyncio.to_thread(start_metrics, settings, keys, tmp_path / "metrics.log")
    try:
        yield running
    finally:
        await asyncio.to_thread(running.process.stop)


def received(n: int, at: datetime) -> dict:
    cid = f"bad-time-{n}"
    return event("contact.received", f"{cid}-r", at,
                 {"contact_id": cid, "channel": "phone", "caller_key": caller_key(900 + n)}, SOURCES["partner"])


UNSTORABLE = [
    received(1, datetime(1, 1, 1, tzinfo=UTC)),  # asyncpg stored it as -infinity
    received(2, datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=9)))),  # year 0 in UTC: the batch stalled
    received(3, datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-9)))),  # year 10000 in UTC
    received(4, datetime(1899, 12, 31, 23, 59, 59, tzinfo=UTC)),  # just before the window
]


async def ready(metrics) -> httpx.Response:
    async with httpx.AsyncClient(base_url=metrics.url, timeout=5) as client:
        return await client.get("/health/ready")



def log_lines(metrics, event_name: str) -> list[dict]:
    out = []
    for line in metrics.process.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event_name:
            out.append(record)
    return out


async def test_events_at_unstorable_times_are_set_aside_and_every_figure_keeps_answering(metrics, settings):
    log = synthetic_log(300, seed=11)
    # the bad ones in the middle of a batch: the events around them must be counted all the same
    await publish(settings, log[:150] + UNSTORABLE + log[150:])
    await metrics.wait_until_consumed(len(log))

    # set aside onto the rejected topic: where each came from and why, never the payload
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic(topics.REJECTED),
                               expect=len(UNSTORABLE))
    rejected = [json.loads(r.value) for r in records]
    assert sorted(r["id"] for r in rejected) == sorted(e["id"] for e in UNSTORABLE)
    for r, record in zip(rejected, records, strict=True):
        assert r["topic"] == settings.topic(topics.CONTACT_EVENTS) and r["offset"] is not None
        assert [p["path"] for p in r["problems"]] == ["time"]
        sent = next(e for e in UNSTORABLE if e["id"] == r["id"])
        assert r["problems"][0]["message"] and sent["time"] not in r["problems"][0]["message"]
        assert "caller_key" not in record.value.decode() and len(r["payload_sha256"]) == 64
        assert (b"metrics" in dict(record.headers).get("tsunagu-set-aside-by", b""))

    # never stored: no fact of theirs, nothing in the inbox, no -infinity anywhere
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        stored = await pool.fetchval("SELECT count(*) FROM metrics.inbox WHERE id LIKE 'bad-time-%'")
        assert stored == 0
        facts = await pool.fetchval("SELECT count(*) FROM metrics.contacts WHERE contact_id LIKE 'bad-time-%'")
        assert facts == 0
    finally:
        await pool.close()

    # counted and logged (ids and where they sat, never a caller key)
    # (time_out_of_range: metrics' window; not_canonical should the contract itself come to refuse them)
    aside = [line for line in log_lines(metrics, "event_set_aside")
             if line.get("reason") in ("time_out_of_range", "not_canonical")]
    assert sorted(line["id"] for line in aside) == sorted(e["id"] for e in UNSTORABLE)
    text = metrics.process.log_path.read_text()
    assert all(e["data"]["caller_key"] not in text for e in UNSTORABLE)
    scrape = await metrics.get("/metrics")
    counted = [line for line in scrape.text.splitlines()
               if line.startswith("tsunagu_events_set_aside_total{") and 'service="metrics"' in line]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= len(UNSTORABLE), scrape.text[:2000]

    # ready, consumer making progress, figures exact for the events that were counted
    answer = await ready(metrics)
    assert answer.status_code == 200 and answer.json()["checks"]["consumer"] is True, answer.text
    response = await metrics.get("/v1/metrics/answer-rate", period="trial1", group_by="field")
    assert response.status_code == 200, response.text
    want = answer_rate_counts(fold(validated(log)).contacts.values(), WEEK, None, channel="phone")["total"]
    assert {k: response.json()["totals"][k] for k in COUNTS} == {k: want[k] for k in COUNTS}
    for path in ("answer-rate", "waits", "consultations", "referrals"):
        wide = await metrics.get(f"/v1/metrics/{path}", **{"from": "1900-01-01T00:00:00Z", "to": "2199-12-31"})
        assert wide.status_code == 200, (path, wide.text)


@pytest.mark.parametrize(("params", "parameter"), [
    ({"from": "0001-01-01", "to": "2022-09-08"}, "from"),
    ({"from": "2022-09-01", "to": "9999-12-31"}, "to"),
    ({"from": "0001-01-01T00:00:00+09:00", "to": "2022-09-08"}, "from"),
    ({"from": "1899-12-31T23:59:59Z", "to": "2022-09-08"}, "from"),
    ({"from": "2022-09-01", "to": "2200-01-01T00:00:01Z"}, "to"),
])
async def test_a_period_outside_the_window_is_a_400_naming_the_parameter_and_the_range(metrics, params, parameter):
    for path in ("answer-rate", "waits", "consultations", "referrals"):
        response = await metrics.get(f"/v1/metrics/{path}", **params)
        assert response.status_code == 400, (path, response.text)
        body = response.json()
        assert body["parameter"] == parameter and body["allowed"] == WINDOW, body
        assert parameter in body["detail"] and "1900-01-01" in body["detail"] and "2200-01-01" in body["detail"]


def test_tsunagu_report_refuses_a_period_outside_the_window_by_name():
    cli = os.path.join(os.path.dirname(sys.executable), "tsunagu")
    done = subprocess.run([cli, "report", "--from", "0001-01-01", "--to", "2022-09-08"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "from is outside the range" in done.stdout + done.stderr


async def test_a_consumer_whose_batches_keep_failing_is_not_ready_with_the_cause_and_then_recovers(metrics, settings):
    first = synthetic_log(100, seed=12)
    await publish(settings, first)
    await metrics.wait_until_consumed(len(first))
    assert (await ready(metrics)).status_code == 200

    # a table every batch writes to goes away under the running process: every batch now fails
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        await pool.execute("ALTER TABLE metrics.inbox RENAME TO inbox_away")
        second = synthetic_log(100, seed=13, start=TRIAL1 + timedelta(days=30))
        await publish(settings, second)

        async def not_ready() -> bool:
            answer = await ready(metrics)
            return answer.status_code == 503 and answer.json()["checks"].get("consumer") is False

        await until(not_ready, 60, "/health/ready 503 with consumer false", metrics.process.log_tail)
        body = (await ready(metrics)).json()
        assert body["status"] == "not_ready" and body["checks"]["database"] is True, body
        reason = body["reasons"]["consumer"]
        assert "UndefinedTableError" in reason and "does not exist" in reason, reason
        failures = log_lines(metrics, "batch_failed")
        assert len(failures) >= 2 and failures[0]["level"] == "error", failures
        assert all(f["error"] == "UndefinedTableError" and "inbox" in f["cause"] for f in failures), failures
        text = metrics.process.log_path.read_text()
        assert not any(e["data"]["caller_key"] in text for e in second if "caller_key" in e["data"])
    finally:
        await pool.execute("ALTER TABLE metrics.inbox_away RENAME TO inbox")
        await pool.close()

    # the cause gone, the next batch succeeds: ready again and every event counted
    await metrics.wait_until_consumed(len(first) + len(second))

    async def ready_again() -> bool:
        return (await ready(metrics)).status_code == 200

    await until(ready_again, 30, "/health/ready 200 again", metrics.process.log_tail)
    assert (await ready(metrics)).json()["checks"]["consumer"] is True


async def test_check_server_version_refuses_a_server_older_than_required(postgres_server_dsn):
    pool = await create_pool(postgres_server_dsn, max_size=1)
    try:
        found = await check_server_version(pool)
        assert found >= 180000
        with pytest.raises(UnsupportedServer, match=r"needs PostgreSQL 99 or later"):
            await check_server_version(pool, required=990000)
    finally:
        await pool.close()


@pytest.mark.parametrize("service", ["metrics", "routing"])
async def test_a_service_refuses_to_start_on_a_server_older_than_it_needs(settings, create_all_topics, tmp_path,
                                                                         service):
    """Through the real start-up path: the requirement raised above the running server (the override
    only ever raises it), the process exits non-zero, naming the version it needs and the one it found."""
    await create_all_topics(settings)
    env = {**service_env(settings), REQUIRED_VERSION_ENV: "990000"}
    process = ServiceProcess(service, env, settings.service_port(service), tmp_path / f"{service}.log")
    with pytest.raises(RuntimeError, match="exited with"):
        await asyncio.to_thread(process.start, 90.0)
    assert process.proc is not None and process.proc.returncode != 0
    text = process.log_path.read_text()
    assert "PostgreSQL 99 or later" in text and "database_server_unsupported" in text, text[-3000:]
    assert '"required_version": "99"' in text
    # nothing was migrated: it stopped before touching the database
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        assert await pool.fetchval("SELECT to_regnamespace($1) IS NULL", service)
    finally:
        await pool.close()
