"""structlog setup: JSON lines in deployments, a readable console in dev.

Log lines carry ids and codes only — never a caller identifier, a name or free text.
"""

from __future__ import annotations

import logging
import sys

import structlog

from tsunagu.settings import Settings


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
