"""referral's factory: settings, pool and migrations, the directory, the consumer, the deadline
scanner, the outbox publisher, the receivers' API and health.

On an empty database the first start loads the generated demo directory (every municipality of
the official list); `tsunagu directory load FILE` replaces it with a real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from services.referral import store
from services.referral.directory import generated
from services.referral.handlers import Referrals, Scanner, policy_of, register_consumer
from services.referral.http import router as referrals_router
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.health import health_router, service_checks
from tsunagu.http_errors import install_database_away
from tsunagu.kafka import make_broker
from tsunagu.outbox import running_outbox
from tsunagu.settings import Settings, SettingsError

log = structlog.get_logger()


def create_app(settings: Settings) -> FastAPI:
    if not settings.database_url:
        raise SettingsError("referral needs DATABASE_URL (`tsunagu up` sets it for the local stack)")
    referrals = Referrals(settings=settings, policy=policy_of(settings))
    broker = make_broker(settings, client_id="tsunagu-referral")
    register_consumer(broker, referrals)
    scanner = Scanner(referrals)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = referrals.pool = app.state.pool = await create_pool(settings.database_url)
        applied = await auth.migrate_schema(pool) + await store.migrate_schema(pool)
        if await store.directory_size(pool) == 0:
            loaded = await store.load_directory(pool, generated(), only_if_empty=True)
            if loaded:
                log.info("directory_loaded", organizations=loaded, source="generated demo directory")
        try:
            async with running_outbox(settings, store.SCHEMA, "referral") as referrals.outbox:
                await broker.start()
                scanner.start()
                log.info("referral_started", migrations=applied, clock=settings.referral_clock)
                try:
                    yield
                finally:
                    await scanner.stop()
                    await broker.stop()  # commits the consumer's offsets
        finally:
            await pool.close()
            log.info("referral_stopped")

    app = FastAPI(
        title="tsunagu referral",
        version="1",
        summary="Closed-loop handoffs to municipalities, self-reliance support centres and police.",
        lifespan=lifespan,
    )
    app.state.referrals = referrals

    async def deadlines() -> bool:
        return scanner.healthy

    app.include_router(health_router("referral", service_checks(referrals, broker) | {"deadlines": deadlines}))
    app.include_router(referrals_router)
    install_database_away(app)  # 503 + Retry-After + JSON while PostgreSQL is away
    return app
