"""The kit's pools plan every statement for the arguments it runs with, on a real PostgreSQL.

A service starts on empty tables. With PostgreSQL's default plan cache, a prepared lookup run a few
times then keeps the generic plan made while its table was tiny: a sequential scan comparing every row
with every element of ``= ANY($1)``, however large the table grows (intake's Kafka door ran at a third
of its speed that way). Here the lookup is run on a small table first, the table then grows, and the
plan the pool's connection actually uses is read back (auto_explain, sent to the client): it must be
planned for the arguments, never the generic plan kept from the small table.
"""

from __future__ import annotations

import asyncpg

from tsunagu.db import create_pool
from tsunagu.outbox import create_outbox_pool

LOOKUP = "SELECT contact_id, owner FROM plans.contacts WHERE contact_id = ANY($1::text[])"


async def _plans_used(conn: asyncpg.Connection, runs: list[list[str]]) -> list[str]:
    """The plan each run of LOOKUP used (its nodes, without the query's text), run as one prepared
    statement on this connection."""
    notices: list[str] = []

    def listen(_conn: object, message: asyncpg.PostgresLogMessage) -> None:
        notices.append(message.message)

    conn.add_log_listener(listen)
    try:
        await conn.execute("LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
                           "SET auto_explain.log_level = notice")
        statement = await conn.prepare(LOOKUP)
        plans = []
        for ids in runs:
            notices.clear()
            await statement.fetch(ids)
            plan = next(m for m in notices if "plans.contacts" in m)
            plans.append(" / ".join(line.strip() for line in plan.splitlines()[1:]
                                    if not line.lstrip().startswith(("Query Text:", "Query Parameters:"))))
        return plans
    finally:
        conn.remove_log_listener(listen)


async def test_a_lookup_first_run_on_a_small_table_is_planned_for_its_arguments_after_it_grew(database_url: str):
    pool = await create_pool(database_url, max_size=1)
    try:
        await pool.execute("CREATE SCHEMA plans; CREATE TABLE plans.contacts "
                           "(contact_id text PRIMARY KEY, owner text NOT NULL)")
        await pool.execute("INSERT INTO plans.contacts SELECT 'c' || g, 'npo' FROM generate_series(1, 5) g")
        await pool.execute("ANALYZE plans.contacts")  # as autovacuum does while a deployment is young
        async with pool.acquire() as conn:
            await _plans_used(conn, [["c1", "c2", "c3"]] * 8)
            await conn.execute("INSERT INTO plans.contacts SELECT 'd' || g, 'npo' FROM generate_series(1, 50000) g")
            late = await _plans_used(conn, [[f"d{n}" for n in range(k, k + 500)] for k in range(0, 4000, 500)])
        # planned for its arguments: the array is a constant of the plan (looked up in the index or hashed),
        # never the generic ``= ANY ($1)`` compared element by element with every row
        assert late and not [p for p in late if "$1" in p], late
    finally:
        await pool.close()


async def test_the_outbox_pool_plans_for_its_arguments_too(database_url: str):
    pool = await create_outbox_pool(database_url, max_size=1)
    try:
        assert await pool.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        assert await pool.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await pool.close()
