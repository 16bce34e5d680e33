"""OpenTelemetry for every service, set up once: traces, metrics, and the ids the logs join them by.

**One contact is one trace.** A contact's events reach tsunagu in many requests, hours apart
(received, field selected, answered, consultation recorded, referral steps), so passing the
context along alone would give one trace per *event*. Instead every contact has a deterministic
trace: its trace id and a root span id are derived from the contact id (``contact_root``). Each
service starts one span per event it handles in that trace:

- intake: ``intake accept`` per accepted event, a child of the contact's root, linked to the HTTP
  request (or ingress batch) it came in;
- each outbox row stores the traceparent of the span that enqueued it (``traceparent_for``) and the
  publisher sends it as the Kafka ``traceparent`` header;
- every batch consumer (``EventSpans`` middleware) starts ``<service> consume`` per record, a child
  of that header's span (or of the contact's root when a record has none), linked to FastStream's
  batch span. Decisions derived while handling a record carry that record's span on.

So intake → routing → metrics, and the consultation → referral → metrics, are parent-linked chains
under one root per contact, whatever the batching. FastStream's ``KafkaTelemetryMiddleware`` adds
its per-batch ``process`` spans (linked to the records' spans) and per-handler metrics; HTTP gets the
ASGI instrumentation (health endpoints excluded, no query strings). A process that records no spans
keeps only the metrics, once per batch (``QuietBrokerTelemetry``): nothing is done per record.

Export: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the per-signal variables) is set — the
standard ``OTEL_*`` variables configure exporter, sampler and resource; JSON lines into
``TSUNAGU_TELEMETRY_DIR`` (``tsunagu up --telemetry``); otherwise spans are not recorded, but
logs still carry the (deterministic) trace ids. Attributes carry ids and codes only — never a
caller identifier, a name, free text, a query string or a body.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import hashlib
import json
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faststream import BaseMiddleware
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from prometheus_client import CollectorRegistry, generate_latest

SCOPE = "tsunagu"
HEALTH_URLS = r"/health/,/metrics(\?|$)"  # excluded from HTTP tracing: probes and scrapes every few seconds

WAIT_BUCKETS = (0, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)  # callers' waits, seconds
HANDLING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
VIEWS = [
    View(instrument_name="tsunagu_*_wait_seconds", aggregation=ExplicitBucketHistogramAggregation(WAIT_BUCKETS)),
    View(instrument_name="tsunagu_event_handling_seconds",
         aggregation=ExplicitBucketHistogramAggregation(HANDLING_BUCKETS)),
]

# --- trace context ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=65_536)  # a contact's events come close together
def contact_root(key: str) -> SpanContext:
    """The root of contact ``key``'s trace: the same ids in every service, process and restart."""
    digest = hashlib.sha256(b"tsunagu.contact\n" + key.encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def format_traceparent(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_traceparent(value: str | bytes | None) -> SpanContext | None:
    """A W3C ``traceparent`` as a remote span context; None when absent or malformed."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2 or parts[0] == "ff":
        return None
    try:
        ctx = SpanContext(int(parts[1], 16), int(parts[2], 16), is_remote=True,
                          trace_flags=TraceFlags(int(parts[3], 16) & 0xFF))
    except ValueError:
        return None
    return ctx if ctx.is_valid else None


def current_of(span: Span) -> str | None:
    """``span``'s traceparent (None if it has no valid context)."""
    ctx = span.get_span_context()
    return format_traceparent(ctx) if ctx.is_valid else None


def current_traceparent() -> str | None:
    return current_of(trace.get_current_span())


def header(record: Any, name: str) -> bytes | None:
    for k, v in getattr(record, "headers", None) or ():
        if k == name:
            return v
    return None


# --- one span per event -------------------------------------------------------------------------

# key (contact id, or the record key) -> the span of the event being handled for it, in this task
_ACTIVE: contextvars.ContextVar[dict[str, Span] | None] = contextvars.ContextVar("tsunagu_event_spans", default=None)


@dataclass(frozen=True)
class EventRef:
    """What an event span needs: the key its contact trace is derived from, the traceparent it
    arrived with (if any) and a few attributes (ids and codes only)."""

    key: str
    upstream: str | bytes | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


def traceparent_for(key: str) -> str:
    """The traceparent for an outgoing record about ``key`` (a contact id, or the key of the record
    being handled): the span of the event being handled for it, else the contact's root."""
    active = _ACTIVE.get()
    span = active.get(key) if active else None
    if span is not None:
        ctx = span.get_span_context()
        if ctx.is_valid:
            return format_traceparent(ctx)
    return format_traceparent(get().contact_root(key))


def traceparent_about(contact_id: str, key: str) -> str | None:
    """For an outgoing record keyed ``key`` about contact ``contact_id``: ``traceparent_for`` the
    contact — or None when nothing is recorded here and the key is the contact (the consumer derives
    the same root from the key; saves the work on the hot path)."""
    if key == contact_id and not get().recording:
        return None
    return traceparent_for(contact_id)


class _EventSpan(Span):
    """A recorded span of one event in a step done for a whole batch. The SDK's spans cost ~30 µs
    each to start and end (locks, attribute and link bounding, processor hooks); an event's span has
    ids, a parent, a few attributes, one link and a status, and is handed to the span processor as a
    finished ``ReadableSpan`` when it ends — as ``emit_contact_root`` does for the root."""

    def __init__(self, tel: Telemetry, name: str, context: SpanContext, parent: SpanContext, kind: SpanKind,
                 links: Sequence[Link], attributes: dict[str, Any], start: int) -> None:
        self._tel, self._name, self._context, self._parent = tel, name, context, parent
        self._kind, self._links, self._attributes, self._start = kind, links, dict(attributes), start
        self._status = Status(StatusCode.UNSET)
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended:
            self._attributes[key] = value

    def set_attributes(self, attributes: Any) -> None:
        if not self._ended:
            self._attributes.update(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        pass  # event spans carry no span events

    def update_name(self, name: str) -> None:
        self._name = name

    def set_status(self, status: Any, description: str | None = None) -> None:
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: int | None = None,
                         escaped: bool = False) -> None:
        self.set_status(Status(StatusCode.ERROR, type(exception).__name__))

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        tel = self._tel
        tel.processor.on_end(ReadableSpan(
            self._name, context=self._context, parent=self._parent, resource=tel.resource,
            attributes=self._attributes, links=self._links, kind=self._kind, status=self._status,
            start_time=self._start, end_time=end_time or time.time_ns(), instrumentation_scope=_SCOPE,
        ))


_SCOPE = InstrumentationScope(SCOPE)


@contextmanager
def event_spans(name: str, refs: Sequence[EventRef], *, kind: SpanKind = SpanKind.CONSUMER) -> Iterator[list[Span]]:
    """One span per event around a step done for a whole batch; ``traceparent_for(ref.key)`` names
    them meanwhile. Each span's parent is the traceparent the event arrived with, or its contact's
    root; each is linked to the current span (the HTTP request or FastStream's batch span). The
    configured sampler decides per event, as for any span."""
    tel = get()
    if not tel.recording:
        # Nothing is exported: no spans (they would cost CPU on the hot path); records carry the
        # contact's root on, and log lines its trace id.
        yield [trace.INVALID_SPAN] * len(refs)
        return
    provider = tel.tracer_provider
    sampler, new_span_id = provider.sampler, provider.id_generator.generate_span_id
    here = trace.get_current_span().get_span_context()
    links = (Link(here),) if here.is_valid else ()
    start = time.time_ns()
    spans: list[Span] = []
    active = dict(_ACTIVE.get() or {})
    for ref in refs:
        parent = parse_traceparent(ref.upstream) or tel.contact_root(ref.key)
        decision = sampler.should_sample(trace.set_span_in_context(NonRecordingSpan(parent), Context()),
                                         parent.trace_id, name, kind, ref.attributes, links)
        sampled = decision.decision.is_sampled()
        context = SpanContext(parent.trace_id, new_span_id(), is_remote=False,
                              trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0),
                              trace_state=decision.trace_state or parent.trace_state)
        span: Span = (_EventSpan(tel, name, context, parent, kind, links, ref.attributes, start) if sampled
                      else NonRecordingSpan(context))
        spans.append(span)
        active[ref.key] = span
    token = _ACTIVE.set(active)
    try:
        yield spans
    except BaseException as err:
        for span in spans:
            span.set_status(Status(StatusCode.ERROR, type(err).__name__))
        raise
    finally:
        _ACTIVE.reset(token)
        for span in spans:
            span.end()


def emit_contact_root(key: str, at_ns: int | None = None) -> None:
    """Record the contact's root span itself (intake calls this once per new contact), so the trace
    has a root in the backend; its ids are ``contact_root``'s."""
    tel = get()
    root = tel.contact_root(key)
    if tel.processor is None or not root.trace_flags.sampled:
        return
    now = at_ns or time.time_ns()
    tel.processor.on_end(ReadableSpan(
        "contact", context=SpanContext(root.trace_id, root.span_id, False, root.trace_flags), parent=None,
        resource=tel.resource,
        attributes={"tsunagu.contact_id": key}, kind=SpanKind.INTERNAL, start_time=now, end_time=now,
        instrumentation_scope=InstrumentationScope(SCOPE),
    ))


# --- FastStream: per-record spans and per-handler metrics --------------------------------------


class EventSpans:
    """Broker middleware: a ``<service> consume`` span per Kafka record around the handler (see the
    module docstring), and ``tsunagu_event_handling_seconds{service}`` per batch. Registered after
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


# --- providers, exporters ----------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return list(value)
    return value


def span_record(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    return {
        "service": span.resource.attributes.get("service.name"),
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: _jsonable(v) for k, v in (span.attributes or {}).items()},
        "links": [{"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
                  for link in span.links],
    }


class _Lines:
    """Append-only JSON lines, one ``write`` per line (several workers may share the file)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows).encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)


class FileSpanExporter(SpanExporter):
    """Spans as JSON lines (``span_record``), for ``tsunagu up --telemetry`` and the tests."""

    def __init__(self, path: Path) -> None:
        self._out = _Lines(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._out.write([span_record(s) for s in spans])
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class FileMetricExporter(MetricExporter):
    """Metric snapshots as JSON lines (OTLP's JSON shape, one export per line)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._out = _Lines(path)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self._out.write([json.loads(metrics_data.to_json(indent=None))])
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def otlp_configured(signal: str) -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"))


@dataclass
class Telemetry:
    service: str
    resource: Resource
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    registry: CollectorRegistry  # the Prometheus scrape's view of this process's metrics
    directory: Path | None = None
    processor: Any = None  # where hand-made spans go (None: spans are not recorded)

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer(SCOPE)

    @property
    def meter(self) -> otel_metrics.Meter:
        return self.meter_provider.get_meter(SCOPE)

    snapshot_dir: Path | None = None  # with several workers: where they leave their metrics for the scrape
    brokers: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)  # this process's, for consumer lag
    lag: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group, topic, partition) -> records
    _instruments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meter.create_observable_gauge(
            "tsunagu_consumer_lag", [self._observe_lag], unit="{record}",
            description="records not yet consumed, per consumer group, topic and partition this process reads")

    @property
    def recording(self) -> bool:
        return self.processor is not None

    def contact_root(self, key: str) -> SpanContext:
        """``contact_root`` flagged as sampled or not by the configured sampler: its trace id is
        deterministic, so a ratio sampler keeps or drops a contact's whole trace in every service."""
        root = contact_root(key)
        sampler = getattr(self.tracer_provider, "sampler", None)
        if sampler is None:
            return root
        decision = sampler.should_sample(Context(), root.trace_id, "contact").decision
        if decision.is_sampled():
            return root
        return SpanContext(root.trace_id, root.span_id, is_remote=True, trace_flags=TraceFlags(0))

    # business and pipeline instruments, created once per process

    def counter(self, name: str, description: str, unit: str = "") -> otel_metrics.Counter:
        if name not in self._instruments:
            self._instruments[name] = self.meter.create_counter(name, unit=unit, description=description)
        return self._instruments[name]

    def histogram(self, name: str, description: str, unit: str = "s") -> otel_metrics.Histogram:
        if name not in self._instruments:
            self._instruments[name] = self.meter.create_histogram(name, unit=unit, description=description)
        return self._instruments[name]

    def handling(self) -> otel_metrics.Histogram:
        return self.histogram("tsunagu_event_handling_seconds",
                              "from a consumed batch reaching the handler to its commit (each record in it waited so)")

    def set_aside(self) -> otel_metrics.Counter:
        return self.counter("tsunagu_events_set_aside",
                            "records set aside as not canonical events (never retried)", unit="{record}")

    def _observe_lag(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(n, {"group": g, "topic": t, "partition": p}) for (g, t, p), n in list(self.lag.items())]

    async def refresh_lag(self) -> None:
        """Lag of every partition this process's consumers hold: the partition's end offset minus the
        offset the group committed — what the handler has processed (PERFORMANCE.md: measure from what
        consumers processed). Not the fetch position: a consumer fetches a whole backlog into memory
        long before it has handled it. Both asked of the broker, so a consumer that was stopped shows
        its backlog at the first refresh after it resumes, before its next fetch."""
        lag: dict[tuple[str, str, int], int] = {}
        for broker in list(self.brokers):
            for sub in getattr(broker, "subscribers", []):
                consumer = getattr(sub, "consumer", None)
                group = getattr(sub, "group_id", None)
                if consumer is None or not group:
                    continue
                tps = list(consumer.assignment())
                if not tps:
                    continue
                try:
                    ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout=2.0)
                except Exception:  # noqa: BLE001 - a rebalance or a broker away: next round
                    continue
                for tp in tps:
                    try:
                        done = await asyncio.wait_for(consumer.committed(tp), timeout=1.0)
                        if done is None:  # nothing committed yet: what it has fetched so far
                            done = await asyncio.wait_for(consumer.position(tp), timeout=1.0)
                    except Exception:  # noqa: BLE001 - a rebalance moved it; next round
                        continue
                    if tp in ends:
                        lag[(group, tp.topic, tp.partition)] = max(ends[tp] - done, 0)
        self.lag = lag

    async def watch_lag(self, every: float = 5.0) -> None:
        while True:
            try:
                await self.refresh_lag()
                self.write_snapshot()
            except Exception:  # noqa: BLE001 - a gauge that lags must never stop a service
                pass
            await asyncio.sleep(every)

    # Several uvicorn workers share one port, and a scrape reaches one of them. Each worker writes its
    # metrics to snapshot_dir every few seconds; the one scraped sums the others' counters and
    # histograms with its own (gauges: the largest) — Prometheus' multiprocess mode, for OTel readers.

    def write_snapshot(self) -> None:
        if self.snapshot_dir is None:
            return
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.snapshot_dir / f"{os.getpid()}.prom"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(generate_latest(self.registry))
        tmp.replace(path)

    def scrape(self) -> bytes:
        """This process's metrics in the Prometheus text format; with sibling workers, all of theirs."""
        own = generate_latest(self.registry)
        if self.snapshot_dir is None or not self.snapshot_dir.is_dir():
            return own
        texts = [(own.decode(), True)]
        for path in self.snapshot_dir.glob("*.prom"):
            pid = int(path.stem) if path.stem.isdigit() else 0
            if pid == os.getpid():
                continue
            with suppress(OSError):
                # a worker that exited still counts: its counters stay in the sum (else they would
                # drop and read as a reset), its gauges go
                texts.append((path.read_text(), _alive(pid)))
        return merge_prometheus(texts) if len(texts) > 1 else own

    def broker_middlewares(self) -> list[Any]:
        """FastStream's telemetry middleware and ours. With no span recorded here, one middleware that
        keeps only their metrics (``QuietBrokerTelemetry``): the same series, none of the per-record work."""
        from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

        if not self.recording:
            return [QuietBrokerTelemetry(self)]
        return [
            KafkaTelemetryMiddleware(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider),
            EventSpans(self.service, self),
        ]

    def instrument_app(self, app: Any) -> None:
        """HTTP server spans for a FastAPI app: health probes excluded, no query string, no body."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider,
            excluded_urls=HEALTH_URLS, exclude_spans=["receive", "send"], server_request_hook=_without_query,
        )

    def attach(self, app: Any, *, scrape_route: bool = False, lag_seconds: float = 5.0) -> None:
        """Instrument a service's app, watch its consumers' lag while it runs and, with
        ``scrape_route``, give it ``GET /metrics`` if it has none."""
        from contextlib import asynccontextmanager

        self.instrument_app(app)
        if scrape_route and not any(getattr(route, "path", None) == "/metrics" for route in app.router.routes):
            from fastapi.responses import Response

            async def scrape() -> Response:
                return Response(self.scrape(), media_type="text/plain; version=0.0.4; charset=utf-8")

            app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(a: Any) -> Any:
            try:
                async with inner(a) as state:
                    task = asyncio.create_task(self.watch_lag(lag_seconds), name="consumer-lag")
                    try:
                        yield state
                    finally:
                        task.cancel()
                        with suppress(asyncio.CancelledError):
                            await task
                        with suppress(Exception):  # the last figures, while the consumers still run
                            await asyncio.wait_for(self.refresh_lag(), timeout=5)
            finally:
                # here, not only at exit: uvicorn re-raises SIGTERM once it has shut down, and a
                # process ended by a signal runs no atexit handlers
                await asyncio.to_thread(self.flush)

        app.router.lifespan_context = lifespan

    def flush(self) -> None:
        """Export what is pending now (spans, a last metrics snapshot)."""
        for provider in (self.tracer_provider, self.meter_provider):
            with suppress(Exception):
                provider.force_flush(5_000)  # bounded: a collector that is away must not hold up shutdown
        with suppress(Exception):
            self.write_snapshot()

    def shutdown(self) -> None:
        with suppress(Exception):
            self.write_snapshot()  # the last word of this worker's counters, for its siblings' scrape
        for provider in (self.tracer_provider, self.meter_provider):
            try:
                provider.shutdown()
            except Exception:  # noqa: BLE001 - exiting anyway; an exporter away must not block it
                pass


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge_prometheus(texts: Sequence[tuple[str, bool]]) -> bytes:
    """Several processes' Prometheus texts (text, process alive) as one: counters, histograms and
    summaries summed per series; gauges the largest of the live processes' (the facts gauges are the
    same in every process)."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    for text, alive in texts:
        for fam in text_string_to_metric_families(text):
            summed = fam.type in ("counter", "histogram", "summary")
            if not (summed or alive):
                continue
            families.setdefault(fam.name, Metric(fam.name, fam.documentation, fam.type, fam.unit))
            for sample in fam.samples:
                if sample.name.endswith("_created"):
                    continue
                key = (fam.name, sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    values[key] = sample.value
                elif summed:
                    values[key] += sample.value
                else:
                    values[key] = max(values[key], sample.value)
    for (fam_name, sample_name, labels), value in values.items():
        families[fam_name].add_sample(sample_name, dict(labels), value)

    class _Merged:
        def collect(self) -> Any:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())  # type: ignore[arg-type]
    return generate_latest(registry)


_DIGIT_RUN = re.compile(r"\d[\d\-\s.()]{5,}\d")  # 7+ digits, maybe separated: could be a phone number


def _without_query(span: Span, scope: dict[str, Any]) -> None:
    # The ASGI instrumentation puts the raw URL into http.url / http.target / url.query. A query, or a
    # path that matched no route, may hold whatever a client typed: keep scheme, host and path, and
    # blank long digit runs in the path (the route template is in http.route anyway).
    if not span.is_recording():
        return
    attributes = getattr(span, "_attributes", None)
    if attributes is None:
        return
    for key in ("http.url", "http.target", "url.path"):
        value = attributes.get(key)
        if isinstance(value, str):
            clean = _DIGIT_RUN.sub("[digits]", value.split("?", 1)[0])
            if clean != value:
                span.set_attribute(key, clean)
    if "url.query" in attributes:
        span.set_attribute("url.query", "")


def build(service: str, directory: Path | None = None, *, span_exporter: SpanExporter | None = None,
          metric_readers: Sequence[MetricReader] = (), span_delay_ms: float = 500,
          snapshot_dir: Path | None = None) -> Telemetry:
    """Providers for ``service``: OTLP per the environment, files in ``directory``, and whatever a
    test adds (``span_exporter``, ``metric_readers``)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    resource = Resource.create({
        "service.name": f"tsunagu-{service}",
        # every process its own series: several workers or pods must not overwrite each other's counters
        "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
    })
    exporters: list[SpanExporter] = []
    if otlp_configured("traces"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if directory is not None:
        exporters.append(FileSpanExporter(directory / f"{service}-spans.jsonl"))
    if span_exporter is not None:
        exporters.append(span_exporter)
    # Nothing to export: do not record (spans cost CPU), but keep the ids, which the logs carry.
    tracer_provider = TracerProvider(resource=resource, **({} if exporters else {"sampler": ALWAYS_OFF}))
    processor = None
    for exporter in exporters:
        processor = BatchSpanProcessor(exporter, schedule_delay_millis=span_delay_ms)
        tracer_provider.add_span_processor(processor)
    if len(exporters) > 1:
        processor = tracer_provider._active_span_processor  # noqa: SLF001 - all of them, for hand-made spans

    registry = CollectorRegistry()
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry), *metric_readers]
    if otlp_configured("metrics"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if directory is not None:
        readers.append(PeriodicExportingMetricReader(FileMetricExporter(directory / f"{service}-metrics.jsonl"),
                                                     export_interval_millis=5_000))
    meter_provider = MeterProvider(metric_readers=readers, resource=resource, views=VIEWS)
    return Telemetry(service, resource, tracer_provider, meter_provider, registry, directory, processor, snapshot_dir)


_current: Telemetry | None = None
_lock = threading.Lock()


def configure(service: str, directory: Path | None = None, snapshot_dir: Path | None = None) -> Telemetry:
    """Set up this process's telemetry once (each uvicorn worker calls it after the fork) and make
    it the global OpenTelemetry providers, which FastStream and the instrumentations use."""
    global _current
    with _lock:
        if _current is not None and _current.service == service:
            return _current
        _current = build(service, directory, snapshot_dir=snapshot_dir)
        trace.set_tracer_provider(_current.tracer_provider)
        otel_metrics.set_meter_provider(_current.meter_provider)
        atexit.register(_current.shutdown)
        return _current


def get() -> Telemetry:
    """This process's telemetry; a quiet default (nothing recorded or exported) if none was set up."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = build("unconfigured")
    return _current


def use(telemetry: Telemetry | None) -> None:
    """For tests: make ``telemetry`` this process's telemetry (None: back to the quiet default)."""
    global _current
    _current = telemetry
