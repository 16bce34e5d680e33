"""The services the tools start, check and describe, by their specs' names (each runs as
``python -m services.<name>``)."""

from __future__ import annotations

from types import ModuleType

from services.intake import app as intake_app
from services.metrics import app as metrics_app
from services.referral import app as referral_app
from services.routing import app as routing_app
from tsunagu.settings import Settings, get_settings

APPS: dict[str, ModuleType] = {m.SPEC.name: m for m in (intake_app, routing_app, referral_app, metrics_app)}
SERVICES: tuple[str, ...] = tuple(APPS)


def settings_of(service: str) -> Settings:
    """The settings the service starts with: the shared ones and its own (its SPEC's class)."""
    return get_settings(APPS[service].SPEC.settings)

