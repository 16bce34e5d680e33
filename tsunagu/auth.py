"""Credentials: API keys of partners, receivers and the secretariat.

The one store every service authenticates against, in its own ``auth`` schema. Keys are shown
once when issued; only their SHA-256 is kept, and a revoked key stops working at once (every
request looks the key up).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from tsunagu.db import migrate

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


@dataclass(frozen=True)
class Credential:
    key_id: str
    org_id: str
    role: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


def hash_key(api_key: str) -> bytes:
    # Keys are 256-bit random, so a plain SHA-256 cannot be brute-forced; a slow hash would only
    # cost every request.
    return hashlib.sha256(api_key.encode()).digest()


async def issue_credential(pool: asyncpg.Pool, org_id: str, role: str, label: str | None = None) -> tuple[str, str]:
    """Create a credential; returns (key_id, api_key). The key is shown once and never stored."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key_id = secrets.token_hex(6)
    api_key = f"tsg_{key_id}_{secrets.token_urlsafe(32)}"
    await pool.execute(
        f"INSERT INTO {SCHEMA}.credentials (key_id, org_id, role, key_hash, label) VALUES ($1, $2, $3, $4, $5)",
        key_id, org_id, role, hash_key(api_key), label,
    )
    return key_id, api_key


async def authenticate(pool: asyncpg.Pool, api_key: str) -> Caller | None:
    row = await pool.fetchrow(
        f"SELECT key_id, org_id, role FROM {SCHEMA}.credentials WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_key(api_key),
    )
    return Caller(row["key_id"], row["org_id"], row["role"]) if row else None


async def list_credentials(pool: asyncpg.Pool, org_id: str | None = None) -> list[Credential]:
    rows = await pool.fetch(
        f"SELECT key_id, org_id, role, label, created_at, revoked_at FROM {SCHEMA}.credentials "
        "WHERE $1::text IS NULL OR org_id = $1 ORDER BY created_at, key_id",
        org_id,
    )
    return [Credential(**dict(r)) for r in rows]


async def revoke_credential(pool: asyncpg.Pool, key_id: str) -> bool:
    status = await pool.execute(
        f"UPDATE {SCHEMA}.credentials SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    return status.endswith(" 1")


async def partner_orgs_active(pool: asyncpg.Pool, org_ids: set[str]) -> set[str]:
    """Which of these organisations hold an active partner credential."""
    rows = await pool.fetch(
        f"SELECT DISTINCT org_id FROM {SCHEMA}.credentials "
        "WHERE org_id = ANY($1::text[]) AND role = 'partner' AND revoked_at IS NULL",
        list(org_ids),
    )
    return {r["org_id"] for r in rows}
