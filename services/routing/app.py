"""routing's factory: settings, broker, pool, the outbox publisher, live-state routes and health.

At start it applies the registry files named in ``TSUNAGU_ROUTING_DESKS_FILES`` that are not yet
stored (by default config/trial1.yaml and config/trial2.yaml, so the local stack routes the demo's
trial-1 contacts). With none, it starts all the same: every contact then waits in its queue until a
version is applied with `tsunagu desks apply`.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from services.routing import store
from services.routing.handlers import Routing, register_contact_events
from services.routing.http import router as live_router
from tsunagu import auth, telemetry
from tsunagu.db import create_pool
from tsunagu.health import health_router, service_checks
from tsunagu.http_errors import install_database_away
from tsunagu.kafka import make_broker
from tsunagu.outbox import running_outbox
from tsunagu.settings import Settings, SettingsError

log = structlog.get_logger()

GC_YOUNG_THRESHOLD = 10_000  # allocations between collections of the youngest generation (Python's default: 700)


async def apply_configured_registries(routing: Routing) -> list[str]:
    applied = []
    for name in filter(None, (n.strip() for n in routing.settings.routing_desks_files.split(","))):
        path = store.resolve_config(name)
        try:
            registry, stored = await store.apply_registry(routing.pool, store.read_document(path))
        except store.VersionConflict as err:
            log.warning("desk_registry_not_applied", file=str(path), reason=str(err))
            continue
        except (OSError, ValueError) as err:
            raise SettingsError(f"TSUNAGU_ROUTING_DESKS_FILES: {path}: {err}") from None
        if stored:
            applied.append(registry.version)
    return applied


def create_app(settings: Settings) -> FastAPI:
    if not settings.database_url:
        raise SettingsError("routing needs DATABASE_URL (`tsunagu up` sets it for the local stack)")
    routing = Routing(settings=settings)
    routing.observe_lines(telemetry.get().meter)
    broker = make_broker(settings, client_id="tsunagu-routing")
    register_contact_events(broker, routing)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        routing.pool = app.state.pool = await create_pool(settings.database_url)
        migrations = await auth.migrate_schema(routing.pool) + await store.migrate_schema(routing.pool)
        versions = await apply_configured_registries(routing)
        # routing's outbox pool has room for the batches' own publishing (Routing._publish) beside the
        # publisher's loop. No linger: a batch's decisions are all queued before the producer's sender
        # runs, so they leave as one batch per partition anyway; lingering only delayed every decision.
        async with running_outbox(settings, store.SCHEMA, "routing", pool_size=4, linger_ms=0) as routing.outbox:
            routing.producer = routing.outbox.producer
            await broker.start()
            # What is loaded now stays: keep it out of the collector's way. The board's contacts and timers
            # stay for minutes, every batch allocates thousands of short-lived objects: collect the youngest
            # generation less often (each of its collections also walks what survived the last ones).
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            log.info("routing_started", migrations=migrations, registry_versions_applied=versions)
            try:
                yield
            finally:
                await broker.stop()  # commits the consumer's offsets
                await routing.flush()
                await routing.release_connection()
                await routing.pool.close()
                log.info("routing_stopped", decisions=routing.decided)

    app = FastAPI(
        title="tsunagu routing",
        version="1",
        summary="An ACD over partner desks: assigns every contact to a free, qualified line.",
        lifespan=lifespan,
    )
    app.state.routing = routing

    app.include_router(health_router("routing", service_checks(routing, broker)))
    app.include_router(live_router)
    install_database_away(app)  # 503 + Retry-After + JSON while PostgreSQL is away
    return app
