"""Run one service as its own process: ``python -m tsunagu.serve intake``."""

from __future__ import annotations

import importlib
import os
import sys

import uvicorn

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


def build_app():
    """uvicorn's factory, run in each worker process: the service comes from the environment."""
    service = os.environ["TSUNAGU_SERVICE"]
    settings = get_settings()
    configure_logging(settings, service)
    return load_factory(service)(settings)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in SERVICES:
        raise SystemExit(f"usage: python -m tsunagu.serve {{{','.join(SERVICES)}}}")
    service = args[0]
    settings = get_settings()
    configure_logging(settings, service)
    os.environ["TSUNAGU_SERVICE"] = service
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
    )


if __name__ == "__main__":
    main()
