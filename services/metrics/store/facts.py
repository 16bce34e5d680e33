"""Writing facts: the order-independent upserts that combine a batch's facts with the stored ones.

They apply domain.facts' rules column by column: a slot's values are replaced only when the incoming
slot wins (earlier or later by (event time, tie-break)). A live batch runs them inside the rollups'
statements (store.rollups); a catch-up batch runs them alone (``apply_facts_only``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.metrics.domain.facts import ConsultationFacts, ContactFacts, Facts, ReferralFacts, SeatEvent
from services.metrics.store.sql import SCHEMA

# (column, SQL type) per table, in row order
CONTACT_COLUMNS: list[tuple[str, str]] = [
    ("contact_id", "text"),
    ("received_at", "timestamptz"), ("received_tb", "text"), ("channel", "text"), ("caller_key", "text"),
    ("prefecture", "text"),
    ("chosen_at", "timestamptz"), ("chosen_tb", "text"), ("field", "text"),
    ("answered_at", "timestamptz"), ("answered_tb", "text"), ("wait_seconds", "float8"), ("desk_id", "text"),
    ("organisation_id", "text"),
    ("abandoned_at", "timestamptz"), ("abandoned_tb", "text"), ("abandon_stage", "text"), ("abandon_wait", "float8"),
    ("ended_at", "timestamptz"), ("ended_tb", "text"), ("talk_seconds", "float8"),
    ("assigned_at", "timestamptz"), ("assigned_tb", "text"), ("assigned_desk", "text"), ("assigned_org", "text"),
    ("assigned_field", "text"), ("assigned_channel", "text"), ("assigned_seat", "int4"), ("assigned_capacity", "int4"),
    ("queued_at", "timestamptz"), ("overflow_tier", "int4"),
    ("triaged_at", "timestamptz"), ("triaged_tb", "text"), ("risk", "text"), ("transferred_at", "timestamptz"),
]
# slot -> (columns, which event wins)
CONTACT_SLOTS: list[tuple[str, list[str], str]] = [
    ("received", ["received_at", "received_tb", "channel", "caller_key", "prefecture"], "earliest"),
    ("chosen", ["chosen_at", "chosen_tb", "field"], "latest"),
    ("answered", ["answered_at", "answered_tb", "wait_seconds", "desk_id", "organisation_id"], "earliest"),
    ("abandoned", ["abandoned_at", "abandoned_tb", "abandon_stage", "abandon_wait"], "earliest"),
    ("ended", ["ended_at", "ended_tb", "talk_seconds"], "latest"),
    ("assigned", ["assigned_at", "assigned_tb", "assigned_desk", "assigned_org", "assigned_field", "assigned_channel",
                  "assigned_seat", "assigned_capacity"], "latest"),
    ("triaged", ["triaged_at", "triaged_tb", "risk"], "latest"),
]
CONSULTATION_COLUMNS: list[tuple[str, str]] = [
    ("contact_id", "text"), ("recorded_at", "timestamptz"), ("recorded_tb", "text"), ("organisation_id", "text"),
    ("desk_id", "text"), ("field", "text"), ("categories", "text"), ("age_band", "text"), ("risk", "text"),
    ("referral_needed", "bool"),
]
REFERRAL_COLUMNS: list[tuple[str, str]] = [
    ("referral_id", "text"), ("contact_id", "text"),
    ("requested_at", "timestamptz"), ("requested_tb", "text"), ("organisation_id", "text"), ("municipality", "text"),
    ("need", "text"), ("urgency", "text"),
    ("state_at", "timestamptz"), ("state_rank", "int4"), ("state_tb", "text"), ("state", "text"),
    ("receiver_at", "timestamptz"), ("receiver_tb", "text"), ("receiver_type", "text"),
    ("acknowledged_at", "timestamptz"), ("escalated_at", "timestamptz"),
]


def _slot_sets(table: str, columns: list[str], rule: str, key_width: int = 2) -> list[str]:
    op = "<" if rule == "earliest" else ">"
    new = ", ".join(f"EXCLUDED.{c}" for c in columns[:key_width])
    old = ", ".join(f"{table}.{c}" for c in columns[:key_width])
    wins = f"(EXCLUDED.{columns[0]} IS NOT NULL AND ({table}.{columns[0]} IS NULL OR ({new}) {op} ({old})))"
    return [f"{c} = CASE WHEN {wins} THEN EXCLUDED.{c} ELSE {table}.{c} END" for c in columns]


def _upsert(table: str, columns: list[tuple[str, str]], key: str, sets: list[str], select: str | None = None) -> str:
    names = ", ".join(c for c, _ in columns)
    params = ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(columns, start=1))
    return (
        f'INSERT INTO "{SCHEMA}".{table} AS {table} ({names}) '
        f"SELECT {select or '*'} FROM unnest({params}) AS u({names}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {', '.join(sets)}"
    )


CONTACTS_UPSERT = _upsert(
    "contacts", CONTACT_COLUMNS, "contact_id",
    [s for _, cols, rule in CONTACT_SLOTS for s in _slot_sets("contacts", cols, rule)]
    + [
        "queued_at = LEAST(contacts.queued_at, EXCLUDED.queued_at)",
        "overflow_tier = GREATEST(contacts.overflow_tier, EXCLUDED.overflow_tier)",
        "transferred_at = LEAST(contacts.transferred_at, EXCLUDED.transferred_at)",
    ],
)
CONSULTATIONS_UPSERT = _upsert(
    "consultations", CONSULTATION_COLUMNS, "contact_id",
    _slot_sets("consultations", [c for c, _ in CONSULTATION_COLUMNS[1:]], "latest"),
    select="contact_id, recorded_at, recorded_tb, organisation_id, desk_id, field, "
    "string_to_array(categories, ','), age_band, risk, referral_needed",
)
REFERRALS_UPSERT = _upsert(
    "referrals", REFERRAL_COLUMNS, "referral_id",
    ["contact_id = LEAST(referrals.contact_id, EXCLUDED.contact_id)"]
    + _slot_sets("referrals", ["requested_at", "requested_tb", "organisation_id", "municipality", "need", "urgency"],
                 "earliest")
    + _slot_sets("referrals", ["state_at", "state_rank", "state_tb", "state"], "latest", key_width=3)
    + _slot_sets("referrals", ["receiver_at", "receiver_tb", "receiver_type"], "latest")
    + [
        "acknowledged_at = LEAST(referrals.acknowledged_at, EXCLUDED.acknowledged_at)",
        "escalated_at = LEAST(referrals.escalated_at, EXCLUDED.escalated_at)",
    ],
)


SEAT_EVENT_COLUMNS: list[tuple[str, str]] = [
    ("tb", "text"), ("contact_id", "text"), ("at", "timestamptz"), ("kind", "text"), ("desk", "text"),
    ("organisation", "text"), ("seat", "int4"), ("capacity", "int4"), ("channel", "text"),
]
# a seat event is its event: a second copy is the same row
SEAT_EVENTS_INSERT = (
    f'INSERT INTO "{SCHEMA}".seat_events ({", ".join(c for c, _ in SEAT_EVENT_COLUMNS)}) '
    f'SELECT * FROM unnest({", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(SEAT_EVENT_COLUMNS, start=1))}) '
    "ON CONFLICT (tb) DO NOTHING"
)


def _flat(slot: tuple[Any, ...] | None, width: int) -> list[Any]:
    return list(slot) if slot is not None else [None] * width


def contact_row(f: ContactFacts) -> list[Any]:
    return [
        f.contact_id, *_flat(f.received, 5), *_flat(f.chosen, 3), *_flat(f.answered, 5), *_flat(f.abandoned, 4),
        *_flat(f.ended, 3), *_flat(f.assigned, 8), f.queued_at, f.overflow_tier, *_flat(f.triaged, 3),
        f.transferred_at,
    ]


def consultation_row(f: ConsultationFacts) -> list[Any]:
    r = _flat(f.recorded, 9)
    r[5] = ",".join(r[5]) if r[5] is not None else None
    return [f.contact_id, *r]


def referral_row(f: ReferralFacts) -> list[Any]:
    state = _flat(f.state, 4)  # (at, rank, tb, state)
    return [
        f.referral_id, f.contact_id, *_flat(f.requested, 6), *state, *_flat(f.receiver, 3),
        f.acknowledged_at, f.escalated_at,
    ]


def seat_event_row(e: SeatEvent) -> list[Any]:
    return [e.tb, e.contact_id, e.at, e.kind, e.desk, e.organisation, e.seat, e.capacity, e.channel]


def _columns(rows: Sequence[list[Any]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)] if rows else [[] for _ in range(width)]


@dataclass(frozen=True)
class FactRows:
    """A batch's facts as the upserts' column arrays (sorted keys: concurrent consumers then lock rows
    in the same order, so no deadlocks). Built in Python apart from the transaction, so the next batch
    can be prepared while this one's statements run."""

    contacts: list[list[Any]] | None
    consultations: list[list[Any]] | None
    referrals: list[list[Any]] | None
    seat_events: list[list[Any]] | None = None


def fact_rows(facts: Facts) -> FactRows:
    def columns(table: dict[str, Any], row: Callable[[Any], list[Any]], width: int) -> list[list[Any]] | None:
        return _columns([row(table[k]) for k in sorted(table)], width) if table else None

    return FactRows(columns(facts.contacts, contact_row, len(CONTACT_COLUMNS)),
                    columns(facts.consultations, consultation_row, len(CONSULTATION_COLUMNS)),
                    columns(facts.referrals, referral_row, len(REFERRAL_COLUMNS)),
                    columns(facts.seat_events, seat_event_row, len(SEAT_EVENT_COLUMNS)))



async def apply_facts_only(conn: asyncpg.Connection, rows: FactRows) -> None:
    """Catch-up: combine a batch's facts with the stored ones, leaving the rollups for the derive."""
    if rows.contacts is not None:
        await conn.execute(CONTACTS_UPSERT, *rows.contacts)
    if rows.consultations is not None:
        await conn.execute(CONSULTATIONS_UPSERT, *rows.consultations)
    if rows.referrals is not None:
        await conn.execute(REFERRALS_UPSERT, *rows.referrals)
    await apply_seat_events(conn, rows)


async def apply_seat_events(conn: asyncpg.Connection, rows: FactRows) -> None:
    """Add a batch's seat events to the set (live and catch-up alike: no rollup is kept of them)."""
    if rows.seat_events is not None:
        await conn.execute(SEAT_EVENTS_INSERT, *rows.seat_events)
