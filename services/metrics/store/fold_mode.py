"""The fold mode (migration 005): ``catch_up`` while a backlog is replayed into the facts alone, then
``live`` once every rollup was derived from the facts — in one transaction with the switch."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.metrics.store.rebuild import rebuild_rollups
from services.metrics.store.sql import S

# how long a catch-up batch waits for the mode while a derive holds it before it is redelivered —
# short against the consumer's max poll interval (5 min), so the group keeps it meanwhile
MODE_WAIT = "5s"


class DeriveInProgress(Exception):
    """The rollups are being derived (by this process or another): the batch is redelivered after it."""


async def is_live(conn: Any) -> bool:
    return await conn.fetchval(f"SELECT mode = 'live' FROM {S}.fold_mode") is True


async def live_for_batch(conn: asyncpg.Connection) -> bool:
    """Inside a batch's transaction: the mode, held (FOR SHARE) until the batch commits so that a
    derive cannot run between reading it and committing facts folded by it."""
    await conn.execute(f"SET LOCAL lock_timeout = '{MODE_WAIT}'")
    try:
        mode = await conn.fetchval(f"SELECT mode FROM {S}.fold_mode FOR SHARE")
    except asyncpg.LockNotAvailableError:
        raise DeriveInProgress from None
    await conn.execute("SET LOCAL lock_timeout TO DEFAULT")
    return mode == "live"


async def derive_and_go_live(pool: asyncpg.Pool) -> bool:
    """Derive every rollup from the facts and switch to live, in one transaction (a kill rolls both
    back: still catch-up, rollups stale). Returns False when the schema already was live."""
    async with pool.acquire() as conn, conn.transaction():
        # the mode first, then the facts: the same order as a catch-up batch, so no deadlock
        if await conn.fetchval(f"SELECT mode FROM {S}.fold_mode FOR UPDATE") == "live":
            return False
        await rebuild_rollups(conn)
        await conn.execute(f"UPDATE {S}.fold_mode SET mode = 'live'")
    return True
