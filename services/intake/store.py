"""intake's PostgreSQL: credentials, the de-duplication record and the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.intake.domain import Canonical
from tsunagu.db import migrate

SCHEMA = "intake"
MIGRATIONS = Path(__file__).parent / "migrations"


async def migrate_schema(pool: asyncpg.Pool) -> list[str]:
    return await migrate(pool, SCHEMA, MIGRATIONS)


# --- accepting events --------------------------------------------------------------------


async def store_new(pool: asyncpg.Pool, events: list[Canonical]) -> set[tuple[str, str]]:
    """Record the events not seen before and queue them for publishing, in one transaction.

    Returns the (source, id) pairs that were new; the others are duplicates of earlier requests.
    """
    if not events:
        return set()
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"""INSERT INTO {SCHEMA}.received (source, id, type)
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                ON CONFLICT DO NOTHING RETURNING source, id""",
            [e.source for e in events], [e.id for e in events], [e.type for e in events],
        )
        new = {(r["source"], r["id"]) for r in rows}
        fresh = [e for e in events if (e.source, e.id) in new]
        if fresh:
            await conn.execute(
                f"""INSERT INTO {SCHEMA}.outbox (topic, key, value)
                    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])""",
                [e.topic for e in fresh], [e.key for e in fresh], [e.value for e in fresh],
            )
    return new


# --- the outbox --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    seq: int
    topic: str
    key: str
    value: bytes


async def outbox_depth(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.outbox"))


def claim_sql(limit: int) -> str:
    # SKIP LOCKED lets several intake instances drain the outbox side by side.
    return (
        f"SELECT seq, topic, key, value FROM {SCHEMA}.outbox ORDER BY seq LIMIT {int(limit)} "
        "FOR UPDATE SKIP LOCKED"
    )


DELETE_SQL = f"DELETE FROM {SCHEMA}.outbox WHERE seq = ANY($1::bigint[])"
