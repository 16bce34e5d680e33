"""Live figures for ops as OpenTelemetry metrics: on ``GET /metrics`` (Prometheus text) and over OTLP
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the standard OpenTelemetry variables configure it).

Counters and histograms count what this process consumed (new events only, after their batch
committed); gauges come from the facts table, so every instance reports the same values.
Labels are codes only — field, channel, stage, organisation and desk ids — never a caller key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from schemas import ValidatedEvent
from tsunagu import telemetry as shared


class OpsTelemetry:
    """The metrics service's figures, on the process's meter (tsunagu/telemetry.py) — the same one that
    carries FastStream's per-handler metrics and the consumer lag, so one scrape shows them all.
    Without one (a test), it builds its own."""

    def __init__(self, service: str = "metrics", telemetry: shared.Telemetry | None = None) -> None:
        self._own = telemetry is None
        self.shared = telemetry if telemetry is not None else shared.build(service)
        self.registry = self.shared.registry
        self.provider = self.shared.meter_provider
        meter = self.provider.get_meter("tsunagu.metrics")
        self.contacts = meter.create_counter("tsunagu_contacts", description="contacts received (着信)")
        self.answered = meter.create_counter("tsunagu_answered", description="contacts answered (応答)")
        self.abandoned = meter.create_counter("tsunagu_abandoned", description="contacts abandoned (放棄)")
        self.answered_wait = meter.create_histogram(
            "tsunagu_answered_wait_seconds", unit="s", description="wait before a desk answered")
        self.abandoned_wait = meter.create_histogram(
            "tsunagu_abandoned_wait_seconds", unit="s", description="wait before the caller hung up")
        # store.gauges.live_figures fills these (and "answer_rate_15m_by_field": {field: rate}). Lines open
        # and free per field come from routing, which holds the desks (tsunagu_open_lines/free_lines).
        self.live: dict[str, Any] = {"queue": {}, "busy": {}, "answer_rate_15m": None}
        meter.create_observable_gauge("tsunagu_queue_length", [self._queue],
                                      description="contacts waiting in each field's queue")
        meter.create_observable_gauge("tsunagu_busy_lines", [self._busy],
                                      description="lines in a talk, per field")
        # contacts whose callers' links wait for the next derive (app.move_links sets it each round): a
        # figure that grows says the derive falls behind the live batches
        self.links_pending: int | None = None
        meter.create_observable_gauge(
            "tsunagu_metrics_links_pending", [self._pending],
            description="contacts changed by live batches whose callers' links are not yet derived")
        meter.create_observable_gauge(
            "tsunagu_answer_rate_15m", [self._rate],
            description="answer rate of phone contacts received in the last 15 minutes (no field: all; "
            "field: among contacts that chose it)")

    def _queue(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"field": f}) for f, n in self.live["queue"].items()]

    def _busy(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"field": f}) for f, n in self.live["busy"].items()]

    def _pending(self, options: CallbackOptions) -> Iterable[Observation]:
        return [] if self.links_pending is None else [Observation(self.links_pending)]

    def _rate(self, options: CallbackOptions) -> Iterable[Observation]:
        rate = self.live.get("answer_rate_15m")
        out = [] if rate is None else [Observation(rate)]
        by_field = self.live.get("answer_rate_15m_by_field") or {}
        return out + [Observation(r, {"field": f}) for f, r in by_field.items() if r is not None]

    def record(self, events: Iterable[ValidatedEvent]) -> None:
        # counters: one add per label set and batch (an add costs about as much as folding an event)
        contacts: Counter[str] = Counter()
        answered: Counter[tuple[str, str]] = Counter()
        abandoned: Counter[str] = Counter()
        for e in events:
            short = e.event_type.short
            d: Any = e.data
            if short == "contact.received":
                contacts[d.channel.value] += 1
            elif short == "contact.answered":
                answered[(d.organisation_id, d.desk_id)] += 1
                self.answered_wait.record(d.wait_seconds, {"organisation": d.organisation_id, "desk": d.desk_id})
            elif short == "contact.abandoned":
                abandoned[d.stage.value] += 1
                self.abandoned_wait.record(d.wait_seconds, {"stage": d.stage.value})
        for channel, n in contacts.items():
            self.contacts.add(n, {"channel": channel})
        for (organisation, desk), n in answered.items():
            self.answered.add(n, {"organisation": organisation, "desk": desk})
        for stage, n in abandoned.items():
            self.abandoned.add(n, {"stage": stage})

    def scrape(self) -> bytes:
        # with several workers, every worker's counters (tsunagu/telemetry.py, Telemetry.scrape)
        return self.shared.scrape()

    def shutdown(self) -> None:
        if self._own:  # the process's own telemetry is shut down at exit
            self.shared.shutdown()
