"""HTTP answers every service gives alike when a dependency is away.

While PostgreSQL is away (a restart, a failover, a cut connection) a request that needs it answers
``503`` with ``Retry-After`` and a JSON body — never a plain-text 500 — so that clients and load
balancers retry instead of treating the service as broken::

    app = FastAPI(...)
    install_database_away(app)
"""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

# What PostgreSQL away looks like to asyncpg (a restart, a failover). InternalClientError is what a
# connection cut during COMMIT leaves behind ("cannot switch to state 15"): whether the commit happened
# is unknown, and the client's retry finds what was stored (writes here are idempotent or keyed).
# OSError covers a refused or reset connection (and TimeoutError, its subclass).
DATABASE_AWAY: tuple[type[Exception], ...] = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError, asyncpg.InterfaceError, asyncpg.InternalClientError,
)
RETRY_AFTER_S = 1
UNAVAILABLE = "unavailable"


def unavailable(message: str, retry_after: int = RETRY_AFTER_S) -> JSONResponse:
    """503, ``Retry-After`` and ``{"error": "unavailable", "message": ...}``."""
    return JSONResponse({"error": UNAVAILABLE, "message": message}, status_code=503,
                        headers={"Retry-After": str(retry_after)})


def database_away_response() -> dict[str, Any]:
    """The OpenAPI description of that answer, for an operation's ``responses``."""
    return {
        "description": "the service cannot reach its database right now (一時的に利用できません / "
                       "temporarily unavailable): retry after `Retry-After` seconds",
        "headers": {"Retry-After": {"description": "seconds to wait before asking again",
                                    "schema": {"type": "integer"}}},
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["error", "message"],
            "properties": {"error": {"type": "string", "enum": [UNAVAILABLE]}, "message": {"type": "string"}},
        }}},
    }


def install_database_away(app: FastAPI, service: str | None = None) -> None:
    """Answer 503 + ``Retry-After`` + JSON instead of a 500 whenever a request fails because the
    database is away, and document the 503 on every operation but the health probes (those that declare
    their own 503, e.g. metrics' "rebuilding", keep their description). The message names the service
    (``service``, else the app's title) and never the error's text, which may name hosts or users."""
    who = service or app.title

    async def database_away(request: Request, exc: Exception) -> JSONResponse:
        return unavailable(f"{who} cannot reach its database right now; retry after {RETRY_AFTER_S} s")

    for exc in DATABASE_AWAY:
        app.add_exception_handler(exc, database_away)

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()  # cached on the app: documented once
        for path, operations in schema.get("paths", {}).items():
            if path.startswith("/health/"):  # readiness says 503 itself, liveness needs no database
                continue
            for operation in operations.values():
                if isinstance(operation, dict) and "responses" in operation:
                    operation["responses"].setdefault("503", database_away_response())
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
