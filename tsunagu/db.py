"""PostgreSQL plumbing: the pool factory and per-service schema migrations.

Each service owns one schema and a ``migrations/`` folder of numbered ``.sql`` files beside
its ``store.py``; a service that publishes applies the kit's inbox/outbox folder into the same
schema first. ``migrate`` applies the files not yet applied, under an advisory lock so that
several instances starting at once do not race.

Every pool checks the server first: tsunagu needs PostgreSQL 18 (metrics writes ``RETURNING old.*,
new.*``, which older servers refuse batch after batch), so a service, a CLI command or a migration on
an older server stops at once with ``UnsupportedServer`` naming the version it needs and the one it
found, instead of starting and failing later.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger()

# The oldest PostgreSQL tsunagu runs on, as ``server_version_num`` (18.0 = 180000): RETURNING old/new.
REQUIRED_SERVER_VERSION_NUM = 180000
# Raises (never lowers) the requirement, e.g. to check the refusal against a real server in tests.
REQUIRED_VERSION_ENV = "TSUNAGU_DB_REQUIRED_SERVER_VERSION_NUM"


class UnsupportedServer(RuntimeError):
    """The database server is older than tsunagu needs; the message names both versions."""


def required_server_version_num() -> int:
    raised = os.environ.get(REQUIRED_VERSION_ENV, "").strip()
    return max(REQUIRED_SERVER_VERSION_NUM, int(raised)) if raised.isdigit() else REQUIRED_SERVER_VERSION_NUM


def version_name(num: int) -> str:
    """``server_version_num`` as people say it: 180000 -> "18", 150004 -> "15.4", 90624 -> "9.6.24"."""
    if num >= 100000:
        major, minor = divmod(num, 10000)
        return f"{major}.{minor}" if minor else str(major)
    major, rest = divmod(num, 10000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}" if patch else f"{major}.{minor}"


async def check_server_version(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool,
                               required: int | None = None) -> int:
    """The server's ``server_version_num``; ``UnsupportedServer`` when it is below ``required``
    (default: ``REQUIRED_SERVER_VERSION_NUM``, or higher through ``TSUNAGU_DB_REQUIRED_SERVER_VERSION_NUM``)."""
    required = required_server_version_num() if required is None else required
    found = int(await conn.fetchval("SELECT current_setting('server_version_num')"))
    if found < required:
        log.error("database_server_unsupported", required_version=version_name(required),
                  required_version_num=required, server_version=version_name(found), server_version_num=found)
        raise UnsupportedServer(
            f"tsunagu needs PostgreSQL {version_name(required)} or later (server_version_num >= {required}); "
            f"the server at DATABASE_URL is PostgreSQL {version_name(found)} (server_version_num {found})")
    return found


# Every statement is planned for the arguments it is run with. By default PostgreSQL switches a prepared
# statement (asyncpg prepares them all) to a generic plan after five runs and keeps it until the table's
# statistics change. A service starts on empty tables, so the plan it keeps can be a sequential scan that
# compares each row with every element of ``= ANY($1)``: intake's claims lookup took 0.2-0.6 s per batch of
# 1,000 at 50,000 contacts, and its Kafka door ran at a third of its speed in most benchmark runs. Planning
# afresh costs well under a millisecond per statement; tsunagu's statements each carry a whole batch.
SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, attempts: int = 50) -> asyncpg.Pool:
    """Connect, retrying while the server is starting (or restarting); refuse a server older than
    tsunagu needs (``check_server_version``: ``UnsupportedServer``, never retried)."""
    delay = 0.1
    for attempt in range(attempts):
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                             server_settings=SERVER_SETTINGS)
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        try:
            await check_server_version(pool)
        except BaseException:
            await pool.close()
            raise
        return pool
    raise AssertionError("unreachable")


# The inbox and outbox every publishing service keeps in its own schema (tsunagu.inbox, tsunagu.outbox).
INBOX_OUTBOX = Path(__file__).parent / "migrations" / "inbox_outbox"
# Folders of the kit applied inside the schemas of others: their steps are recorded as ``<folder>/<file>``,
# so that they never collide with the service's own numbered files in the same ``schema_migrations``.
SHARED_FOLDERS = (INBOX_OUTBOX,)
# The names the inbox/outbox steps were recorded under when they were DDL strings of the kit, not files:
# a schema that holds the old name has the step; nothing is applied twice.
RECORDED_BEFORE = {
    "inbox_outbox/001_inbox_outbox.sql": "000_inbox_outbox",
    "inbox_outbox/002_outbox_traceparent.sql": "000_outbox_traceparent",
    "inbox_outbox/003_outbox_published.sql": "000_outbox_published",
    "inbox_outbox/004_outbox_every_partition.sql": "000_outbox_every_partition",
}


def steps_of(folder: Path) -> list[tuple[str, str]]:
    """The numbered ``.sql`` files of ``folder`` in order, as (recorded name, SQL)."""
    prefix = f"{folder.name}/" if folder in SHARED_FOLDERS else ""
    return [(prefix + path.name, path.read_text()) for path in sorted(folder.glob("*.sql"))]


async def migrate(pool: asyncpg.Pool, schema: str, *folders: Path) -> list[str]:
    """Apply the numbered SQL files of ``folders``, in that order, to ``schema``; returns the names applied.

    A publishing service passes ``INBOX_OUTBOX`` first, then its own folder.
    """
    steps = [step for folder in folders for step in steps_of(folder)]
    lock_key = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True)
    applied: list[str] = []
    async with pool.acquire() as conn:
        await check_server_version(conn)  # also for a pool not made by create_pool
        await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
                "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch(f'SELECT name FROM "{schema}".schema_migrations')}
            for name, sql in steps:
                if name in done or RECORDED_BEFORE.get(name) in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                    await conn.execute(sql)
                    await conn.execute(f'INSERT INTO "{schema}".schema_migrations (name) VALUES ($1)', name)
                applied.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
    return applied
