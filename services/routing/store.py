"""routing's PostgreSQL: the board row, the desk registry's versions, inbox and outbox.

**No double booking with several instances.** Instances of routing split the partitions of
``contact.events`` between them, but desks' lines are shared. So the board (queues, line
occupancy, clock) is one row, ``routing.board``, and every batch is applied inside one transaction
that first takes that row's lock (``SELECT ... FOR UPDATE``): claim the batch's events in the
inbox, apply the new ones to the board, write the board back with ``version + 1``, queue the
decisions in the outbox, commit. Instances therefore take turns, each starting from the board the
other left; an instance keeps the board in memory and re-reads it only when the version moved.
A SIGKILL mid-batch rolls the whole transaction back (the lock dies with the connection), the
partition's records are redelivered to whichever instance holds it next, and nothing was
published that the board does not contain. The same row is what a restart reads: queues and line
occupancy come back exactly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import asyncpg

from services.routing.desks import Registry, parse_registry
from tsunagu.db import migrate

SCHEMA = "routing"
MIGRATIONS = Path(__file__).parent / "migrations"


class VersionConflict(ValueError):
    """A registry version of that name exists with other content: versions are immutable."""


async def migrate_schema(pool: asyncpg.Pool) -> list[str]:
    return await migrate(pool, SCHEMA, MIGRATIONS, inbox_outbox=True)


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


async def lock_board(conn: asyncpg.Connection) -> tuple[int, str]:
    """Take the board's lock for this transaction; returns (version, state JSON)."""
    row = await conn.fetchrow(f"SELECT version, state FROM {SCHEMA}.board WHERE id = 1 FOR UPDATE")
    return int(row["version"]), row["state"]


async def read_board(pool: asyncpg.Pool) -> tuple[int, str]:
    """The last committed board, without waiting for a lock (for the live-state API)."""
    row = await pool.fetchrow(f"SELECT version, state FROM {SCHEMA}.board WHERE id = 1")
    return int(row["version"]), row["state"]


async def save_board(conn: asyncpg.Connection, version: int, clock: Any, state: str) -> None:
    await conn.execute(
        f"UPDATE {SCHEMA}.board SET version = $1, clock = $2, state = $3, updated_at = now() WHERE id = 1",
        version, clock, state,
    )
