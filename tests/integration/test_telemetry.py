"""One contact's journey is one trace, on the real stack: intake, routing, referral and metrics as their
own processes, writing spans to files (as `tsunagu up --telemetry` does); and nothing a partner sent
as a caller identifier appears in any span, metric or log line they wrote."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.support import T0, ServiceProcess, contact_received, envelope, field_selected, service_env
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.settings import Settings
from tsunagu.telemetry import contact_root, format_traceparent
from tsunagu_tools import stack
from tsunagu_tools.trace import contact_trace, read_spans, span_tree

pytestmark = pytest.mark.integration

SERVICES = ("intake", "routing", "referral", "metrics")
CALLERS = {1: "090-1234-5678", 2: "03-5555-0123"}  # raw caller identifiers the partner sends
CALLER_FORMS = ["090-1234-5678", "09012345678", "+819012345678", "819012345678",
                "03-5555-0123", "0355550123", "+81355550123", "81355550123"]


def consultation(n: int) -> dict:
    cid = f"c-npo-a-{n}"
    data = {"contact_id": cid, "organisation_id": "npo-a", "categories": ["loneliness"], "age_band": "age30s",
            "risk": "medium", "referral_needed": True, "municipality": "131016"}
    return {**envelope("npo-a", "consultation.recorded", f"ev-npo-a-{n}-consultation", cid, data,
                       at=T0 + timedelta(minutes=30), system="cases"), "partitionkey": cid}


@dataclass
class Run:
    folder: Path  # the span and metric files
    logs: list[Path]
    spans: list[dict]


async def _wait_for(folder: Path, done, timeout: float = 90.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        spans = read_spans(folder)
        if done(spans) or time.monotonic() > deadline:
            return spans
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
async def traced_run(kafka_bootstrap, postgres_server_dsn, tmp_path_factory) -> AsyncIterator[Run]:
    tmp = tmp_path_factory.mktemp("telemetry")
    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = await stack.ensure_database(postgres_server_dsn, name)
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=dsn,
                        topic_prefix=f"t{uuid.uuid4().hex[:12]}.", partitions=3,
                        **{f"{s}_port": stack.free_port() for s in SERVICES})
    await stack.create_stack_topics(settings, kafka_bootstrap)
    pool = await create_pool(dsn)
    try:
        await auth.migrate_schema(pool)
        key = (await auth.issue_credential(pool, "npo-a", "partner", backfill=True))[1]
    finally:
        await pool.close()
    folder = tmp / "telemetry"
    env = {**service_env(settings), "TSUNAGU_TELEMETRY_DIR": str(folder)}
    processes = [ServiceProcess(s, env, settings.service_port(s), tmp / f"{s}.log") for s in SERVICES]
    try:
        for p in processes:
            await asyncio.to_thread(p.start)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents+json"}
        async with httpx.AsyncClient(base_url=processes[0].url, timeout=10) as client:
            # one contact's events in separate requests, minutes apart in event time, as partners send them
            for event in (contact_received("npo-a", 1, caller=CALLERS[1]), field_selected("npo-a", 1),
                          contact_received("npo-a", 2, caller=CALLERS[2]), consultation(1)):
                response = await client.post("/v1/events", headers=headers, content=json.dumps(event))
                assert response.status_code == 202, response.text
            # a rejected event carrying a caller identifier must not leak either
            bad = contact_received("npo-a", 3, caller=CALLERS[1])
            bad["data"]["channel"] = "fax"
            assert (await client.post("/v1/events", headers=headers, content=json.dumps(bad))).status_code == 422

        def journey_done(spans: list[dict]) -> bool:
            mine = contact_trace(spans, "c-npo-a-1")
            metrics = [s for s in mine if s["name"] == "metrics consume"]
            topics = {s["attributes"].get("messaging.destination.name", "").rsplit(".", 2)[-2] for s in metrics}
            return {"contact", "routing", "referral"} <= topics

        await _wait_for(folder, journey_done)
    finally:
        for p in processes:
            await asyncio.to_thread(p.stop)  # flushes their span processors
        await stack.drop_database(postgres_server_dsn, name)
    yield Run(folder, [p.log_path for p in processes], read_spans(folder))


async def test_one_contacts_journey_through_every_service_is_one_trace_of_parent_linked_spans(traced_run):
    spans = contact_trace(traced_run.spans, "c-npo-a-1")
    trace_id = f"{contact_root('c-npo-a-1').trace_id:032x}"
    assert spans and all(s["trace_id"] == trace_id for s in spans)
    assert {s["service"] for s in spans} == {f"tsunagu-{s}" for s in SERVICES}
    by_id = {s["span_id"]: s for s in spans}

    root = [s for s in spans if s["name"] == "contact"]
    assert len(root) == 1 and root[0]["parent_span_id"] is None
    accepted = [s for s in spans if s["name"] == "intake accept"]
    assert sorted(s["attributes"]["tsunagu.event.type"] for s in accepted) == [
        "jp.tsunagu.consultation.recorded.v1", "jp.tsunagu.contact.field_selected.v1",
        "jp.tsunagu.contact.received.v1"]
    assert all(s["parent_span_id"] == root[0]["span_id"] for s in accepted)

    def parent(s: dict) -> dict:
        return by_id[s["parent_span_id"]]

    def topic(s: dict) -> str:
        return s["attributes"]["messaging.destination.name"].split(".", 1)[1]  # without the test's prefix

    routing = [s for s in spans if s["name"] == "routing consume"]
    assert len(routing) == 2 and all(parent(s)["name"] == "intake accept" for s in routing)
    referral = [s for s in spans if s["name"] == "referral consume"]
    assert len(referral) == 1
    assert parent(referral[0])["attributes"]["tsunagu.event.type"] == "jp.tsunagu.consultation.recorded.v1"
    metrics = [s for s in spans if s["name"] == "metrics consume"]
    expected_parent = {"contact.events": "intake accept", "consultation.events": "intake accept",
                       "routing.decisions": "routing consume", "referral.events": "referral consume"}
    assert {topic(s) for s in metrics} == set(expected_parent)
    for s in metrics:
        assert parent(s)["name"] == expected_parent[topic(s)], s
    # the tree hangs together: every span reaches the root through its parents
    tree = span_tree(spans)
    assert tree[0][1] is root[0] and len(tree) == len(spans) and all(depth > 0 for depth, _ in tree[1:])

    # each acceptance is linked to the HTTP request it came in (its own trace); no probe is traced
    everything = traced_run.spans
    http = {s["span_id"]: s for s in everything if s["kind"] == "SERVER"}
    assert all(any(link["span_id"] in http for link in s["links"]) for s in accepted)
    assert all("/health" not in json.dumps(s) for s in http.values())
    assert all(s["attributes"].get("http.route") == "/v1/events" for s in http.values())

    # another contact is another trace
    other = contact_trace(everything, "c-npo-a-2")
    assert other and {s["trace_id"] for s in other}.isdisjoint({trace_id})


async def test_no_caller_identifier_a_partner_sent_appears_in_any_span_metric_or_log(traced_run):
    files = [*traced_run.folder.iterdir(), *traced_run.logs]
    assert {p.name for p in traced_run.folder.iterdir()} >= {f"{s}-spans.jsonl" for s in SERVICES}
    assert any(p.name.endswith("-metrics.jsonl") for p in traced_run.folder.iterdir())
    text = "\n".join(p.read_text(errors="replace") for p in files)
    assert "c-npo-a-1" in text  # the scan reads what the services wrote
    found = {form: text.count(form) for form in CALLER_FORMS}
    assert sum(found.values()) == 0, found


async def test_log_lines_name_the_event_and_join_the_contacts_trace(traced_run):
    lines = [json.loads(line) for p in traced_run.logs for line in p.read_text().splitlines()
             if line.startswith("{")]
    opened = [line for line in lines if line.get("event") == "referral_opened"]
    assert len(opened) == 1
    line = opened[0]
    assert line["service"] == "referral" and line["contact_id"] == "c-npo-a-1" and line["referral_id"]
    assert line["event_type"].startswith("referral.")
    assert line["trace_id"] == f"{contact_root('c-npo-a-1').trace_id:032x}"
    referral = [s for s in contact_trace(traced_run.spans, "c-npo-a-1") if s["name"] == "referral consume"]
    assert line["span_id"] == referral[0]["span_id"]


async def test_an_outbox_created_before_tracing_gains_the_traceparent_column_once(database_url):
    from tsunagu.db import INBOX_OUTBOX, migrate
    from tsunagu.outbox import Outgoing, enqueue

    traceparent = format_traceparent(contact_root("c-2"))
    pool = await create_pool(database_url)
    try:
        async with pool.acquire() as conn:  # the schema as an earlier release left it
            await conn.execute('CREATE SCHEMA "old"; SET search_path TO "old";'
                               + (INBOX_OUTBOX / "001_inbox_outbox.sql").read_text())
            await conn.execute('CREATE TABLE "old".schema_migrations (name text PRIMARY KEY, '
                               "applied_at timestamptz NOT NULL DEFAULT now())")
            await conn.execute("""INSERT INTO "old".schema_migrations (name) VALUES ('000_inbox_outbox')""")
            await conn.execute("""INSERT INTO "old".outbox (topic, key, value) VALUES ('contact.events', 'c-1', '')""")
        later = ["inbox_outbox/002_outbox_traceparent.sql", "inbox_outbox/003_outbox_published.sql",
                 "inbox_outbox/004_outbox_every_partition.sql"]
        assert await migrate(pool, "old", INBOX_OUTBOX) == later
        assert await migrate(pool, "old", INBOX_OUTBOX) == []
        assert await migrate(pool, "new", INBOX_OUTBOX) == ["inbox_outbox/001_inbox_outbox.sql", *later]
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, "old", [Outgoing("contact.events", "c-2", b"{}", traceparent)])
        rows = await pool.fetch('SELECT key, traceparent FROM "old".outbox ORDER BY seq')
        assert [(r["key"], r["traceparent"]) for r in rows] == [("c-1", None), ("c-2", traceparent)]
    finally:
        await pool.close()


async def test_each_service_exports_its_consumer_lag_handling_time_and_faststreams_handler_metrics(traced_run):
    for service in ("routing", "referral", "metrics"):
        snapshots = [json.loads(line) for line in (traced_run.folder / f"{service}-metrics.jsonl").read_text()
                     .splitlines()]
        names: dict[str, list] = {}
        for snapshot in snapshots:
            for rm in snapshot["resource_metrics"]:
                for sm in rm["scope_metrics"]:
                    for m in sm["metrics"]:
                        names.setdefault(m["name"], []).extend(m["data"]["data_points"])
        lag = names.get("tsunagu_consumer_lag", [])
        groups = {p["attributes"]["group"] for p in lag}  # the test's group prefix, then the service
        assert {g.rsplit(".", 1)[-1] for g in groups} == {service}, service
        assert all(p["value"] >= 0 for p in lag)
        handled = [p for p in names["tsunagu_event_handling_seconds"] if p["attributes"] == {"service": service}]
        assert handled and handled[-1]["count"] >= 1
        assert names["messaging.process.duration"] and names["messaging.process.messages"]
