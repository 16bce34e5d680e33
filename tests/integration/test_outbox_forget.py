"""Dropping the outboxes' retained records (``tsunagu.outbox.forget_published``), on a real PostgreSQL:
what was published goes, in every service's outbox; what still waits to be published stays."""

from __future__ import annotations

import asyncpg

from tsunagu.db import INBOX_OUTBOX, create_pool, migrate
from tsunagu.outbox import forget_published


async def test_only_published_records_are_dropped_in_every_outbox(database_url: str):
    pool = await create_pool(database_url)
    try:
        for schema in ("intake", "routing"):
            await migrate(pool, schema, INBOX_OUTBOX)
            await pool.execute(
                f'INSERT INTO "{schema}".outbox (topic, key, value, published_at) VALUES '
                "('contact.events', 'a', '\\x7b7d', now()), ('contact.events', 'b', '\\x7b7d', now()), "
                "('contact.events', 'c', '\\x7b7d', NULL)")
        conn: asyncpg.Connection
        async with pool.acquire() as conn:
            assert await forget_published(conn) == 4
            assert await forget_published(conn) == 0
        for schema in ("intake", "routing"):
            assert [r["key"] for r in await pool.fetch(f'SELECT key FROM "{schema}".outbox')] == ["c"]
    finally:
        await pool.close()
