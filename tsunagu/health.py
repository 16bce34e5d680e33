"""Liveness and readiness for every service's HTTP port.

``/health/live`` answers while the process runs; ``/health/ready`` runs the service's checks
(database reachable, broker connected, ...) and answers 503 naming the ones that fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

Check = Callable[[], Awaitable[bool]]


def health_router(service: str, checks: dict[str, Check]) -> APIRouter:
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
        return JSONResponse(
            {"service": service, "status": "ready" if ok else "not_ready", "checks": results},
            status_code=200 if ok else 503,
        )

    return router
