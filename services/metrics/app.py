"""metrics: its spec, and its factory (one batch subscriber on every canonical topic, the catch-up,
the live gauges, the secretariat's API and the ops scrape endpoint)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import structlog
from fastapi import FastAPI
from fastapi.responses import Response

from services.metrics import catchup
from services.metrics.handlers import Metrics, register_consumer, rejected_publisher
from services.metrics.http import PeriodProblem, period_problem
from services.metrics.http import router as metrics_router
from services.metrics.periods_file import periods_of
from services.metrics.settings import MetricsSettings
from services.metrics.store.callers import derive_links, links_pending
from services.metrics.store.fold_mode import is_live
from services.metrics.store.gauges import live_figures
from services.metrics.store.schema import MIGRATIONS, migrate_schema
from services.metrics.store.sql import SCHEMA
from services.metrics.telemetry import OpsTelemetry
from tsunagu import auth, serve, topics
from tsunagu import telemetry as process_telemetry
from tsunagu.http_errors import install_database_away
from tsunagu.service import AUTH, Hooks, Migrations, ServiceSpec, service_app

log = structlog.get_logger()

SPEC = ServiceSpec(
    name="metrics",
    summary="Exact answer rates for the secretariat, live figures for ops, capacity planning.",
    group="metrics",
    group_setting="metrics_consumer_group",  # a new group replays every topic into an empty schema
    consumes=(topics.CONTACT_EVENTS, topics.ROUTING_DECISIONS, topics.CONSULTATION_EVENTS, topics.REFERRAL_EVENTS),
    produces=(topics.REJECTED,),
    migrations=(AUTH, Migrations(SCHEMA, MIGRATIONS, inbox_outbox=True)),
    settings=MetricsSettings,
)

__all__ = ["SPEC", "create_app", "periods_of"]


def wall_clock() -> datetime:
    return datetime.now(UTC)


async def refresh_live(metrics: Metrics, every: float) -> None:
    """Keep the ops gauges current from the facts (shared by every instance)."""
    while True:
        try:
            assert metrics.pool is not None
            metrics.telemetry.live = await live_figures(metrics.pool)
        except Exception as err:  # a gauge that lags is better than a consumer that dies
            log.warning("live_figures_failed", error=type(err).__name__)
        await asyncio.sleep(every)


# How often the callers' links of the contacts live batches changed are moved (derive_links):
# the longer, the more of a contact's events move its links once; every read of them derives first.
LINKS_EVERY_S = 1.0


async def move_links(metrics: Metrics, every: float) -> None:
    """Keep deriving the callers' links the live batches left pending (any instance may)."""
    while True:
        await asyncio.sleep(every)
        try:
            assert metrics.pool is not None
            metrics.telemetry.links_pending = await links_pending(metrics.pool)
            await derive_links(metrics.pool)
        except Exception as err:  # they stay pending: the next round, or the next read, moves them
            log.warning("caller_links_not_derived", error=type(err).__name__)


def create_app(settings: MetricsSettings) -> FastAPI:
    telemetry = OpsTelemetry(telemetry=process_telemetry.get())  # one meter: business, handler and lag metrics
    metrics = Metrics(settings=settings, telemetry=telemetry, clock=wall_clock)
    broker = SPEC.make_broker(settings)
    metrics.publish_aside = rejected_publisher(broker, settings)
    subscriber = register_consumer(SPEC, broker, metrics)

    async def migrate(pool: asyncpg.Pool) -> list[str]:
        # migrate_schema: SPEC's metrics folder, then the rollups rebuilt after some of its files
        return await auth.migrate_schema(pool) + await migrate_schema(pool)

    async def prepare(pool: asyncpg.Pool) -> dict[str, object]:
        metrics.live = await is_live(pool)
        if not metrics.live:  # a new or stale schema: fold facts only until the topics are caught up
            metrics.catch_up = catchup.CatchUp(metrics, subscriber, SPEC.topics_in(settings))
        return {"mode": "live" if metrics.live else "catch_up"}

    @asynccontextmanager
    async def consuming() -> AsyncIterator[None]:
        tasks = [asyncio.create_task(refresh_live(metrics, settings.metrics_live_seconds)),
                 asyncio.create_task(move_links(metrics, LINKS_EVERY_S))]
        if metrics.catch_up is not None:
            tasks.append(asyncio.create_task(metrics.catch_up.run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def stopped() -> dict[str, object]:
        telemetry.shutdown()
        return {"consumed": metrics.consumed, "set_aside": metrics.set_aside}

    async def fold_state() -> dict[str, object]:
        if metrics.live or (metrics.pool is not None and await is_live(metrics.pool)):
            metrics.live = True
            return {"figures": "live"}
        behind = metrics.catch_up.behind if metrics.catch_up is not None else None
        return {"status": "rebuilding", "figures": catchup.REBUILDING, "behind": behind}

    hooks = Hooks(migrate=migrate, prepare=prepare, consuming=consuming, stopped=stopped)
    # checks: database, broker, consumer (not ready while its batches keep failing, with the reason)
    app = service_app(SPEC, settings, metrics, broker, hooks=hooks, state=fold_state)
    app.state.metrics = metrics
    app.state.periods = periods_of(settings)
    app.include_router(metrics_router)
    app.add_exception_handler(PeriodProblem, period_problem)
    install_database_away(app)

    @app.get("/metrics", tags=["ops"], summary="OpenTelemetry metrics in the Prometheus text format")
    async def scrape() -> Response:
        return Response(telemetry.scrape(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def build_app() -> FastAPI:
    """uvicorn's factory in each worker process (``python -m services.metrics``)."""
    return serve.app_of(SPEC, create_app)
