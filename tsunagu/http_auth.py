"""Who is calling: the FastAPI dependency every service's API uses.

Every service's lifespan puts its asyncpg pool at ``app.state.pool``; keys are checked against
the shared credentials store (tsunagu.auth) on every request, so a revocation takes effect at once.

    @router.get("/v1/referrals")
    async def list_referrals(caller: Annotated[Caller, Depends(require_roles("receiver", "secretariat"))]): ...
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
