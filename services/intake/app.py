"""intake's factory: settings, broker, pool, the outbox publisher, routes and health."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import structlog
from fastapi import FastAPI

from services.intake import store
from services.intake.domain import Rules
from services.intake.handlers import Intake, register_ingress
from services.intake.http import DATABASE_AWAY, database_away
from services.intake.http import router as events_router
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.fairness import FairGate
from tsunagu.health import health_router, service_checks
from tsunagu.kafka import make_broker
from tsunagu.outbox import running_outbox
from tsunagu.ratelimit import RateLimiter
from tsunagu.settings import Settings, SettingsError

log = structlog.get_logger()


def wall_clock() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings) -> FastAPI:
    if not settings.database_url:
        raise SettingsError("intake needs DATABASE_URL (`tsunagu up` sets it for the local stack)")
    rules = Rules(
        caller_secret=settings.caller_secret(),
        default_region=settings.default_region,
        max_event_bytes=settings.max_event_bytes,
        max_skew=timedelta(seconds=settings.intake_max_skew_s),
        horizon=timedelta(seconds=settings.intake_horizon_s),
    )
    limiter = RateLimiter(settings.intake_rate_per_s, settings.intake_burst, time.monotonic)
    intake = Intake(settings=settings, rules=rules, clock=wall_clock, limiter=limiter)
    broker = make_broker(settings, client_id="tsunagu-intake")
    register_ingress(broker, intake)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.caller_key_secret is None:
            log.warning("dev_caller_key_secret", detail="TSUNAGU_CALLER_KEY_SECRET unset; using the dev secret")
        intake.pool = app.state.pool = await create_pool(settings.database_url)
        applied = await auth.migrate_schema(intake.pool) + await store.migrate_schema(intake.pool)
        try:
            async with running_outbox(settings, store.SCHEMA, "intake") as intake.outbox:
                await broker.start()
                log.info("intake_started", migrations=applied)
                try:
                    yield
                finally:
                    await broker.stop()  # commits the ingress consumer's offsets; the outbox publishes to the end
        finally:
            await intake.pool.close()
            log.info("intake_stopped")

    app = FastAPI(
        title="tsunagu intake",
        version="1",
        summary="The only door into tsunagu: partners publish CloudEvents here.",
        lifespan=lifespan,
    )
    app.state.intake = intake
    app.state.fair_gate = FairGate(settings.intake_in_flight, settings.intake_org_in_flight,
                                   settings.intake_org_queue, settings.intake_queue_wait_s)

    app.include_router(health_router("intake", service_checks(intake, broker)))
    app.include_router(events_router)
    for exc in DATABASE_AWAY:
        app.add_exception_handler(exc, database_away)
    return app
