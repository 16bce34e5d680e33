"""intake's PostgreSQL: its inbox (every (source, id) ever accepted) and its outbox.

There are no tables of its own beyond those: intake keeps no state but the de-duplication record
and the events waiting to be published (and a published event leaves the outbox).
"""

from __future__ import annotations

import asyncpg

from services.intake.domain import Canonical
from tsunagu.db import migrate
from tsunagu.inbox import claim_new
from tsunagu.outbox import Outgoing, enqueue
from tsunagu.telemetry import traceparent_about

SCHEMA = "intake"


async def migrate_schema(pool: asyncpg.Pool) -> list[str]:
    return await migrate(pool, SCHEMA, None, inbox_outbox=True)


async def store_new(pool: asyncpg.Pool, events: list[Canonical]) -> set[tuple[str, str]]:
    """Record the events not seen before and queue them for publishing, in one transaction.

    Returns the (source, id) pairs that were new; the others are duplicates of earlier requests.
    """
    if not events:
        return set()
    async with pool.acquire() as conn, conn.transaction():
        new = await claim_new(conn, SCHEMA, [(e.source, e.id, e.type) for e in events])
        await enqueue(conn, SCHEMA, [
            Outgoing(e.topic, e.key, e.value, e.traceparent or traceparent_about(e.contact_id, e.key),
                     every_partition=e.every_partition)
            for e in events if (e.source, e.id) in new
        ])
    return new
