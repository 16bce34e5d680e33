"""metrics' factory: settings, broker (one batch subscriber on every canonical topic), pool, the
secretariat's API, the ops scrape endpoint and health."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import structlog
from fastapi import FastAPI
from fastapi.responses import Response

from services.metrics import catchup, store
from services.metrics.domain import Period, load_periods
from services.metrics.handlers import CONSUMED, Metrics, register_consumer, rejected_publisher
from services.metrics.http import PeriodProblem, period_problem
from services.metrics.http import router as metrics_router
from services.metrics.telemetry import OpsTelemetry
from tsunagu import auth
from tsunagu import telemetry as process_telemetry
from tsunagu.db import create_pool
from tsunagu.health import health_router, service_checks
from tsunagu.http_errors import install_database_away
from tsunagu.kafka import make_broker
from tsunagu.settings import Settings, SettingsError

log = structlog.get_logger()

DEFAULT_PERIODS = Path(__file__).parents[2] / "config" / "periods.yaml"


def wall_clock() -> datetime:
    return datetime.now(UTC)


def periods_of(settings: Settings) -> dict[str, Period]:
    path = settings.metrics_periods_file or DEFAULT_PERIODS
    if not path.exists():
        if settings.metrics_periods_file is not None:
            raise SettingsError(f"TSUNAGU_METRICS_PERIODS_FILE: {path} does not exist")
        return {}
    return load_periods(path)


async def refresh_live(metrics: Metrics, every: float) -> None:
    """Keep the ops gauges current from the facts (shared by every instance)."""
    while True:
        try:
            assert metrics.pool is not None
            metrics.telemetry.live = await store.live_figures(metrics.pool)
        except Exception as err:  # a gauge that lags is better than a consumer that dies
            log.warning("live_figures_failed", error=type(err).__name__)
        await asyncio.sleep(every)


# How often the callers' links of the contacts live batches changed are moved (store.derive_links):
# the longer, the more of a contact's events move its links once; every read of them derives first.
LINKS_EVERY_S = 1.0


async def move_links(metrics: Metrics, every: float) -> None:
    """Keep deriving the callers' links the live batches left pending (any instance may)."""
    while True:
        await asyncio.sleep(every)
        try:
            assert metrics.pool is not None
            metrics.telemetry.links_pending = await store.links_pending(metrics.pool)
            await store.derive_links(metrics.pool)
        except Exception as err:  # they stay pending: the next round, or the next read, moves them
            log.warning("caller_links_not_derived", error=type(err).__name__)


def create_app(settings: Settings) -> FastAPI:
    if not settings.database_url:
        raise SettingsError("metrics needs DATABASE_URL (`tsunagu up` sets it for the local stack)")
    telemetry = OpsTelemetry(telemetry=process_telemetry.get())  # one meter: business, handler and lag metrics
    metrics = Metrics(settings=settings, telemetry=telemetry, clock=wall_clock)
    broker = make_broker(settings, client_id="tsunagu-metrics")
    metrics.publish_aside = rejected_publisher(broker, settings)
    subscriber = register_consumer(broker, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.pool = app.state.pool = await create_pool(settings.database_url)
        applied = await auth.migrate_schema(metrics.pool) + await store.migrate_schema(metrics.pool)
        metrics.live = await catchup.is_live(metrics.pool)
        if not metrics.live:  # a new or stale schema: fold facts only until the topics are caught up
            metrics.catch_up = catchup.CatchUp(metrics, subscriber, [settings.topic(t) for t in CONSUMED])
        await broker.start()
        tasks = [asyncio.create_task(refresh_live(metrics, settings.metrics_live_seconds)),
                 asyncio.create_task(move_links(metrics, LINKS_EVERY_S))]
        if metrics.catch_up is not None:
            tasks.append(asyncio.create_task(metrics.catch_up.run()))
        log.info("metrics_started", migrations=applied, group=settings.metrics_consumer_group,
                 mode="live" if metrics.live else "catch_up")
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await broker.stop()  # commits the consumer's offsets
            await metrics.pool.close()
            telemetry.shutdown()
            log.info("metrics_stopped", consumed=metrics.consumed, set_aside=metrics.set_aside)

    app = FastAPI(
        title="tsunagu metrics",
        version="1",
        summary="Exact answer rates for the secretariat, live figures for ops, capacity planning.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.periods = periods_of(settings)

    async def fold_state() -> dict[str, object]:
        if metrics.live or (metrics.pool is not None and await catchup.is_live(metrics.pool)):
            metrics.live = True
            return {"figures": "live"}
        behind = metrics.catch_up.behind if metrics.catch_up is not None else None
        return {"status": "rebuilding", "figures": catchup.REBUILDING, "behind": behind}

    # checks: database, broker, consumer (not ready while its batches keep failing, with the reason)
    app.include_router(health_router("metrics", service_checks(metrics, broker), fold_state))
    app.include_router(metrics_router)
    app.add_exception_handler(PeriodProblem, period_problem)
    install_database_away(app)

    @app.get("/metrics", tags=["ops"], summary="OpenTelemetry metrics in the Prometheus text format")
    async def scrape() -> Response:
        return Response(telemetry.scrape(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
