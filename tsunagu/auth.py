"""Credentials: API keys of partners, receivers and the secretariat.

The one store every service authenticates against, in its own ``auth`` schema. Keys are shown
once when issued; only their SHA-256 is kept, and a revoked key stops working at once (every
request looks the key up).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from tsunagu.db import migrate
from tsunagu.speaker import Speaker

SCHEMA = "auth"
MIGRATIONS = Path(__file__).parent / "migrations" / "auth"
ROLES = ("partner", "secretariat", "receiver")
SECRETARIAT_ORG = "secretariat"


async def migrate_schema(pool: asyncpg.Pool) -> list[str]:
    return await migrate(pool, SCHEMA, MIGRATIONS)



@dataclass(frozen=True)
class Caller:
    key_id: str
    org_id: str
    role: str
    acts_for: frozenset[str] = frozenset()  # organisations a platform key reports for, besides its own
    backfill: bool = False  # may send events older than intake's horizon (a replay of a past period)


@dataclass(frozen=True)
class Credential:
    key_id: str
    org_id: str
    role: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None
    acts_for: tuple[str, ...] = ()
    backfill: bool = False


def hash_key(api_key: str) -> bytes:
    # Keys are 256-bit random, so a plain SHA-256 cannot be brute-forced; a slow hash would only
    # cost every request.
    return hashlib.sha256(api_key.encode()).digest()


async def issue_credential(pool: asyncpg.Pool, org_id: str, role: str, label: str | None = None, *,
                           acts_for: Iterable[str] = (), backfill: bool = False) -> tuple[str, str]:
    """Create a credential; returns (key_id, api_key). The key is shown once and never stored.

    ``acts_for`` and ``backfill`` are for partner keys only: a platform that reports for other
    organisations (their desks' answers), and a key that may replay past periods."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    acts_for = sorted(set(acts_for) - {org_id})
    if role != "partner" and (acts_for or backfill):
        raise ValueError("only a partner key may act for other organisations or back-fill past periods")
    key_id = secrets.token_hex(6)
    api_key = f"tsg_{key_id}_{secrets.token_urlsafe(32)}"
    await pool.execute(
        f"INSERT INTO {SCHEMA}.credentials (key_id, org_id, role, key_hash, label, acts_for, backfill) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        key_id, org_id, role, hash_key(api_key), label, acts_for, backfill,
    )
    return key_id, api_key


async def authenticate(pool: asyncpg.Pool, api_key: str) -> Caller | None:
    row = await pool.fetchrow(
        f"SELECT key_id, org_id, role, acts_for, backfill FROM {SCHEMA}.credentials "
        "WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_key(api_key),
    )
    if row is None:
        return None
    return Caller(row["key_id"], row["org_id"], row["role"], frozenset(row["acts_for"]), row["backfill"])


async def list_credentials(pool: asyncpg.Pool, org_id: str | None = None) -> list[Credential]:
    rows = await pool.fetch(
        f"SELECT key_id, org_id, role, label, created_at, revoked_at, acts_for, backfill FROM {SCHEMA}.credentials "
        "WHERE $1::text IS NULL OR org_id = $1 ORDER BY created_at, key_id",
        org_id,
    )
    return [Credential(**(dict(r) | {"acts_for": tuple(r["acts_for"])})) for r in rows]


async def revoke_credential(pool: asyncpg.Pool, key_id: str) -> bool:
    status: str = await pool.execute(
        f"UPDATE {SCHEMA}.credentials SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    return status.endswith(" 1")


async def partner_speakers(pool: asyncpg.Pool, org_ids: set[str]) -> dict[str, Speaker]:
    """The organisations among these that hold an active partner credential, with what their active
    keys together allow (the Kafka door has no key of its own: the source's organisation speaks)."""
    rows = await pool.fetch(
        f"SELECT org_id, array_agg(DISTINCT a) FILTER (WHERE a IS NOT NULL) AS acts_for, bool_or(backfill) AS backfill "
        f"FROM {SCHEMA}.credentials LEFT JOIN LATERAL unnest(acts_for) AS a ON true "
        "WHERE org_id = ANY($1::text[]) AND role = 'partner' AND revoked_at IS NULL GROUP BY org_id",
        list(org_ids),
    )
    return {r["org_id"]: Speaker(r["org_id"], frozenset(r["acts_for"] or ()), r["backfill"]) for r in rows}


def speaker_of(caller: Caller) -> Speaker:
    return Speaker(caller.org_id, caller.acts_for, caller.backfill)
