"""What intake stored, read straight from its database (the security tests' rate-limit and fair-share checks)."""

from __future__ import annotations

from tsunagu.db import create_pool


async def stored_ids(database_url: str) -> set[str]:
    pool = await create_pool(database_url)
    try:
        return {r["id"] for r in await pool.fetch("SELECT id FROM intake.inbox")}
    finally:
        await pool.close()
