"""intake: its spec, and its factory (rules, limits, fair shares, the ingress consumer, routes)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import structlog
from fastapi import FastAPI

from services.intake import store
from services.intake.domain import Rules
from services.intake.handlers import Intake, register_consumer
from services.intake.http import DATABASE_AWAY, database_away
from services.intake.http import router as events_router
from services.intake.settings import IntakeSettings
from tsunagu import serve, topics
from tsunagu.fairness import FairGate
from tsunagu.ratelimit import RateLimiter
from tsunagu.service import AUTH, Hooks, Migrations, Outbox, ServiceSpec, service_app

log = structlog.get_logger()

SPEC = ServiceSpec(
    name="intake",
    summary="The only door into tsunagu: partners publish CloudEvents here.",
    group="intake",
    consumes=(topics.INGRESS, topics.ROUTING_DECISIONS),  # partners' events; routing's assignments (grants)
    produces=(topics.CONTACT_EVENTS, topics.CONSULTATION_EVENTS, topics.REJECTED),
    migrations=(AUTH, Migrations(store.SCHEMA, store.MIGRATIONS, inbox_outbox=True)),
    settings=IntakeSettings,
)


def wall_clock() -> datetime:
    return datetime.now(UTC)


def create_app(settings: IntakeSettings) -> FastAPI:
    rules = Rules(
        caller_secret=settings.caller_secret(),
        default_region=settings.default_region,
        max_event_bytes=settings.max_event_bytes,
        max_skew=timedelta(seconds=settings.intake_max_skew_s),
        horizon=timedelta(seconds=settings.intake_horizon_s),
    )
    limiter = RateLimiter(settings.intake_rate_per_s, settings.intake_burst, time.monotonic)
    backfill_limiter = RateLimiter(settings.intake_backfill_rate_per_s, settings.intake_burst, time.monotonic)
    gate = FairGate(settings.intake_in_flight, settings.intake_org_in_flight, settings.intake_org_queue,
                    settings.intake_queue_wait_s, settings.intake_give_way_s)
    intake = Intake(settings=settings, rules=rules, clock=wall_clock, limiter=limiter,
                    backfill_limiter=backfill_limiter, gate=gate)
    broker = SPEC.make_broker(settings)
    register_consumer(SPEC, broker, intake)

    async def prepare(pool: object) -> None:
        if settings.caller_key_secret is None:
            log.warning("dev_caller_key_secret", detail="TSUNAGU_CALLER_KEY_SECRET unset; using the dev secret")

    app = service_app(SPEC, settings, intake, broker, hooks=Hooks(prepare=prepare),
                      outbox=Outbox(give_way=gate.give_way))
    app.state.intake = intake
    app.include_router(events_router)
    for exc in DATABASE_AWAY:
        app.add_exception_handler(exc, database_away)
    return app


def build_app() -> FastAPI:
    """uvicorn's factory in each worker process (``python -m services.intake``)."""
    return serve.app_of(SPEC, create_app)
