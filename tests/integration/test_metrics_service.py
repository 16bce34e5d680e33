"""metrics as its own process on the real broker and PostgreSQL: exact figures over HTTP under
duplicates and reordering, what each key may see, CSV, the ops scrape, and a rebuild by replay."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.metrics.domain.counting import DIMENSIONS, answer_rate_counts
from services.metrics.domain.facts import fold
from services.metrics.domain.periods import Period
from tests.integration.metrics_support import (
    TRIAL1,
    answers,
    by_key,
    issue_keys,
    publish,
    start_metrics,
    synthetic_log,
    validated,
)
from tsunagu.db import create_pool

pytestmark = pytest.mark.integration

WEEK = Period(TRIAL1, TRIAL1 + timedelta(days=7))
COUNTS = ("attempts", "connected", "abandoned", "abandoned_ivr", "abandoned_queue", "callers", "callers_connected")


@pytest.fixture
async def metrics(settings, create_all_topics, tmp_path):
    await create_all_topics(settings)
    keys = await issue_keys(settings)
    running = await asyncio.to_thread(start_metrics, settings, keys, tmp_path / "metrics.log",
                                      TSUNAGU_METRICS_LIVE_SECONDS="0.3")
    try:
        yield running
    finally:
        await asyncio.to_thread(running.process.stop)


def expected_counts(log, dimension, **kw):
    return answer_rate_counts(fold(validated(log)).contacts.values(), WEEK, dimension, **kw)


def http_counts(body):
    out = {"total": {k: body["totals"][k] for k in COUNTS}}
    for key, g in by_key(body["groups"]).items():
        out[key] = {k: g[k] for k in COUNTS}
    return out


async def test_figures_over_http_are_exact_under_duplicates_and_reordering_and_a_rebuild_gives_the_same(
        metrics, settings):
    log = synthetic_log(1500, seed=5)
    rnd = random.Random(5)
    sent = log + rnd.sample(log, 400)  # at-least-once: some events arrive twice
    rnd.shuffle(sent)  # and out of order
    await publish(settings, sent)
    await metrics.wait_until_consumed(len(log))

    for dimension in (None, *DIMENSIONS):
        params = {"period": "trial1", **({"group_by": dimension} if dimension else {})}
        response = await metrics.get("/v1/metrics/answer-rate", **params)
        assert response.status_code == 200, response.text
        got = http_counts(response.json())
        # group_by=channel counts every channel; every other figure counts phone calls (attempts)
        want = expected_counts(log, dimension, channel=None if dimension == "channel" else "phone")
        assert got == want, dimension

    response = await metrics.get("/v1/metrics/answer-rate", period="trial1", group_by="field")
    by_field = by_key(response.json()["groups"])
    assert by_field["suicidal"]["label"]["ja"] == "死にたいほどつらい方"
    assert by_field[None]["label"]["en"] == "no field chosen"
    assert by_field["suicidal"]["answer_rate"] == round(by_field["suicidal"]["connected"]
                                                       / by_field["suicidal"]["attempts"], 6)

    before = await answers(metrics)
    # rebuild: stop, empty the schema, replay every topic from the start under a new consumer group
    await asyncio.to_thread(metrics.process.stop)
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        await pool.execute("DROP SCHEMA metrics CASCADE")
    finally:
        await pool.close()
    metrics.process.env["TSUNAGU_METRICS_CONSUMER_GROUP"] = "metrics-rebuild"
    await asyncio.to_thread(metrics.process.start)
    await metrics.wait_until_consumed(len(log))
    assert await answers(metrics) == before


async def test_a_partner_sees_only_its_own_desks_and_a_stranger_nothing(metrics, settings):
    log = synthetic_log(400, seed=9)
    # a record that is not a canonical event is set aside and logged by id; the consumer carries on
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("contact.events"), b"not json", key=b"x")
        poison = {**log[0], "id": "poison-1", "data": {**log[0]["data"], "channel": "fax"}}
        await producer.send_and_wait(settings.topic("contact.events"), json.dumps(poison).encode(), key=b"x")
    finally:
        await producer.stop()
    await publish(settings, log)
    await metrics.wait_until_consumed(len(log))
    assert "poison-1" in metrics.process.log_tail(400) and "event_set_aside" in metrics.process.log_tail(400)
    response = await metrics.get("/v1/metrics/answer-rate", "npo-a", period="trial1", group_by="organisation")
    assert response.status_code == 200
    body = response.json()
    assert {g["key"] for g in body["groups"]} == {"npo-a"}
    assert http_counts(body)["total"] == expected_counts(log, None, organisation="npo-a")["total"]
    consultations = (await metrics.get("/v1/metrics/consultations", "npo-b", period="trial1",
                                       group_by="organisation")).json()
    assert {g["key"] for g in consultations["groups"]} <= {"npo-b"}

    async with httpx.AsyncClient(base_url=metrics.url) as client:
        assert (await client.get("/v1/metrics/answer-rate", params={"period": "trial1"})).status_code == 401
        bad = await client.get("/v1/metrics/answer-rate", params={"period": "trial1"},
                               headers={"Authorization": "Bearer tsg_nope"})
        assert bad.status_code == 401
    assert (await metrics.get("/v1/metrics/answer-rate", period="trial9")).status_code == 400
    assert (await metrics.get("/v1/metrics/answer-rate", period="trial1", group_by="caller")).status_code == 422


async def test_csv_waits_consultations_referrals_and_the_ops_scrape(metrics, settings):
    log = synthetic_log(600, seed=13)
    await publish(settings, log)
    await metrics.wait_until_consumed(len(log))

    async with httpx.AsyncClient(base_url=metrics.url) as client:
        csv = await client.get("/v1/metrics/answer-rate", params={"period": "trial1", "group_by": "field"},
                               headers=metrics.headers(Accept="text/csv"))
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0].startswith("key,label_ja,label_en,attempts,connected")
    assert lines[1].startswith("total,合計,total,")

    waits = (await metrics.get("/v1/metrics/waits", period="trial1", within="20,60")).json()["totals"]
    assert 0 <= waits["answered_within_20s"] <= waits["answered_within_60s"] <= waits["connected"]
    assert waits["wait_p50"] <= waits["wait_p90"] <= waits["wait_p95"]

    consultations = (await metrics.get("/v1/metrics/consultations", period="trial1")).json()["totals"]
    assert consultations["consultations"] == sum(1 for e in log if e["type"].endswith("consultation.recorded.v1"))
    assert sum(a["count"] for a in consultations["age_bands"]) == consultations["consultations"]

    referrals = (await metrics.get("/v1/metrics/referrals", period="trial1", group_by="state")).json()
    requested = {e["data"]["referral_id"] for e in log if e["type"].endswith("referral.requested.v1")}
    assert referrals["totals"]["referrals"] == len(requested)
    assert referrals["totals"]["ack_seconds_p50"] == pytest.approx(120, abs=1)

    await asyncio.sleep(1.0)  # a live-gauge refresh
    async with httpx.AsyncClient(base_url=metrics.url) as client:
        scrape = (await client.get("/metrics")).text
    assert 'tsunagu_busy_lines{field="' in scrape and "tsunagu_answer_rate_15m" in scrape
    assert 'tsunagu_answer_rate_15m{field="' in scrape
    assert "tsunagu_metrics_links_pending" in scrape  # the derive task's round has run
    assert "tsunagu_contacts_total" in scrape and "tsunagu_answered_wait_seconds_bucket" in scrape
    assert not any(e["data"].get("caller_key", "~") in scrape for e in log)


async def test_the_report_and_the_plan_read_the_same_figures_as_the_api(metrics, settings):
    from typer.testing import CliRunner

    from tsunagu_tools.cli import app
    from tsunagu_tools.reports import capacity_plan

    log = synthetic_log(800, seed=17)
    await publish(settings, log)
    await metrics.wait_until_consumed(len(log))
    env = {"DATABASE_URL": settings.database_url, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, app, ["report", "--period", "trial1", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    api = (await metrics.get("/v1/metrics/answer-rate", period="trial1", group_by="field")).json()
    assert report["answer_rate"]["totals"] == api["totals"]
    text = await asyncio.to_thread(runner.invoke, app, ["report", "--period", "trial1"], env=env)
    assert text.exit_code == 0, text.output
    assert "呼出件数" in text.output and "応答率" in text.output and "孤独・孤立でお悩みの方" in text.output

    plan = await capacity_plan(settings.database_url, WEEK, 0.8, {"loneliness": 1})
    lonely = [h for h in plan["hours"] if h["field"] == "loneliness"]
    assert lonely and plan["fields"]["loneliness"]["current_lines"] == 1
    assert all(h["lines_needed"] is None or h["lines_needed"] >= 1 for h in lonely)
    assert all(h["predicted_rate"] is None or 0 <= h["predicted_rate"] <= 1 for h in lonely)
    shown = await asyncio.to_thread(runner.invoke, app, ["plan", "--period", "trial1", "--target", "0.8"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "必要回線" in shown.output
