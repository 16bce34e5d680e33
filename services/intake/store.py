"""intake's PostgreSQL: its inbox (every (source, id) ever accepted, with a digest of what it said),
its outbox, and who first reported each contact and referral id, with the organisations that may also
report a contact: named answering by its owner, or assigned it by routing (services/intake/ownership.py).

The events of one call — a request, or a part of a large one (``stored_in_parts`` in handlers.py) —
are judged, recorded and queued for publishing in one transaction, under a lock per contact and
referral id they name, so that two requests racing for one id are judged in turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from services.intake.domain import Canonical, Outcome, conflict_problem, differing
from services.intake.ownership import ContactClaim, ReferralClaim, judge
from tsunagu.db import INBOX_OUTBOX, migrate
from tsunagu.outbox import Outgoing, enqueue
from tsunagu.telemetry import traceparent_about

SCHEMA = "intake"
MIGRATIONS = Path(__file__).parent / "migrations"


async def migrate_schema(pool: asyncpg.Pool) -> list[str]:
    return await migrate(pool, SCHEMA, INBOX_OUTBOX, MIGRATIONS)


@dataclass
class Stored:
    new: set[tuple[str, str]] = field(default_factory=set)  # (source, id) accepted now
    settled: dict[int, Outcome] = field(default_factory=dict)  # refused by ownership or conflict, by index


async def store_new(pool: asyncpg.Pool, events: list[Canonical]) -> Stored:
    """Judge the events against who said what first, record the allowed ones not seen before and
    queue them for publishing, in one transaction.

    The same (source, id) as an earlier request is a duplicate when it says the same, a conflict
    naming the differing attributes when not.
    """
    if not events:
        return Stored()
    async with pool.acquire() as conn, conn.transaction():
        await _lock(conn, [f"c:{e.about_contact}" for e in events if e.about_contact is not None]
                    + [f"r:{e.referral_id}" for e in events if e.referral_id is not None])
        contacts, referrals = await _claims(conn, events)
        verdict = judge(events, contacts, referrals)
        await _write_claims(conn, verdict.new_contacts, verdict.new_grants, verdict.new_referrals)
        allowed = verdict.allowed
        rows = await conn.fetch(
            f"""INSERT INTO {SCHEMA}.inbox (source, id, type, fields)
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
                ON CONFLICT DO NOTHING RETURNING source, id""",
            [e.source for e in allowed], [e.id for e in allowed], [e.type for e in allowed],
            [json.dumps(dict(e.fields)) for e in allowed],
        )
        new = {(r["source"], r["id"]) for r in rows}
        settled = dict(verdict.settled)
        seen = [e for e in allowed if (e.source, e.id) not in new]
        if seen:
            earlier = {(r["source"], r["id"]): r["fields"] for r in await conn.fetch(
                f"SELECT source, id, fields FROM {SCHEMA}.inbox i JOIN unnest($1::text[], $2::text[]) AS u(s, d) "
                "ON i.source = u.s AND i.id = u.d", [e.source for e in seen], [e.id for e in seen])}
            for e in seen:
                stored = earlier.get((e.source, e.id))
                changed = differing(json.loads(stored), e.fields) if stored else []
                if changed:  # events stored before digests were kept compare as duplicates
                    settled[e.index] = Outcome(e.index, "conflict", e.id, e.source, e.type,
                                               (conflict_problem(changed),))
        await enqueue(conn, SCHEMA, [
            Outgoing(e.topic, e.key, e.value, e.traceparent or traceparent_about(e.contact_id, e.key),
                     every_partition=e.every_partition)
            for e in allowed if (e.source, e.id) in new
        ])
    return Stored(new, settled)


async def grant_assigned(pool: asyncpg.Pool, assignments: set[tuple[str, str]]) -> None:
    """Routing assigned these contacts to these organisations' desks, (contact, organisation): each
    organisation may now report its contact's answer, end, consultation and referral. Under the same
    per-contact locks as ``store_new``, taken in the same order; a contact intake never recorded (one
    reported before claims were kept) is left alone. Applying an assignment again changes nothing."""
    if not assignments:
        return
    async with pool.acquire() as conn, conn.transaction():
        await _lock(conn, [f"c:{cid}" for cid, _ in assignments])
        await _write_claims(conn, {}, assignments, {})


async def _lock(conn: asyncpg.Connection, keys: list[str]) -> None:
    """The transaction's advisory locks on these ids, always taken in sorted order (no deadlocks)."""
    if keys:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) WITH ORDINALITY "
            "AS u(k, n) ORDER BY n", sorted(set(keys)))


async def _claims(conn: asyncpg.Connection, events: list[Canonical]
                  ) -> tuple[dict[str, ContactClaim], dict[str, ReferralClaim]]:
    cids = list({e.about_contact for e in events if e.about_contact is not None})
    rids = list({e.referral_id for e in events if e.referral_id is not None})
    contacts = {r["contact_id"]: ContactClaim(r["owner"], set(r["grants"])) for r in await conn.fetch(
        f"SELECT contact_id, owner, grants FROM {SCHEMA}.contacts WHERE contact_id = ANY($1::text[])", cids)
    } if cids else {}
    referrals = {r["referral_id"]: ReferralClaim(r["owner"], json.loads(r["fields"])) for r in await conn.fetch(
        f"SELECT referral_id, owner, fields FROM {SCHEMA}.referrals WHERE referral_id = ANY($1::text[])", rids)
    } if rids else {}
    return contacts, referrals


async def _write_claims(conn: asyncpg.Connection, contacts: dict[str, str], grants: set[tuple[str, str]],
                        referrals: dict[str, ReferralClaim]) -> None:
    if contacts:
        await conn.execute(
            f"INSERT INTO {SCHEMA}.contacts (contact_id, owner) SELECT * FROM unnest($1::text[], $2::text[])",
            list(contacts), list(contacts.values()))
    if grants:
        await conn.execute(
            f"""UPDATE {SCHEMA}.contacts c SET grants = array(SELECT DISTINCT unnest(c.grants || g.orgs))
                FROM (SELECT contact_id, array_agg(org) AS orgs
                      FROM unnest($1::text[], $2::text[]) AS u(contact_id, org) GROUP BY contact_id) g
                WHERE c.contact_id = g.contact_id""",
            [g[0] for g in grants], [g[1] for g in grants])
    if referrals:
        await conn.execute(
            f"INSERT INTO {SCHEMA}.referrals (referral_id, owner, fields) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])",
            list(referrals), [r.owner for r in referrals.values()],
            [json.dumps(dict(r.fields)) for r in referrals.values()])
