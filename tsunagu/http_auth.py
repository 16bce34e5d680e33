"""Who is calling: the FastAPI dependency every service's API uses.

Every service's lifespan puts its asyncpg pool at ``app.state.pool``; keys are checked against
the shared credentials store (tsunagu.auth) on every request, so a revocation takes effect at once.

    @router.get("/v1/referrals")
    async def list_referrals(caller: Annotated[Caller, Depends(require_roles("receiver", "secretariat"))]): ...

The OpenAPI documents say the same (``with_security``, applied by the kit to every service's app):
the two ways a key is presented are declared once, and every operation under ``/v1/`` requires one
of them unless its route is marked public (``openapi_extra=PUBLIC``). Health, readiness, the
Prometheus scrape and the documents themselves lie outside ``/v1/`` and are served without a key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel

from tsunagu import auth
from tsunagu.auth import Caller


class Detail(BaseModel):
    detail: str


# For the OpenAPI document of every route behind require_roles: `APIRouter(..., responses=AUTH_RESPONSES)`.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "no valid API key: missing, unknown or revoked"},
    403: {"model": Detail, "description": "the key's role may not do this"},
}
BAD_REQUEST: dict[int | str, dict[str, Any]] = {400: {"model": Detail, "description": "the request cannot be read"}}

BEARER = "bearer"
API_KEY_HEADER = "apiKeyHeader"
# The two ways ``api_key_of`` reads a key, as OpenAPI security schemes (what Swagger UI's Authorize
# button offers and what generated clients send).
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "tsunagu API key (opaque; `tsunagu credentials issue`)",
        "description": "APIキー / API key: `Authorization: Bearer <api key>`. A key belongs to one "
                       "organisation and one role (partner, receiver, secretariat); a revoked key is "
                       "refused at once (401, `WWW-Authenticate: Bearer`).",
    },
    API_KEY_HEADER: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "APIキー / API key: the same key in its own header, read when no "
                       "`Authorization: Bearer` is sent.",
    },
}
# Either scheme will do (OpenAPI: a list of alternatives).
KEY_REQUIRED: list[dict[str, list[str]]] = [{BEARER: []}, {API_KEY_HEADER: []}]
PROTECTED_PREFIX = "/v1/"
# ``@router.get("/v1/...", openapi_extra=PUBLIC)``: a route under /v1/ that its code serves without a key.
PUBLIC: dict[str, Any] = {"security": []}
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def api_key_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


async def current_caller(request: Request) -> Caller:
    key = api_key_of(request)
    caller = await auth.authenticate(request.app.state.pool, key) if key else None
    if caller is None:
        raise HTTPException(401, "a valid API key is required (Authorization: Bearer <key>)",
                            headers={"WWW-Authenticate": "Bearer"})
    return caller


def require_roles(*roles: str) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency that answers 401 without a valid key and 403 for a role not in ``roles``."""

    async def dependency(request: Request) -> Caller:
        caller = await current_caller(request)
        if caller.role not in roles:
            raise HTTPException(403, f"a {caller.role} key cannot do this")
        return caller

    return dependency


def requires_key(path: str, operation: dict[str, Any]) -> bool:
    """Whether an operation of the OpenAPI document is one a caller needs a key for: under /v1/,
    unless it states its own ``security`` (``PUBLIC``: none)."""
    return path.startswith(PROTECTED_PREFIX) and "security" not in operation


def with_security(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (an OpenAPI document) with the key's schemes declared and ``security`` on every
    operation that requires a key; the operations that need none are left without it."""
    paths: dict[str, Any] = {}
    for path, item in document.get("paths", {}).items():
        paths[path] = {method: ({**operation, "security": KEY_REQUIRED}
                                if method in _METHODS and requires_key(path, operation) else operation)
                       for method, operation in item.items()}
    components = document.get("components", {})
    schemes = {**components.get("securitySchemes", {}), **SECURITY_SCHEMES}
    return {**document, "paths": paths, "components": {**components, "securitySchemes": schemes}}
