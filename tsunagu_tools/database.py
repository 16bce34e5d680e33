"""Where the tools' commands find PostgreSQL: DATABASE_URL, else the running local stack's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg

from tsunagu.db import create_pool
from tsunagu.settings import Settings, get_settings
from tsunagu_tools import stack


def database_url(settings: Settings | None = None) -> str:
    """DATABASE_URL if set (a cluster's database, through a port-forward), else the local stack's;
    raises ``stack.StackError`` when neither is there."""
    settings = settings or get_settings()
    return settings.database_url or stack.resolve_runtime(settings).database_url


async def run_with_pool(work: Callable[[asyncpg.Pool], Awaitable[Any]], *,
                        migrations: Iterable[Callable[[asyncpg.Pool], Awaitable[Any]]] = ()) -> Any:
    """Connect, apply the given ``migrate_schema`` functions, run ``await work(pool)`` and close the pool."""
    pool = await create_pool(database_url(), attempts=5)
    try:
        for migrate_schema in migrations:
            await migrate_schema(pool)
        return await work(pool)
    finally:
        await pool.close()
