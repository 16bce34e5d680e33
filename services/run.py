"""The services, and how one runs as its own process: ``python -m services intake``.

Each service's ``app.py`` holds its ``SPEC`` and its ``create_app(settings)``; the kit's runner
(``tsunagu.serve``) serves it. The local stack, the image and the manifests start a service with this
command; the tools and the deploy checks read ``APPS`` for the services' specs.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from fastapi import FastAPI

from services.intake import app as intake_app
from services.metrics import app as metrics_app
from services.referral import app as referral_app
from services.routing import app as routing_app
from tsunagu import serve
from tsunagu.settings import Settings, get_settings

APPS: dict[str, ModuleType] = {m.SPEC.name: m for m in (intake_app, routing_app, referral_app, metrics_app)}
SERVICES: tuple[str, ...] = tuple(APPS)


def settings_of(service: str) -> Settings:
    """The settings the service starts with: the shared ones and its own (its SPEC's class)."""
    return get_settings(APPS[service].SPEC.settings)


def build_app() -> FastAPI:
    """uvicorn's factory, run in each worker process: the service comes from the environment."""
    service = os.environ["TSUNAGU_SERVICE"]
    module = APPS[service]
    return serve.build(module.SPEC, module.create_app, settings_of(service))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in APPS:
        raise SystemExit(f"usage: python -m services {{{','.join(SERVICES)}}}")
    service = args[0]
    os.environ["TSUNAGU_SERVICE"] = service
    serve.run(APPS[service].SPEC, settings_of(service), "services.run:build_app")
