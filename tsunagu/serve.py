"""How a service runs as its own process: ``python -m services.intake`` runs the service's
``__main__``, which calls ``main`` with its spec; uvicorn then calls the service's ``build_app`` in
each worker, which calls ``app_of``. The kit never imports a service or loads one by name: each
service hands its own spec and factory over.

uvicorn serves each service with ``GuardedHttpToolsProtocol``: its own HTTP/1.1 protocol (httptools)
plus two bounds it lacks against connections that hold on without finishing a request (slowloris):

- **a request read timeout** (``TSUNAGU_HTTP_REQUEST_READ_SECONDS``): from the moment a connection
  is made — or, on a kept-alive connection, from the first byte after the previous response — the
  whole request (line, headers and body) must arrive within it. Otherwise the connection is closed
  (``408 Request Timeout`` first when nothing of it was answered yet). The time the service takes to
  answer is not counted.
- **a connection cap** (``TSUNAGU_HTTP_MAX_CONNECTIONS``, also uvicorn's ``limit_concurrency``): a
  connection beyond it is closed at once, and at it requests are answered 503.

Between requests uvicorn's keep-alive timeout (``TSUNAGU_HTTP_KEEP_ALIVE_SECONDS``) closes an idle
connection.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tsunagu import telemetry
from tsunagu.logging import configure_logging
from tsunagu.service import ServiceSpec
from tsunagu.settings import Settings, get_settings


def scrape_dir(settings: Settings, service: str) -> Path | None:
    """With several workers, where they leave their metrics so that one scrape shows them all."""
    if settings.workers <= 1:
        return None
    return settings.home.expanduser().resolve() / "prometheus" / f"{service}-{settings.service_port(service)}"


@functools.cache
def _read_timeout() -> float:
    return get_settings().http_request_read_seconds


_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: 24\r\nconnection: close\r\n\r\nrequest not sent in time")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the time a request may take to arrive and on the
    number of connections held (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(_read_timeout(), self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.limit_concurrency is not None and len(self.connections) > self.limit_concurrency:
            transport.close()  # over the cap: not held at all
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if not self._answering():  # the first bytes of the next request (even blank lines)
            self._arm()
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # a pipelined request, begun while the previous one is answered

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if not self._answering():
            self.transport.write(_REQUEST_TIMEOUT)
        # else the request's headers came but not its body: the handler waiting for it sees a disconnect
        self.transport.close()


def build(spec: ServiceSpec, create_app: Callable[[Any], FastAPI], settings: Settings) -> FastAPI:
    """A service's app, in the worker process that serves it (uvicorn's factory calls this)."""
    configure_logging(settings, spec.name)
    # after the fork: exporters' threads and the providers belong to this worker
    tel = telemetry.configure(spec.name, settings.telemetry_dir, snapshot_dir=scrape_dir(settings, spec.name))
    app = create_app(settings)
    # GET /metrics on every service in dev; in prod only metrics' own (the others push OTLP, and
    # intake's port faces partners)
    tel.attach(app, scrape_route=settings.env == "dev", lag_seconds=settings.consumer_lag_seconds)
    return app


def app_of(spec: ServiceSpec, create_app: Callable[[Any], FastAPI]) -> FastAPI:
    """``build`` with the settings the spec names (the shared ones and the service's own)."""
    return build(spec, create_app, get_settings(spec.settings))


def main(spec: ServiceSpec, factory: str) -> None:
    """A service's ``__main__``: serve it with the settings its spec names."""
    run(spec, get_settings(spec.settings), factory)


def run(spec: ServiceSpec, settings: Settings, factory: str) -> None:
    """Serve the service until it is stopped. ``factory``: the import string of a function that calls
    ``build`` (uvicorn imports it in every worker)."""
    configure_logging(settings, spec.name)
    snapshots = scrape_dir(settings, spec.name)
    if snapshots is not None:  # a new start counts from zero, as a single process would
        shutil.rmtree(snapshots, ignore_errors=True)
    uvicorn.run(
        factory,
        factory=True,
        # Several workers share the port; each runs the service's consumers in the same group
        # (partitions split between them) and its own outbox publisher.
        workers=settings.workers if settings.workers > 1 else None,
        host=settings.http_host,
        port=settings.service_port(spec.name),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # slow or stuck clients (module docstring)
        http="tsunagu.serve:GuardedHttpToolsProtocol",
        timeout_keep_alive=settings.http_keep_alive_seconds,
        limit_concurrency=settings.http_max_connections,
        # a worker still importing on a busy machine is not hung: 5 s (the default) had workers killed
        # and respawned in a loop before they ever served
        timeout_worker_healthcheck=30,
    )
