"""Run one service as its own process: ``python -m tsunagu.serve intake``."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import uvicorn

from tsunagu import telemetry
from tsunagu.logging import configure_logging
from tsunagu.settings import get_settings

# Services that exist so far; the local stack starts each as its own process.
SERVICES: dict[str, str] = {
    "intake": "services.intake.app:create_app",
    "routing": "services.routing.app:create_app",
    "referral": "services.referral.app:create_app",
    "metrics": "services.metrics.app:create_app",
}


def load_factory(service: str):
    module, _, attr = SERVICES[service].partition(":")
    return getattr(importlib.import_module(module), attr)


def scrape_dir(settings, service: str) -> Path | None:
    """With several workers, where they leave their metrics so that one scrape shows them all."""
    if settings.workers <= 1:
        return None
    return settings.home.expanduser().resolve() / "prometheus" / f"{service}-{settings.service_port(service)}"


def build_app():
    """uvicorn's factory, run in each worker process: the service comes from the environment."""
    service = os.environ["TSUNAGU_SERVICE"]
    settings = get_settings()
    configure_logging(settings, service)
    # after the fork: exporters' threads and the providers belong to this worker
    tel = telemetry.configure(service, settings.telemetry_dir, snapshot_dir=scrape_dir(settings, service))
    app = load_factory(service)(settings)
    # GET /metrics on every service in dev; in prod only metrics' own (the others push OTLP, and
    # intake's port faces partners)
    tel.attach(app, scrape_route=settings.env == "dev", lag_seconds=settings.consumer_lag_seconds)
    return app


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in SERVICES:
        raise SystemExit(f"usage: python -m tsunagu.serve {{{','.join(SERVICES)}}}")
    service = args[0]
    settings = get_settings()
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
        # a worker still importing on a busy machine is not hung: 5 s (the default) had workers killed
        # and respawned in a loop before they ever served
        timeout_worker_healthcheck=30,
    )


if __name__ == "__main__":
    main()
