"""Setting up a process's telemetry: the providers and exporters (``build``), and the one
``Telemetry`` of the process (``configure`` once per worker, ``get`` everywhere, ``use`` in tests)."""

from __future__ import annotations

import atexit
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry

from tsunagu.telemetry.exporters import FileMetricExporter, FileSpanExporter, otlp_configured
from tsunagu.telemetry.runtime import Telemetry

WAIT_BUCKETS = (0, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)  # callers' waits, seconds
HANDLING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
VIEWS = [
    View(instrument_name="tsunagu_*_wait_seconds", aggregation=ExplicitBucketHistogramAggregation(WAIT_BUCKETS)),
    View(instrument_name="tsunagu_event_handling_seconds",
         aggregation=ExplicitBucketHistogramAggregation(HANDLING_BUCKETS)),
]


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
    every = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated
    no_sampling: dict[str, Any] = {} if exporters else {"sampler": ALWAYS_OFF}
    tracer_provider = TracerProvider(resource=resource, active_span_processor=every, **no_sampling)
    processor: SpanProcessor | None = None  # where hand-made spans go: the one exporter's, or all of them
    for exporter in exporters:
        processor = BatchSpanProcessor(exporter, schedule_delay_millis=span_delay_ms)
        tracer_provider.add_span_processor(processor)
    if len(exporters) > 1:
        processor = every

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
