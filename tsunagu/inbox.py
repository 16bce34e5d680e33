"""The inbox: which events a service has already consumed, so redelivery changes nothing.

The table is ``<schema>.inbox``, created by the kit's inbox/outbox migrations
(``tsunagu/migrations/inbox_outbox``, ``tsunagu.db.INBOX_OUTBOX``). Inside the
transaction that applies a batch, ``claim_new`` records the batch's (source, id) pairs and
returns those not seen before: only they are applied.
"""

from __future__ import annotations

import asyncpg


async def claim_new(
    conn: asyncpg.Connection, schema: str, events: list[tuple[str, str, str]]
) -> set[tuple[str, str]]:
    """Record (source, id, type) triples; returns the (source, id) pairs that were new."""
    if not events:
        return set()
    rows = await conn.fetch(
        f"""INSERT INTO "{schema}".inbox (source, id, type)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
            ON CONFLICT DO NOTHING RETURNING source, id""",
        [e[0] for e in events], [e[1] for e in events], [e[2] for e in events],
    )
    return {(r["source"], r["id"]) for r in rows}
