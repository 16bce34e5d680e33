"""Where spans and metrics go besides the Prometheus scrape: JSON-lines files (``tsunagu up
--telemetry``, the tests) and OTLP when the standard ``OTEL_*`` variables ask for it.

The files are written by hand rather than with the SDK's ``ConsoleSpanExporter(out=...)``: several
workers append to one file, so each export is one ``O_APPEND`` write of whole lines, and the file is
created readable by its owner only (spans carry contact ids).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


def otlp_configured(signal: str) -> bool:
    """Whether the environment asks for OTLP export of ``signal`` ("traces", "metrics")."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return list(value)
    return value


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as one JSON line of the span files (what ``tsunagu trace`` reads)."""
    ctx = span.get_span_context()
    return {
        "service": span.resource.attributes.get("service.name"),
        "name": span.name,
        "kind": span.kind.name,
        # a finished span always has its context (the SDK types it as optional)
        "trace_id": f"{ctx.trace_id:032x}",  # type: ignore[union-attr]
        "span_id": f"{ctx.span_id:016x}",  # type: ignore[union-attr]
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
