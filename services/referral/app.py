"""referral: its spec, and its factory (the directory, the consumer, the deadline scanner, the
outbox, the receivers' API).

On an empty database the first start loads the generated demo directory (every municipality of
the official list); `tsunagu directory load FILE` replaces it with a real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import structlog
from fastapi import FastAPI

from services.referral import store
from services.referral.directory import generated
from services.referral.handlers import Referrals, Scanner, policy_of, register_consumer
from services.referral.http import router as referrals_router
from services.referral.settings import ReferralSettings
from tsunagu import serve, topics
from tsunagu.http_errors import install_database_away
from tsunagu.service import AUTH, Hooks, Migrations, Outbox, ServiceSpec, service_app

log = structlog.get_logger()

SPEC = ServiceSpec(
    name="referral",
    summary="Closed-loop handoffs to municipalities, self-reliance support centres and police.",
    group="referral",
    consumes=(topics.CONSULTATION_EVENTS,),
    produces=(topics.REFERRAL_EVENTS, topics.REJECTED),
    migrations=(AUTH, Migrations(store.SCHEMA, store.MIGRATIONS, inbox_outbox=True)),
    settings=ReferralSettings,
)


def create_app(settings: ReferralSettings) -> FastAPI:
    referrals = Referrals(settings=settings, policy=policy_of(settings))
    broker = SPEC.make_broker(settings)
    register_consumer(SPEC, broker, referrals)
    scanner = Scanner(referrals)

    async def prepare(pool: asyncpg.Pool) -> dict[str, object]:
        if await store.directory_size(pool) == 0:
            loaded = await store.load_directory(pool, generated(), only_if_empty=True)
            if loaded:
                log.info("directory_loaded", organizations=loaded, source="generated demo directory")
        return {"clock": settings.referral_clock}

    @asynccontextmanager
    async def consuming() -> AsyncIterator[None]:
        scanner.start()
        try:
            yield
        finally:
            await scanner.stop()

    async def deadlines() -> bool:
        return scanner.healthy

    app = service_app(SPEC, settings, referrals, broker, hooks=Hooks(prepare=prepare, consuming=consuming),
                      outbox=Outbox(), checks={"deadlines": deadlines})
    app.state.referrals = referrals
    app.include_router(referrals_router)
    install_database_away(app)  # 503 + Retry-After + JSON while PostgreSQL is away
    return app


def build_app() -> FastAPI:
    """uvicorn's factory in each worker process (``python -m services.referral``)."""
    return serve.app_of(SPEC, create_app)
