"""FastStream broker middlewares: a span per consumed record, and per-handler metrics.

With spans recorded, FastStream's ``KafkaTelemetryMiddleware`` (W3C ``traceparent`` in headers, its
per-batch ``process`` span and consume metrics) and then ``EventSpans``; with none recorded, only
``QuietBrokerTelemetry``, which keeps FastStream's metrics without the per-record work.
"""

from __future__ import annotations

import time
from typing import Any

from faststream import BaseMiddleware

from tsunagu.telemetry.ids import header
from tsunagu.telemetry.runtime import Telemetry
from tsunagu.telemetry.spans import EventRef, event_spans


class EventSpans:
    """Broker middleware: a ``<service> consume`` span per Kafka record around the handler (see the
    package docstring), and ``tsunagu_event_handling_seconds{service}`` per batch. Registered after
    FastStream's telemetry middleware, so its batch span is the current span the record spans link to."""

    def __init__(self, service: str, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.name = f"{service} consume"
        self.labels = {"service": service}
        self.handling = telemetry.handling()

    def __call__(self, msg: Any, /, *, context: Any) -> Any:
        return _EventSpansScope(msg, context=context, owner=self)


class _EventSpansScope(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: Any, owner: EventSpans) -> None:
        super().__init__(msg, context=context)
        self.owner = owner

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        owner = self.owner
        raw = msg.raw_message
        records = raw if isinstance(raw, (list, tuple)) else [raw]
        refs = [] if not owner.telemetry.recording else [
            EventRef(
                (r.key or b"").decode(errors="replace"),
                header(r, "traceparent"),
                {"messaging.destination.name": r.topic, "messaging.kafka.destination.partition": r.partition,
                 "messaging.kafka.message.offset": r.offset},
            )
            for r in records
        ]
        started = time.perf_counter()
        with event_spans(owner.name, refs):
            result = await call_next(msg)
        # once per batch, not per record: a histogram record costs as much as a small handler
        owner.handling.record(time.perf_counter() - started, owner.labels)
        return result


class QuietBrokerTelemetry:
    """Broker middleware for a process that records no spans: FastStream's consume metrics
    (``messaging.process.duration`` / ``messaging.process.messages``: its instruments, names and
    labels) and ``tsunagu_event_handling_seconds{service}``, once per batch. FastStream's own consume
    scope would still start a span nobody records and read every record's baggage and traceparent for
    the links of that span, and EventSpans would look at every record: per-record work for nothing.
    Publishing (intake's ``broker.publish``, once per call) goes through FastStream's scope as before."""

    def __init__(self, telemetry: Telemetry) -> None:
        from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
        from faststream.opentelemetry.consts import ERROR_TYPE, MESSAGING_DESTINATION_PUBLISH_NAME

        self.faststream = KafkaTelemetryMiddleware(tracer_provider=telemetry.tracer_provider,
                                                   meter_provider=telemetry.meter_provider)
        self.observe_consume = self.faststream._metrics.observe_consume  # noqa: SLF001 - its very instruments
        self.error_type, self.destination = ERROR_TYPE, MESSAGING_DESTINATION_PUBLISH_NAME
        self.labels = {"service": telemetry.service}
        self.handling = telemetry.handling()

    def __call__(self, msg: Any, /, *, context: Any) -> Any:
        return _QuietScope(msg, context=context, owner=self)


class _QuietScope(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: Any, owner: QuietBrokerTelemetry) -> None:
        super().__init__(msg, context=context)
        self.owner = owner

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        owner = self.owner
        raw = msg.raw_message
        records = raw if isinstance(raw, (list, tuple)) else (raw,)
        if not records:
            return await call_next(msg)
        attributes = {"messaging.system": "kafka", owner.destination: records[0].topic}
        started = time.perf_counter()
        try:
            result = await call_next(msg)
        except Exception as err:
            attributes[owner.error_type] = type(err).__name__
            raise
        finally:
            elapsed = time.perf_counter() - started
            owner.observe_consume(attributes, elapsed, len(records))
        owner.handling.record(elapsed, owner.labels)
        return result

    async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
        return await self.owner.faststream(self.msg, context=self.context).publish_scope(call_next, cmd)


def broker_middlewares(telemetry: Telemetry) -> list[Any]:
    """FastStream's telemetry middleware and ours. With no span recorded here, one middleware that
    keeps only their metrics (``QuietBrokerTelemetry``): the same series, none of the per-record work."""
    from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

    if not telemetry.recording:
        return [QuietBrokerTelemetry(telemetry)]
    return [
        KafkaTelemetryMiddleware(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider),
        EventSpans(telemetry.service, telemetry),
    ]
