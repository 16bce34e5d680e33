"""referral's PostgreSQL: the directory, the referrals and their history, the audit log, the clock.

Every state change is written with its event into the outbox in the same transaction; a referral
row is locked (``FOR UPDATE``) while it changes, so a receiver's action and an escalation never
both apply to the same version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import asyncpg

from schemas.codes import ReceiverType, ReferralOutcome, ReferralReason, Urgency
from schemas.envelope import CloudEvent
from schemas.events import LegalBasis
from schemas.kafka import encode_value
from schemas.registry import event_type
from services.referral.directory import ContactPoint, Directory, Organization, Schedule, Service
from services.referral.domain import Change, Receiver, Referral, Status, prefecture_row
from tsunagu import topics
from tsunagu.db import INBOX_OUTBOX, migrate
from tsunagu.outbox import Outgoing, enqueue
from tsunagu.telemetry import traceparent_about

SCHEMA = "referral"
MIGRATIONS = Path(__file__).parent / "migrations"
SOURCE = "/tsunagu/referral"
S = SCHEMA


async def migrate_schema(pool: asyncpg.Pool) -> list[str]:
    return await migrate(pool, SCHEMA, INBOX_OUTBOX, MIGRATIONS)


# --- events ------------------------------------------------------------------------------------


def outgoing(change: Change) -> Outgoing:
    envelope = CloudEvent(
        specversion="1.0",
        id=change.id,
        source=SOURCE,
        type=event_type(change.type).type,
        time=change.time,
        subject=change.data.referral_id,
        partitionkey=change.data.referral_id,
        data=change.data.model_dump(mode="json", exclude_none=True),
    )
    # keyed by referral, traced by contact: the referral's steps stay in the contact's trace
    return Outgoing(topics.REFERRAL_EVENTS, change.data.referral_id, encode_value(envelope),
                    traceparent_about(change.data.contact_id, change.data.referral_id))


async def record_changes(conn: asyncpg.Connection, changes: list[tuple[Referral, Change]]) -> None:
    """History rows and outbox records for changes already applied to the referral rows."""
    if not changes:
        return
    await conn.executemany(
        f"INSERT INTO {S}.history (referral_id, version, id, type, at, data) VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        [
            (ref.referral_id, ref.version, c.id, c.type, c.time, c.data.model_dump_json(exclude_none=True))
            for ref, c in changes
        ],
    )
    await enqueue(conn, SCHEMA, [outgoing(c) for _, c in changes])


# --- referrals ---------------------------------------------------------------------------------

_COLUMNS = (
    "referral_id, contact_id, organisation_id, municipality, urgency, status, chain_ids, chain_types, "
    "chain_areas, position, receiver_id, deadline, escalations, version, legal_basis, reason, outcome, "
    "created_at, updated_at, need"
)


def _row_values(ref: Referral) -> tuple[Any, ...]:
    receiver = ref.receiver
    return (
        ref.referral_id,
        ref.contact_id,
        ref.organisation_id,
        ref.municipality,
        ref.urgency.value,
        ref.status.value,
        [r.id for r in ref.chain],
        [r.type.value for r in ref.chain],
        [r.area for r in ref.chain],
        ref.position,
        receiver.id if receiver else None,
        ref.deadline,
        ref.escalations,
        ref.version,
        ref.basis.model_dump_json(exclude_none=True) if ref.basis else None,
        ref.reason.value if ref.reason else None,
        ref.outcome.value if ref.outcome else None,
        ref.created_at,
        ref.updated_at,
        ref.need.value if ref.need else None,
    )


def referral_of(row: asyncpg.Record) -> Referral:
    chain = tuple(
        Receiver(i, ReceiverType(t), a)
        for i, t, a in zip(row["chain_ids"], row["chain_types"], row["chain_areas"], strict=True)
    )
    return Referral(
        referral_id=row["referral_id"],
        contact_id=row["contact_id"],
        organisation_id=row["organisation_id"],
        municipality=row["municipality"],
        urgency=Urgency(row["urgency"]),
        status=Status(row["status"]),
        chain=chain,
        position=row["position"],
        deadline=row["deadline"],
        escalations=row["escalations"],
        version=row["version"],
        basis=LegalBasis.model_validate_json(row["legal_basis"]) if row["legal_basis"] else None,
        reason=ReferralReason(row["reason"]) if row["reason"] else None,
        outcome=ReferralOutcome(row["outcome"]) if row["outcome"] else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        need=ReceiverType(row["need"]) if row["need"] else None,
    )


def _json_rows(refs: list[Referral]) -> str:
    names = [c.strip() for c in _COLUMNS.split(",")]
    rows = [dict(zip(names, _row_values(ref), strict=True)) for ref in refs]
    for row in rows:
        row["legal_basis"] = json.loads(row["legal_basis"]) if row["legal_basis"] else None
        for key in ("deadline", "created_at", "updated_at"):
            row[key] = row[key].isoformat() if row[key] else None
    return json.dumps(rows)


async def insert_new(conn: asyncpg.Connection, opened: list[tuple[Referral, Change]]) -> list[tuple[Referral, Change]]:
    """Insert referrals not known yet (by id), in one statement; returns those inserted, whose events
    are then recorded."""
    if not opened:
        return []
    inserted = {
        r["referral_id"]
        for r in await conn.fetch(
            f"INSERT INTO {S}.referral ({_COLUMNS}) SELECT {_COLUMNS} "
            f"FROM jsonb_populate_recordset(NULL::{S}.referral, $1::jsonb) "
            "ON CONFLICT (referral_id) DO NOTHING RETURNING referral_id",
            _json_rows([ref for ref, _ in opened]),
        )
    }
    first: dict[str, tuple[Referral, Change]] = {}
    for ref, change in opened:  # the same id twice in one batch: the first one counts
        if ref.referral_id in inserted:
            first.setdefault(ref.referral_id, (ref, change))
    return list(first.values())


async def stored_requests(conn: asyncpg.Connection, referral_ids: Iterable[str]) -> dict[str, tuple[Referral, bool]]:
    """The stored referrals with these ids, each with whether its ``need`` was recorded (rows written
    before migration 002 did not record it)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS}, need_recorded FROM {S}.referral WHERE referral_id = ANY($1::text[])",
        sorted(set(referral_ids)),
    )
    return {r["referral_id"]: (referral_of(r), r["need_recorded"]) for r in rows}


_MUTABLE = ("status", "position", "receiver_id", "deadline", "escalations", "version", "reason", "outcome",
            "updated_at")


async def update(conn: asyncpg.Connection, *refs: Referral) -> None:
    """Write the new state of referrals locked in this transaction (one statement for all)."""
    if not refs:
        return
    assignments = ", ".join(f"{c} = v.{c}" for c in _MUTABLE)
    await conn.execute(
        f"UPDATE {S}.referral r SET {assignments} "
        f"FROM jsonb_populate_recordset(NULL::{S}.referral, $1::jsonb) v WHERE r.referral_id = v.referral_id",
        _json_rows(list(refs)),
    )


async def locked(conn: asyncpg.Connection, referral_id: str) -> Referral | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM {S}.referral WHERE referral_id = $1 FOR UPDATE", referral_id)
    return referral_of(row) if row else None


async def get(conn: asyncpg.Connection | asyncpg.Pool, referral_id: str) -> Referral | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM {S}.referral WHERE referral_id = $1", referral_id)
    return referral_of(row) if row else None


async def listing(
    conn: asyncpg.Connection, receiver_id: str | None, status: str | None, limit: int, after: str | None
) -> list[Referral]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM {S}.referral WHERE ($1::text IS NULL OR receiver_id = $1) "
        "AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR referral_id > $3) "
        "ORDER BY referral_id LIMIT $4",
        receiver_id, status, after, limit,
    )
    return [referral_of(r) for r in rows]


async def history(conn: asyncpg.Connection, referral_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT version, id, type, at, data FROM {S}.history WHERE referral_id = $1 ORDER BY version", referral_id
    )
    return [
        {"version": r["version"], "id": r["id"], "type": r["type"], "time": r["at"], "data": json.loads(r["data"])}
        for r in rows
    ]


async def due(conn: asyncpg.Connection, now: datetime, limit: int = 500) -> list[Referral]:
    """Referrals past their deadline, locked; SKIP LOCKED lets several instances scan side by side."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM {S}.referral WHERE status IN ('requested', 'received') AND deadline <= $1 "
        "ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED",
        now, limit,
    )
    return [referral_of(r) for r in rows]


AuditOutcome = Literal["allowed", "denied", "refused"]


async def audit(conn: asyncpg.Connection | asyncpg.Pool, key_id: str, org_id: str, role: str, action: str,
                referral_ids: Iterable[str | None], basis: str, *, outcome: AuditOutcome = "allowed",
                http_status: int = 200) -> None:
    """An access record: what was allowed, and what was denied (403, 404) or refused (409, 422). Its
    time is the database's wall clock: when someone read is a fact of the real world, not of event
    time. ``referral_ids`` must be valid ids (never text a caller made up: see http.valid_id)."""
    await conn.executemany(
        f"INSERT INTO {S}.audit_log (key_id, org_id, role, action, referral_id, basis, outcome, http_status) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [(key_id, org_id, role, action, rid, basis, outcome, http_status) for rid in referral_ids],
    )


async def audit_entries(pool: asyncpg.Pool, referral_id: str | None = None) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        f"SELECT seq, at, key_id, org_id, role, action, referral_id, basis, outcome, http_status FROM {S}.audit_log "
        "WHERE $1::text IS NULL OR referral_id = $1 ORDER BY seq",
        referral_id,
    )
    return [dict(r) for r in rows]


# --- the clock ---------------------------------------------------------------------------------


async def advance_watermark(conn: asyncpg.Connection, latest: datetime) -> None:
    """Move the event-time clock forward (never back). An event dated in the future (a partner's
    skewed clock) moves it at most to the wall clock plus five minutes, so it cannot expire every
    deadline at once."""
    await conn.execute(
        f"INSERT INTO {S}.clock (id, watermark) VALUES (1, LEAST($1, now() + interval '5 minutes')) "
        f"ON CONFLICT (id) DO UPDATE SET watermark = GREATEST({S}.clock.watermark, EXCLUDED.watermark)",
        latest,
    )


async def watermark(conn: asyncpg.Connection | asyncpg.Pool) -> datetime | None:
    return await conn.fetchval(f"SELECT watermark FROM {S}.clock WHERE id = 1")


# --- the directory -----------------------------------------------------------------------------


async def receivers_for(conn: asyncpg.Connection, municipalities: set[str]) -> dict[str, list[Receiver]]:
    """For each municipality, the directory's services covering it or its whole prefecture."""
    if not municipalities:
        return {}
    wanted = {m: (m, prefecture_row(m)) for m in municipalities}
    areas = sorted({a for pair in wanted.values() for a in pair})
    rows = await conn.fetch(
        f"SELECT s.organization_id, s.receiver_type, a.area FROM {S}.service_area a "
        f"JOIN {S}.service s ON s.id = a.service_id WHERE a.area = ANY($1::text[])",
        areas,
    )
    by_area: dict[str, list[Receiver]] = {}
    for r in rows:
        by_area.setdefault(r["area"], []).append(Receiver(r["organization_id"], ReceiverType(r["receiver_type"]),
                                                          r["area"]))
    return {m: [*by_area.get(own, []), *by_area.get(pref, [])] for m, (own, pref) in wanted.items()}


async def directory_size(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {S}.organization"))


async def load_directory(pool: asyncpg.Pool, directory: Directory, *, only_if_empty: bool = False) -> int:
    """Replace the directory with ``directory`` in one transaction; returns the organisations loaded.

    ``only_if_empty`` loads nothing when a directory is already there (first start of the service);
    an advisory lock keeps two instances starting together from both loading.
    """
    orgs = directory.organizations
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('referral.directory'))")
        if only_if_empty and await directory_size(conn) > 0:
            return 0
        await conn.execute(f"DELETE FROM {S}.organization")  # cascades to contacts, services, areas, schedules
        await conn.copy_records_to_table(
            "organization", schema_name=SCHEMA, columns=["id", "name", "receiver_type", "demo"],
            records=[(o.id, o.name, o.receiver_type.value, o.demo) for o in orgs],
        )
        await conn.copy_records_to_table(
            "contact", schema_name=SCHEMA, columns=["organization_id", "kind", "value"],
            records=[(o.id, c.kind, c.value) for o in orgs for c in o.contacts],
        )
        services = [(o, s) for o in orgs for s in o.services]
        await conn.copy_records_to_table(
            "service", schema_name=SCHEMA, columns=["id", "organization_id", "name", "receiver_type"],
            records=[(s.id, o.id, s.name, s.receiver_type.value) for o, s in services],
        )
        await conn.copy_records_to_table(
            "service_area", schema_name=SCHEMA, columns=["service_id", "area"],
            records=sorted({(s.id, a) for _, s in services for a in s.areas}),
        )
        await conn.copy_records_to_table(
            "schedule", schema_name=SCHEMA, columns=["service_id", "weekdays", "opens", "closes"],
            records=[(s.id, h.weekdays, h.opens, h.closes) for _, s in services for h in s.schedules],
        )
    return len(orgs)


async def export_directory(pool: asyncpg.Pool) -> Directory:
    async with pool.acquire() as conn:
        orgs = await conn.fetch(f"SELECT id, name, receiver_type, demo FROM {S}.organization ORDER BY id")
        contacts = await conn.fetch(f"SELECT organization_id, kind, value FROM {S}.contact ORDER BY 1, 2, 3")
        services = await conn.fetch(f"SELECT id, organization_id, name, receiver_type FROM {S}.service ORDER BY id")
        areas = await conn.fetch(f"SELECT service_id, area FROM {S}.service_area ORDER BY 1, 2")
        schedules = await conn.fetch(f"SELECT service_id, weekdays, opens, closes FROM {S}.schedule ORDER BY 1, 2, 3")
    by_org_contacts: dict[str, list[ContactPoint]] = {}
    for c in contacts:
        by_org_contacts.setdefault(c["organization_id"], []).append(ContactPoint(kind=c["kind"], value=c["value"]))
    by_service_areas: dict[str, list[str]] = {}
    for a in areas:
        by_service_areas.setdefault(a["service_id"], []).append(a["area"])
    by_service_hours: dict[str, list[Schedule]] = {}
    for h in schedules:
        by_service_hours.setdefault(h["service_id"], []).append(
            Schedule(weekdays=h["weekdays"], opens=h["opens"], closes=h["closes"])
        )
    by_org_services: dict[str, list[Service]] = {}
    for s in services:
        by_org_services.setdefault(s["organization_id"], []).append(
            Service.model_construct(
                id=s["id"], name=s["name"], receiver_type=ReceiverType(s["receiver_type"]),
                areas=by_service_areas.get(s["id"], []), schedules=by_service_hours.get(s["id"], []),
            )
        )
    return Directory.model_construct(
        version=1,
        organizations=[
            Organization.model_construct(
                id=o["id"], name=o["name"], receiver_type=ReceiverType(o["receiver_type"]), demo=o["demo"],
                contacts=by_org_contacts.get(o["id"], []), services=by_org_services.get(o["id"], []),
            )
            for o in orgs
        ],
    )
