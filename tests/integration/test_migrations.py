"""Migrations on a real PostgreSQL: the kit's inbox/outbox steps as numbered files, and schemas that an
earlier release migrated when those steps were DDL strings recorded as ``000_*``."""

from __future__ import annotations

from services.routing import store
from tsunagu.db import INBOX_OUTBOX, RECORDED_BEFORE, create_pool, migrate

OLD_STEPS = ("000_inbox_outbox", "000_outbox_traceparent", "000_outbox_published", "000_outbox_every_partition")


async def test_a_schema_migrated_by_the_earlier_release_applies_nothing_again(database_url: str):
    pool = await create_pool(database_url)
    try:
        async with pool.acquire() as conn:  # the earlier release: the same DDL, recorded under the old names
            await conn.execute('CREATE SCHEMA "earlier"; SET search_path TO "earlier";'
                               + "".join(p.read_text() for p in sorted(INBOX_OUTBOX.glob("*.sql")))
                               + (store.MIGRATIONS / "001_board.sql").read_text()
                               + "CREATE TABLE schema_migrations (name text PRIMARY KEY, "
                                 "applied_at timestamptz NOT NULL DEFAULT now());")
            await conn.executemany('INSERT INTO "earlier".schema_migrations (name) VALUES ($1)',
                                   [(name,) for name in (*OLD_STEPS, "001_board.sql")])
        assert await migrate(pool, "earlier", INBOX_OUTBOX, store.MIGRATIONS) == ["002_board_contacts.sql"]
        assert await migrate(pool, "earlier", INBOX_OUTBOX, store.MIGRATIONS) == []
        recorded = {r["name"] for r in await pool.fetch('SELECT name FROM "earlier".schema_migrations')}
        assert recorded == {*OLD_STEPS, "001_board.sql", "002_board_contacts.sql"}
    finally:
        await pool.close()


def test_each_kit_step_answers_to_the_one_name_it_was_recorded_under_before():
    assert sorted(RECORDED_BEFORE.values()) == sorted(OLD_STEPS)
    assert [f"inbox_outbox/{p.name}" for p in sorted(INBOX_OUTBOX.glob("*.sql"))] == list(RECORDED_BEFORE)


async def test_a_fresh_schema_gets_the_inbox_and_outbox_then_its_own_files(database_url: str):
    pool = await create_pool(database_url)
    try:
        applied = await migrate(pool, "fresh", INBOX_OUTBOX, store.MIGRATIONS)
        assert applied == [*RECORDED_BEFORE, "001_board.sql", "002_board_contacts.sql"]
        columns = {r["column_name"] for r in await pool.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'fresh' AND table_name = 'outbox'")}
        assert {"traceparent", "published_at", "every_partition"} <= columns
    finally:
        await pool.close()
