"""routing's PostgreSQL: the board row, the desk registry's versions, inbox and outbox.

**No double booking with several instances.** Instances of routing split the partitions of
``contact.events`` between them, but desks' lines are shared. So the board (queues, line
occupancy, clock) is one row, ``routing.board`` (its contacts one row each in
``routing.board_contacts``), and every batch is applied inside one transaction that first takes
that row's lock (``SELECT ... FOR UPDATE``): claim the batch's events in the inbox, apply the new
ones to the board, write back the header with ``version + 1`` and the contacts the batch changed,
queue the decisions in the outbox, commit. Instances therefore take turns, each starting from the board the
other left; an instance keeps the board in memory and re-reads it only when the version moved.
A SIGKILL mid-batch rolls the whole transaction back (the lock dies with the connection), the
partition's records are redelivered to whichever instance holds it next, and nothing was
published that the board does not contain. The same row is what a restart reads: queues and line
occupancy come back exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from services.routing.desks import Registry, parse_registry
from tsunagu.db import INBOX_OUTBOX, migrate
from tsunagu.outbox import Outgoing

SCHEMA = "routing"
MIGRATIONS = Path(__file__).parent / "migrations"


class VersionConflict(ValueError):
    """A registry version of that name exists with other content: versions are immutable."""


async def migrate_schema(pool: asyncpg.Pool) -> list[str]:
    return await migrate(pool, SCHEMA, INBOX_OUTBOX, MIGRATIONS)


def read_document(path: Path) -> dict[str, Any]:
    """A registry YAML file, decoded (validate it with desks.parse_registry)."""
    import yaml

    document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a desk registry must be a YAML mapping")
    return document


def resolve_config(name: str) -> Path:
    """A registry file named in settings: as given, else relative to the project's root."""
    path = Path(name)
    if path.is_absolute() or path.exists():
        return path
    return Path(__file__).resolve().parents[2] / path


def document_digest(document: Any) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


async def apply_registry(pool: asyncpg.Pool, document: dict[str, Any]) -> tuple[Registry, bool]:
    """Validate and store a registry version; returns (registry, stored now?).

    Re-applying the same document is a no-op; the same version name with other content is refused.
    """
    registry = parse_registry(document)
    digest = document_digest(document)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(f"SELECT sha256 FROM {SCHEMA}.desk_versions WHERE version = $1", registry.version)
        if row is not None:
            if row["sha256"] != digest:
                raise VersionConflict(
                    f"version {registry.version!r} is already applied with other content; "
                    "versions are immutable: give the new one its own version name")
            return registry, False
        await conn.execute(
            f"INSERT INTO {SCHEMA}.desk_versions (version, effective_from, document, sha256) VALUES ($1, $2, $3, $4)",
            registry.version, registry.effective_from, json.dumps(document, default=str), digest,
        )
    return registry, True


async def registry_seq(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval(f"SELECT coalesce(max(seq), 0) FROM {SCHEMA}.desk_versions"))


async def load_registries(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[int, list[Registry]]:
    rows = await conn.fetch(f"SELECT seq, document FROM {SCHEMA}.desk_versions ORDER BY seq")
    registries = [parse_registry(json.loads(r["document"])) for r in rows]
    return (int(rows[-1]["seq"]) if rows else 0), registries


async def lock_board(conn: asyncpg.Connection) -> tuple[int, int]:
    """Take the board's lock for this transaction; returns (board version, registry seq).

    One round trip: it runs before every batch."""
    row = await conn.fetchrow(
        f"SELECT version, (SELECT coalesce(max(seq), 0) FROM {SCHEMA}.desk_versions) AS seq "
        f"FROM {SCHEMA}.board WHERE id = 1 FOR UPDATE")
    return int(row["version"]), int(row["seq"])


async def lock_and_claim(conn: asyncpg.Connection,
                         keys: list[tuple[str, str, str]]) -> tuple[int, int, set[tuple[str, str]]]:
    """Take the board's lock for this transaction and claim a batch's events in the inbox (what
    ``tsunagu.inbox.claim_new`` does); returns (board version, registry seq, the (source, id) pairs not
    seen before). One round trip, before every batch's decisions. The claim reads the locked row, so
    the lock is taken first, as with two statements: an instance never holds inbox rows while it
    waits for the lock."""
    rows = await conn.fetch(
        f"""WITH board AS (
                SELECT version FROM {SCHEMA}.board WHERE id = 1 FOR UPDATE
            ), claimed AS (
                INSERT INTO {SCHEMA}.inbox (source, id, type)
                SELECT k.source, k.id, k.type
                FROM board, unnest($1::text[], $2::text[], $3::text[]) AS k(source, id, type)
                ON CONFLICT DO NOTHING RETURNING source, id
            )
            SELECT b.version, (SELECT coalesce(max(seq), 0) FROM {SCHEMA}.desk_versions) AS seq, c.source, c.id
            FROM board b LEFT JOIN claimed c ON true""",
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
    )
    new = {(r["source"], r["id"]) for r in rows if r["source"] is not None}
    return int(rows[0]["version"]), int(rows[0]["seq"]), new


async def load_snapshot(conn: asyncpg.Connection) -> tuple[int, dict[str, Any]]:
    """The whole board as ``Board.snapshot()`` wrote it: (version, snapshot). Read it inside the
    transaction that holds the lock, or in a REPEATABLE READ one, so header and rows agree."""
    row = await conn.fetchrow(f"SELECT version, state FROM {SCHEMA}.board WHERE id = 1")
    snapshot = json.loads(row["state"]) if row["state"] else {}
    rows = await conn.fetch(f"SELECT state FROM {SCHEMA}.board_contacts")
    snapshot["contacts"] = [json.loads(r["state"]) for r in rows]
    return int(row["version"]), snapshot


async def board_version(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval(f"SELECT version FROM {SCHEMA}.board WHERE id = 1"))


async def read_board(pool: asyncpg.Pool) -> tuple[int, dict[str, Any]]:
    """The last committed board, without waiting for the lock (for the live-state API)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        return await load_snapshot(conn)


async def save_board(conn: asyncpg.Connection, version: int, clock: Any, header: dict[str, Any],
                     changed: list[dict[str, Any]], gone: list[str], outgoing: Sequence[Outgoing] = ()) -> list[int]:
    """Write the board's header and the contacts a batch changed (``Board.take_changes()``), and queue
    the batch's decisions in the outbox (what ``tsunagu.outbox.enqueue`` does): one statement, one
    round trip, on the path of every decision (a contact is never both changed and gone). Returns the
    outbox seqs of the decisions queued."""
    rows = await conn.fetch(
        f"""WITH header AS (
                UPDATE {SCHEMA}.board SET version = $1, clock = $2, state = $3, updated_at = now() WHERE id = 1
            ), gone AS (
                DELETE FROM {SCHEMA}.board_contacts WHERE contact_id = ANY($6::text[])
            ), queued AS (
                INSERT INTO {SCHEMA}.outbox (topic, key, value, traceparent)
                SELECT * FROM unnest($7::text[], $8::text[], $9::bytea[], $10::text[]) RETURNING seq
            ), contacts AS (
                INSERT INTO {SCHEMA}.board_contacts (contact_id, state) SELECT * FROM unnest($4::text[], $5::text[])
                ON CONFLICT (contact_id) DO UPDATE SET state = excluded.state
            )
            SELECT seq FROM queued""",
        version, clock, json.dumps(header), [c["contact_id"] for c in changed], [json.dumps(c) for c in changed], gone,
        [r.topic for r in outgoing], [r.key for r in outgoing], [r.value for r in outgoing],
        [r.traceparent for r in outgoing],
    )
    return [r["seq"] for r in rows]
