"""Run one service as its own process: ``python -m tsunagu.serve intake``.

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
import importlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tsunagu import telemetry
from tsunagu.logging import configure_logging
from tsunagu.settings import Settings, get_settings

# The services, by their specs' names; the local stack starts each as its own process. The kit never
# imports a service: the runner finds `services/<name>/app.py` by that name, and its SPEC must say so.
SERVICES: tuple[str, ...] = ("intake", "routing", "referral", "metrics")
APP_MODULE = "services.{name}.app"  # holds SPEC (a tsunagu.service.ServiceSpec) and create_app(settings)


def load_service(service: str):
    """The service's app module: its SPEC and its ``create_app(settings)``."""
    module = importlib.import_module(APP_MODULE.format(name=service))
    if module.SPEC.name != service:
        raise SystemExit(f"{module.__name__}: its SPEC is named {module.SPEC.name!r}, not {service!r}")
    return module


def settings_of(service: str) -> Settings:
    """The settings the service starts with: the shared ones and its own (its SPEC's class)."""
    return get_settings(load_service(service).SPEC.settings)


def scrape_dir(settings, service: str) -> Path | None:
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


def build_app():
    """uvicorn's factory, run in each worker process: the service comes from the environment."""
    service = os.environ["TSUNAGU_SERVICE"]
    settings = settings_of(service)
    configure_logging(settings, service)
    # after the fork: exporters' threads and the providers belong to this worker
    tel = telemetry.configure(service, settings.telemetry_dir, snapshot_dir=scrape_dir(settings, service))
    app = load_service(service).create_app(settings)
    # GET /metrics on every service in dev; in prod only metrics' own (the others push OTLP, and
    # intake's port faces partners)
    tel.attach(app, scrape_route=settings.env == "dev", lag_seconds=settings.consumer_lag_seconds)
    return app


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in SERVICES:
        raise SystemExit(f"usage: python -m tsunagu.serve {{{','.join(SERVICES)}}}")
    service = args[0]
    settings = settings_of(service)
    configure_logging(settings, service)
    os.environ["TSUNAGU_SERVICE"] = service
    snapshots = scrape_dir(settings, service)
    if snapshots is not None:  # a new start counts from zero, as a single process would
        shutil.rmtree(snapshots, ignore_errors=True)
    uvicorn.run(
        "tsunagu.serve:build_app",
        factory=True,
        # Several workers share the port; each runs the service's consumers in the same group
        # (partitions split between them) and its own outbox publisher.
        workers=settings.workers if settings.workers > 1 else None,
        host=settings.http_host,
        port=settings.service_port(service),
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


if __name__ == "__main__":
    main()
