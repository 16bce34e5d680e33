"""routing's board in PostgreSQL: a batch writes only the contacts it changed, and what is read back
is the board that was written — also a board stored whole by the version before."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import asyncpg
import pytest

from schemas import ContactAnswered, ContactEnded, ContactFieldSelected, ContactReceived
from services.routing import store
from services.routing.domain.board import Board
from tests.unit.routing_support import T0, registry
from tsunagu.db import INBOX_OUTBOX, migrate

pytestmark = pytest.mark.integration

REG = registry({"id": "a", "fields": ["loneliness"], "lines": 2},
               {"id": "b", "fields": ["loneliness", "hardship"], "lines": 1, "tier": 2})


def traffic(board: Board):
    """A morning's events: calls that are assigned, queued, answered, overflow, ring out and end."""
    for i in range(8):
        at = T0 + timedelta(seconds=i)
        yield at, "contact.received", ContactReceived(contact_id=f"c{i}", channel="phone", prefecture="13")
        yield at, "contact.field_selected", ContactFieldSelected(contact_id=f"c{i}", field="loneliness",
                                                                 menu_position=1)
    yield T0 + timedelta(seconds=9), "contact.answered", ContactAnswered(contact_id="c0", desk_id="a",
                                                                         organisation_id="npo-a", wait_seconds=0)
    yield T0 + timedelta(seconds=45), "contact.ended", ContactEnded(contact_id="c0", talk_seconds=36)
    yield T0 + timedelta(seconds=90), "contact.ended", ContactEnded(contact_id="c3", talk_seconds=1)


def by_id(snapshot: dict) -> dict:
    return {**snapshot, "contacts": {c["contact_id"]: c for c in json.loads(json.dumps(snapshot["contacts"]))}}


async def test_each_step_writes_only_what_changed_and_the_board_read_back_is_the_one_written(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await store.migrate_schema(pool)
        board = Board([REG], track_changes=True)
        version = 0
        for at, kind, data in traffic(board):
            decided = {d.contact_id for d in board.apply(kind, at, data)}
            changed, gone = board.take_changes()
            # a step writes the contacts it touched — its own and those it decided about — not the board
            assert {c["contact_id"] for c in changed} | set(gone) == decided | {data.contact_id}
            async with pool.acquire() as conn, conn.transaction():
                locked, _ = await store.lock_board(conn)
                assert locked == version
                version += 1
                await store.save_board(conn, version, board.clock, board.snapshot_header(), changed, gone)
            got_version, snapshot = await store.read_board(pool)
            assert got_version == version and by_id(snapshot) == by_id(board.snapshot())
        restored = Board.restore((await store.read_board(pool))[1], [REG])
        assert restored.tick(T0 + timedelta(hours=1)) == board.tick(T0 + timedelta(hours=1))
        assert by_id(restored.snapshot()) == by_id(board.snapshot())
    finally:
        await pool.close()


async def test_a_board_stored_whole_by_the_version_before_moves_into_one_row_per_contact(database_url, tmp_path):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        before = tmp_path / "migrations"
        before.mkdir()
        shutil.copy(store.MIGRATIONS / "001_board.sql", before)
        await migrate(pool, store.SCHEMA, INBOX_OUTBOX, before)
        board = Board([REG])
        for at, kind, data in traffic(board):
            board.apply(kind, at, data)
        await pool.execute("UPDATE routing.board SET version = 7, state = $1 WHERE id = 1",
                           json.dumps(board.snapshot()))

        assert await store.migrate_schema(pool) == ["002_board_contacts.sql"]
        version, snapshot = await store.read_board(pool)
        assert version == 7 and len(snapshot["contacts"]) == len(board.contacts) > 0
        assert by_id(snapshot) == by_id(board.snapshot())
        assert "contacts" not in json.loads(await pool.fetchval("SELECT state FROM routing.board"))
    finally:
        await pool.close()
