"""Ops figures: counters, wait histograms and gauges on the scrape endpoint, with codes as labels only."""

from __future__ import annotations

from services.metrics.telemetry import OpsTelemetry
from tests.integration.metrics_support import synthetic_log, validated


def test_the_scrape_counts_contacts_and_waits_and_shows_queues_and_busy_lines_per_field():
    log = synthetic_log(200, seed=4)
    telemetry = OpsTelemetry()
    try:
        telemetry.record(validated(log))
        telemetry.live = {"queue": {"loneliness": 3}, "busy": {"suicidal": 2}, "answer_rate_15m": 0.25}
        telemetry.links_pending = 17
        scrape = telemetry.scrape().decode()
    finally:
        telemetry.shutdown()
    phone = sum(1 for e in log if e["type"].endswith("contact.received.v1") and e["data"]["channel"] == "phone")
    assert any(line.startswith('tsunagu_contacts_total{channel="phone"') and line.endswith(f" {phone}.0")
               for line in scrape.splitlines())
    assert "tsunagu_answered_wait_seconds_bucket" in scrape and "tsunagu_abandoned_wait_seconds_bucket" in scrape
    assert 'tsunagu_queue_length{field="loneliness"' in scrape and 'tsunagu_busy_lines{field="suicidal"' in scrape
    assert "tsunagu_answer_rate_15m" in scrape
    assert any(line.startswith("tsunagu_metrics_links_pending") and line.endswith(" 17.0")
               for line in scrape.splitlines())


def test_no_caller_key_or_contact_id_ever_becomes_a_label():
    log = synthetic_log(100, seed=8)
    telemetry = OpsTelemetry()
    try:
        telemetry.record(validated(log))
        scrape = telemetry.scrape().decode()
    finally:
        telemetry.shutdown()
    for e in log:
        assert e["data"]["contact_id"] not in scrape
        assert e["data"].get("caller_key", "~") not in scrape
