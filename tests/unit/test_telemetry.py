"""Trace context, per-event spans, log fields and HTTP spans, without a broker (tsunagu/telemetry.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from tsunagu import telemetry
from tsunagu.consume import decode_records
from tsunagu.logging import configure_logging, event_fields
from tsunagu.outbox import Outgoing
from tsunagu.settings import Settings
from tsunagu.telemetry import EventRef, contact_root, event_spans, format_traceparent, parse_traceparent

UPSTREAM = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tel = telemetry.build("routing", span_exporter=exporter, span_delay_ms=10)
    telemetry.use(tel)
    try:
        yield SimpleNamespace(tel=tel, finished=lambda: (tel.tracer_provider.force_flush(),
                                                         exporter.get_finished_spans())[1])
    finally:
        telemetry.use(None)
        tel.shutdown()


def test_a_contacts_trace_is_the_same_in_every_process_and_differs_between_contacts():
    assert contact_root("c-npo-a-1") == contact_root("c-npo-a-1")
    assert contact_root("c-npo-a-1").trace_id != contact_root("c-npo-a-2").trace_id
    assert contact_root("c-npo-a-1").is_valid


def test_traceparent_round_trips_and_malformed_ones_are_ignored():
    assert format_traceparent(parse_traceparent(UPSTREAM)) == UPSTREAM
    assert format_traceparent(parse_traceparent(UPSTREAM.encode())) == UPSTREAM
    for bad in (None, "", "00-xyz", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "ff-" + UPSTREAM[3:]):
        assert parse_traceparent(bad) is None


def test_an_event_continues_the_span_it_arrived_with_or_starts_under_its_contacts_root(spans):
    with event_spans("routing consume", [EventRef("c-1", UPSTREAM), EventRef("c-2")]) as (first, second):
        assert telemetry.traceparent_for("c-1") == telemetry.current_of(first)
        assert Outgoing("routing.decisions", "c-2", b"{}").traceparent == telemetry.current_of(second)
        # a record about a contact not in the batch continues that contact's own trace
        assert Outgoing("routing.decisions", "c-9", b"{}").traceparent == format_traceparent(contact_root("c-9"))
        assert Outgoing("referral.events", "ref-1", b"{}", "explicit").traceparent == "explicit"
    done = {s.context.span_id: s for s in spans.finished()}
    one, two = done[first.get_span_context().span_id], done[second.get_span_context().span_id]
    assert (one.context.trace_id, one.parent.span_id) == (int(UPSTREAM[3:35], 16), int(UPSTREAM[36:52], 16))
    assert (two.context.trace_id, two.parent.span_id) == (contact_root("c-2").trace_id, contact_root("c-2").span_id)
    # outside the step the contact's root is what a record carries on
    assert telemetry.traceparent_for("c-1") == format_traceparent(contact_root("c-1"))


def test_a_failing_step_marks_its_event_spans_as_errors(spans):
    with pytest.raises(RuntimeError), event_spans("metrics consume", [EventRef("c-1")]):
        raise RuntimeError("database away")
    assert [s.status.status_code.name for s in spans.finished()] == ["ERROR"]


def test_without_an_exporter_nothing_is_recorded_but_log_lines_still_carry_the_contacts_trace_id():
    quiet = telemetry.build("intake")
    telemetry.use(quiet)
    try:
        with event_spans("intake accept", [EventRef("c-1")]) as (span,):
            assert not span.is_recording()
            assert event_fields("contact.received", "c-1")["trace_id"] == f"{contact_root('c-1').trace_id:032x}"
        # the consumer derives the same root from the key: nothing to store
        assert Outgoing("contact.events", "c-1", b"{}").traceparent is None
        assert telemetry.traceparent_about("c-1", "ref-1")[:52] == format_traceparent(contact_root("c-1"))[:52]
    finally:
        telemetry.use(None)
        quiet.shutdown()


def test_log_lines_are_json_with_service_event_ids_and_the_contacts_trace(capsys, spans):
    configure_logging(Settings(log_format="json"), "referral")
    try:
        log = structlog.get_logger()
        with event_spans("referral consume", [EventRef("c-npo-a-7")]) as (span,):
            log.info("referral_opened", **event_fields("referral.requested", "c-npo-a-7", "ref-1"))
        log.info("referral_stopped")
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    ctx = span.get_span_context()
    assert first == first | {"service": "referral", "event": "referral_opened", "event_type": "referral.requested",
                             "contact_id": "c-npo-a-7", "referral_id": "ref-1", "level": "info",
                             "trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
    assert "timestamp" in first
    assert second["service"] == "referral" and "trace_id" not in second  # no span, no ids


def test_a_record_that_is_not_an_event_is_counted_as_set_aside_per_service(spans):
    record = SimpleNamespace(value=b'{"not": "an event"}', topic="t.contact.events", partition=0, offset=1,
                             key=b"c-1", headers=())
    batch = decode_records([record])
    assert len(batch.invalid) == 1
    scrape = generate_latest(spans.tel.registry).decode()
    assert any(line.startswith("tsunagu_events_set_aside_total{") and 'service="routing"' in line
               and line.endswith(" 1.0") for line in scrape.splitlines())


def test_http_spans_leave_out_health_probes_scrapes_and_query_strings(spans):
    app = FastAPI()

    @app.get("/health/live")
    async def live() -> dict:
        return {}

    @app.get("/v1/referrals")
    async def referrals() -> dict:
        return {}

    spans.tel.attach(app, scrape_route=True)
    with TestClient(app) as client:
        spans.tel.set_aside().add(1, {"service": "routing"})
        scrape = client.get("/metrics")
        assert scrape.status_code == 200 and "tsunagu_events_set_aside_total" in scrape.text
        assert "/metrics" not in client.get("/openapi.json").text
        client.get("/health/live")
        client.get("/v1/referrals", params={"caller": "090-1234-5678"})
        client.get("/v1/callers/+81-90-1234-5678")  # no such route: the raw path is all there is
    finished = spans.finished()
    assert [s.attributes.get("http.route") for s in finished] == ["/openapi.json", "/v1/referrals", None]
    assert all("1234" not in json.dumps(dict(s.attributes)) for s in finished)
    assert finished[2].attributes["http.target"] == "/v1/callers/+[digits]"


def test_with_several_workers_one_scrape_sums_every_workers_counters_and_keeps_live_gauges(tmp_path):
    import os

    workers = [telemetry.build("metrics", snapshot_dir=tmp_path) for _ in range(3)]
    try:
        for n, worker in enumerate(workers, start=1):
            worker.set_aside().add(n, {"service": "metrics"})
            worker.lag = {("metrics", "t.contact.events", n): 10 * n}
        # the second worker runs (here: our parent process), the third has exited
        (tmp_path / f"{os.getppid()}.prom").write_bytes(generate_latest(workers[1].registry))
        (tmp_path / "999999999.prom").write_bytes(generate_latest(workers[2].registry))
        scrape = workers[0].scrape().decode().splitlines()
    finally:
        for worker in workers:
            worker.meter_provider.shutdown()

    def value(prefix: str, *labels: str) -> list[float]:
        return [float(line.rsplit(" ", 1)[1]) for line in scrape
                if line.startswith(prefix) and all(label in line for label in labels)]

    assert value("tsunagu_events_set_aside_total{", 'service="metrics"') == [6.0]  # 1 + 2 + 3: none lost
    assert value("tsunagu_consumer_lag{", 'partition="1"') == [10.0]
    assert value("tsunagu_consumer_lag{", 'partition="2"') == [20.0]
    assert value("tsunagu_consumer_lag{", 'partition="3"') == []  # the exited worker's gauges are gone


def test_up_with_telemetry_points_the_services_at_the_stacks_telemetry_folder(tmp_path):
    from tsunagu_tools import stack

    runtime = stack.Runtime("127.0.0.1:1", "postgresql://x/y")
    assert "TSUNAGU_TELEMETRY_DIR" not in stack.service_env(runtime) or stack.service_env(runtime)[
        "TSUNAGU_TELEMETRY_DIR"] == str(Settings().telemetry_dir)
    env = stack.service_env(runtime, stack.telemetry_dir(Settings(home=tmp_path)))
    assert env["TSUNAGU_TELEMETRY_DIR"] == str(tmp_path.resolve() / "telemetry")


def test_trace_tree_hangs_each_span_under_its_parent_and_lists_the_newest_contacts():
    from tsunagu_tools.trace import recent_contacts, span_tree

    def span(sid: str, parent: str | None, start: int, name: str = "x", **attributes: str) -> dict:
        return {"span_id": sid, "parent_span_id": parent, "start": start, "name": name, "attributes": attributes}

    spans = [span("b", "a", 2), span("a", None, 1, "contact", **{"tsunagu.contact_id": "c-1"}),
             span("c", "b", 3), span("d", "gone", 4), span("e", None, 5, "contact", **{"tsunagu.contact_id": "c-2"})]
    assert [(depth, s["span_id"]) for depth, s in span_tree(spans)] == [(0, "a"), (1, "b"), (2, "c"), (0, "d"),
                                                                         (0, "e")]
    assert recent_contacts(spans) == ["c-2", "c-1"]
