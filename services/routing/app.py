"""routing: its spec, and its factory (the board's consumer, its outbox, live-state routes).

At start it applies the registry files named in ``TSUNAGU_ROUTING_DESKS_FILES`` that are not yet
stored (by default config/trial1.yaml and config/trial2.yaml, so the local stack routes the demo's
trial-1 contacts). With none, it starts all the same: every contact then waits in its queue until a
version is applied with `tsunagu desks apply`.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import structlog
from fastapi import FastAPI

from services.routing import store
from services.routing.handlers import Routing, register_consumer
from services.routing.http import router as live_router
from services.routing.settings import RoutingSettings
from tsunagu import serve, telemetry, topics
from tsunagu.http_errors import install_database_away
from tsunagu.service import AUTH, Hooks, Migrations, Outbox, ServiceSpec, service_app
from tsunagu.settings import SettingsError

log = structlog.get_logger()

SPEC = ServiceSpec(
    name="routing",
    summary="An ACD over partner desks: assigns every contact to a free, qualified line.",
    group="routing",
    consumes=(topics.CONTACT_EVENTS,),
    produces=(topics.ROUTING_DECISIONS,),
    migrations=(AUTH, Migrations(store.SCHEMA, store.MIGRATIONS, inbox_outbox=True)),
    settings=RoutingSettings,
)

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


def create_app(settings: RoutingSettings) -> FastAPI:
    routing = Routing(settings=settings)
    routing.observe_lines(telemetry.get().meter)
    broker = SPEC.make_broker(settings)
    register_consumer(SPEC, broker, routing)

    async def prepare(pool: asyncpg.Pool) -> dict[str, object]:
        routing.producer = routing.outbox.producer  # the batches publish their decisions themselves
        return {"registry_versions_applied": await apply_configured_registries(routing)}

    @asynccontextmanager
    async def consuming() -> AsyncIterator[None]:
        # What is loaded now stays: keep it out of the collector's way. The board's contacts and timers
        # stay for minutes, every batch allocates thousands of short-lived objects: collect the youngest
        # generation less often (each of its collections also walks what survived the last ones).
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        yield

    async def drained() -> None:
        await routing.flush()  # before the outbox's producer stops
        await routing.release_connection()  # before the pool closes: it waits for it

    hooks = Hooks(prepare=prepare, consuming=consuming, drained=drained,
                  stopped=lambda: {"decisions": routing.decided})
    # routing's outbox pool has room for the batches' own publishing (Routing._publish) beside the
    # publisher's loop. No linger: a batch's decisions are all queued before the producer's sender
    # runs, so they leave as one batch per partition anyway; lingering only delayed every decision.
    app = service_app(SPEC, settings, routing, broker, hooks=hooks, outbox=Outbox(pool_size=4, linger_ms=0))
    app.state.routing = routing
    app.include_router(live_router)
    install_database_away(app)  # 503 + Retry-After + JSON while PostgreSQL is away
    return app


def build_app() -> FastAPI:
    """uvicorn's factory in each worker process (``python -m services.routing``)."""
    return serve.app_of(SPEC, create_app)
