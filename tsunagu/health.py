"""Liveness and readiness for every service's HTTP port.

``/health/live`` answers while the process runs; ``/health/ready`` runs the service's checks
(database reachable, broker connected, ...) and answers 503 naming the ones that fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

Check = Callable[[], Awaitable[bool]]


def health_router(service: str, checks: dict[str, Check],
                  state: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> APIRouter:
    """``state``, when given, adds to a ready answer what the service is doing (e.g. metrics while it
    rebuilds: ``{"status": "rebuilding", ...}``) — still 200: it works, and says so."""
    router = APIRouter(tags=["health"])

    @router.get("/health/live", summary="The process is running")
    async def live() -> dict[str, str]:
        return {"service": service, "status": "live"}

    @router.get("/health/ready", summary="The service can do its work", responses={503: {}})
    async def ready() -> JSONResponse:
        results: dict[str, bool] = {}
        for name, check in checks.items():
            try:
                results[name] = bool(await asyncio.wait_for(check(), timeout=2.0))
            except Exception:  # a failing dependency is an answer, not an error
                results[name] = False
        ok = all(results.values())
        body: dict[str, Any] = {"service": service, "status": "ready" if ok else "not_ready", "checks": results}
        if ok and state is not None:
            body |= await state()
        return JSONResponse(body, status_code=200 if ok else 503)

    return router


def service_checks(state: object, broker: object) -> dict[str, Check]:
    """The checks every service has: its database answers, its broker answers and, when it has one,
    its outbox is publishing. ``state`` is the service's holder of ``pool`` (and ``outbox``), read
    at check time because both are created in the lifespan."""

    async def database() -> bool:
        pool = getattr(state, "pool", None)
        return pool is not None and await pool.fetchval("SELECT 1") == 1

    async def broker_up() -> bool:
        return await broker.ping(timeout=1.0)  # type: ignore[attr-defined]

    checks: dict[str, Check] = {"database": database, "broker": broker_up}
    if hasattr(state, "outbox"):

        async def outbox() -> bool:
            current = getattr(state, "outbox", None)
            return current is not None and current.healthy

        checks["outbox"] = outbox
    return checks
