"""Live figures for ops as OpenTelemetry metrics: on ``GET /metrics`` (Prometheus text) and over OTLP
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the standard OpenTelemetry variables configure it).

Counters and histograms count what this process consumed (new events only, after their batch
committed); gauges come from the facts table, so every instance reports the same values.
Labels are codes only — field, channel, stage, organisation and desk ids — never a caller key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest

from schemas import ValidatedEvent

WAIT_BUCKETS = (0, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class OpsTelemetry:
    def __init__(self, service: str = "metrics") -> None:
        self.registry = CollectorRegistry()
        readers: list[MetricReader] = [PrometheusMetricReader(registry=self.registry)]
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        self.provider = MeterProvider(
            metric_readers=readers,
            resource=Resource.create({"service.name": f"tsunagu-{service}"}),
            views=[View(instrument_name="tsunagu_*_wait_seconds",
                        aggregation=ExplicitBucketHistogramAggregation(WAIT_BUCKETS))],
        )
        meter = self.provider.get_meter("tsunagu.metrics")
        self.contacts = meter.create_counter("tsunagu_contacts", description="contacts received (着信)")
        self.answered = meter.create_counter("tsunagu_answered", description="contacts answered (応答)")
        self.abandoned = meter.create_counter("tsunagu_abandoned", description="contacts abandoned (放棄)")
        self.answered_wait = meter.create_histogram(
            "tsunagu_answered_wait_seconds", unit="s", description="wait before a desk answered")
        self.abandoned_wait = meter.create_histogram(
            "tsunagu_abandoned_wait_seconds", unit="s", description="wait before the caller hung up")
        self.live: dict[str, Any] = {"queue": {}, "busy": {}, "answer_rate_15m": None}
        meter.create_observable_gauge("tsunagu_queue_length", [self._queue],
                                      description="contacts waiting in each field's queue")
        meter.create_observable_gauge("tsunagu_busy_lines", [self._busy],
                                      description="lines in a talk, per field")
        meter.create_observable_gauge("tsunagu_answer_rate_15m", [self._rate],
                                      description="answer rate of phone contacts received in the last 15 minutes")

    def _queue(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"field": f}) for f, n in self.live["queue"].items()]

    def _busy(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"field": f}) for f, n in self.live["busy"].items()]

    def _rate(self, options: CallbackOptions) -> Iterable[Observation]:
        rate = self.live["answer_rate_15m"]
        return [] if rate is None else [Observation(rate)]

    def record(self, events: Iterable[ValidatedEvent]) -> None:
        for e in events:
            short = e.event_type.short
            d: Any = e.data
            if short == "contact.received":
                self.contacts.add(1, {"channel": d.channel.value})
            elif short == "contact.answered":
                labels = {"organisation": d.organisation_id, "desk": d.desk_id}
                self.answered.add(1, labels)
                self.answered_wait.record(d.wait_seconds, labels)
            elif short == "contact.abandoned":
                self.abandoned.add(1, {"stage": d.stage.value})
                self.abandoned_wait.record(d.wait_seconds, {"stage": d.stage.value})

    def scrape(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()
