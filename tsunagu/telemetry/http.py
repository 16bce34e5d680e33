"""HTTP: server spans from the FastAPI/ASGI instrumentation (health probes and scrapes excluded, no
query string, no body), ``GET /metrics``, and the consumer-lag watch and last flush in the lifespan."""

from __future__ import annotations

import asyncio
import re
from contextlib import asynccontextmanager, suppress
from typing import Any

from opentelemetry.trace import Span

from tsunagu.telemetry.runtime import Telemetry

HEALTH_URLS = r"/health/,/metrics(\?|$)"  # excluded from HTTP tracing: probes and scrapes every few seconds
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

_DIGIT_RUN = re.compile(r"\d[\d\-\s.()]{5,}\d")  # 7+ digits, maybe separated: could be a phone number


def _without_query(span: Span, scope: dict[str, Any]) -> None:
    # The ASGI instrumentation puts the raw URL into http.url / http.target / url.query (its own
    # redact_url only masks a few cloud signing parameters). A query, or a path that matched no route,
    # may hold whatever a client typed: keep scheme, host and path, and blank long digit runs in the
    # path (the route template is in http.route anyway).
    if not span.is_recording():
        return
    attributes = getattr(span, "attributes", None)
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


def instrument_app(telemetry: Telemetry, app: Any) -> None:
    """HTTP server spans for a FastAPI app: health probes excluded, no query string, no body."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
        excluded_urls=HEALTH_URLS, exclude_spans=["receive", "send"], server_request_hook=_without_query,
    )


def attach(telemetry: Telemetry, app: Any, *, scrape_route: bool = False, lag_seconds: float = 5.0) -> None:
    """Instrument a service's app, watch its consumers' lag while it runs and, with
    ``scrape_route``, give it ``GET /metrics`` if it has none."""
    instrument_app(telemetry, app)
    if scrape_route and not any(getattr(route, "path", None) == "/metrics" for route in app.router.routes):
        from fastapi.responses import Response

        async def scrape() -> Response:
            return Response(telemetry.scrape(), media_type=PROMETHEUS_TEXT)

        app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> Any:
        try:
            async with inner(a) as state:
                task = asyncio.create_task(telemetry.watch_lag(lag_seconds), name="consumer-lag")
                try:
                    yield state
                finally:
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
                    with suppress(Exception):  # the last figures, while the consumers still run
                        await asyncio.wait_for(telemetry.refresh_lag(), timeout=5)
        finally:
            # here, not only at exit: uvicorn re-raises SIGTERM once it has shut down, and a
            # process ended by a signal runs no atexit handlers
            await asyncio.to_thread(telemetry.flush)

    app.router.lifespan_context = lifespan
