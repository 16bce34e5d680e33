"""structlog setup: JSON lines in deployments, a readable console in dev.

Every line carries ``service``, ``level``, ``timestamp`` and, inside a traced step, ``trace_id`` and
``span_id``; ``event_fields`` gives a line about one event its type, contact / referral id and the
ids of its contact's trace. Log lines carry ids and codes only — never a caller identifier, a name
or free text.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

from tsunagu.settings import Settings


def add_trace_ids(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``trace_id`` and ``span_id`` of the current OpenTelemetry span, to join a log line to its trace."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", f"{ctx.trace_id:032x}")
        event_dict.setdefault("span_id", f"{ctx.span_id:016x}")
    return event_dict


def event_fields(event_type: str, contact_id: str, referral_id: str | None = None) -> dict[str, str]:
    """Fields for a log line about one event: its type, ids, and the trace and span it belongs to in
    its contact's trace (the span handling it now, else the contact's root) — ids and codes only."""
    from tsunagu.telemetry import traceparent_for

    _, trace_id, span_id, _ = traceparent_for(contact_id).split("-")
    fields = {"event_type": event_type, "contact_id": contact_id, "trace_id": trace_id, "span_id": span_id}
    if referral_id is not None:
        fields["referral_id"] = referral_id
    return fields


def configure_logging(settings: Settings, service: str) -> None:
    level = getattr(logging, settings.log_level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_trace_ids,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Quiet the libraries: their messages can include payload fragments at debug level.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
