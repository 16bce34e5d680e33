"""metrics' schema: its migrations, and the rebuild a schema needs when facts predate its rollups."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from services.metrics.store.rebuild import rebuild_rollups
from services.metrics.store.sql import SCHEMA
from tsunagu.db import INBOX_OUTBOX, migrate

MIGRATIONS = Path(__file__).parents[1] / "migrations"


async def migrate_schema(pool: asyncpg.Pool) -> list[str]:
    applied = await migrate(pool, SCHEMA, INBOX_OUTBOX, MIGRATIONS)
    rebuilt = {"002_rollups.sql", "004_caller_links.sql", "008_every_grouping_from_rollups.sql"} & set(applied)
    if rebuilt and await pool.fetchval(f'SELECT EXISTS (SELECT FROM "{SCHEMA}".contacts)'):
        async with pool.acquire() as conn:  # facts from before the rollups (or the caller links) existed
            await rebuild_rollups(conn)
    return applied
