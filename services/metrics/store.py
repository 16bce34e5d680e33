"""metrics' PostgreSQL: the facts tables (schema ``metrics``), the order-independent upserts that
combine a batch's facts with what is stored, and the SQL that turns facts into figures.

The upserts apply domain.py's rules column by column: a slot's values are replaced only when the
incoming slot wins (earlier or later by (event time, tie-break)). All figures are computed here
over the facts, for any from–to, so nothing is pre-aggregated that a late event could invalidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.metrics.domain import (
    ConsultationFacts,
    ContactFacts,
    Facts,
    Period,
    ReferralFacts,
)
from tsunagu.db import migrate

SCHEMA = "metrics"
MIGRATIONS = Path(__file__).parent / "migrations"
TZ = "Asia/Tokyo"


async def migrate_schema(pool: asyncpg.Pool) -> list[str]:
    return await migrate(pool, SCHEMA, MIGRATIONS, inbox_outbox=True)


# --- writing facts --------------------------------------------------------------------------

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
    ("assigned_field", "text"),
    ("queued_at", "timestamptz"), ("overflow_tier", "int4"),
]
# slot -> (columns, which event wins)
CONTACT_SLOTS: list[tuple[str, list[str], str]] = [
    ("received", ["received_at", "received_tb", "channel", "caller_key", "prefecture"], "earliest"),
    ("chosen", ["chosen_at", "chosen_tb", "field"], "latest"),
    ("answered", ["answered_at", "answered_tb", "wait_seconds", "desk_id", "organisation_id"], "earliest"),
    ("abandoned", ["abandoned_at", "abandoned_tb", "abandon_stage", "abandon_wait"], "earliest"),
    ("ended", ["ended_at", "ended_tb", "talk_seconds"], "latest"),
    ("assigned", ["assigned_at", "assigned_tb", "assigned_desk", "assigned_org", "assigned_field"], "latest"),
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


def _flat(slot: tuple[Any, ...] | None, width: int) -> list[Any]:
    return list(slot) if slot is not None else [None] * width


def contact_row(f: ContactFacts) -> list[Any]:
    return [
        f.contact_id, *_flat(f.received, 5), *_flat(f.chosen, 3), *_flat(f.answered, 5), *_flat(f.abandoned, 4),
        *_flat(f.ended, 3), *_flat(f.assigned, 5), f.queued_at, f.overflow_tier,
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


def _columns(rows: Sequence[list[Any]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)] if rows else [[] for _ in range(width)]


async def apply_facts(conn: asyncpg.Connection, facts: Facts) -> None:
    """Combine a batch's facts with the stored ones: one set-based statement per table."""
    # Sorted keys: concurrent consumers then lock rows in the same order (no deadlocks).
    if facts.contacts:
        rows = [contact_row(facts.contacts[k]) for k in sorted(facts.contacts)]
        await conn.execute(CONTACTS_UPSERT, *_columns(rows, len(CONTACT_COLUMNS)))
    if facts.consultations:
        rows = [consultation_row(facts.consultations[k]) for k in sorted(facts.consultations)]
        await conn.execute(CONSULTATIONS_UPSERT, *_columns(rows, len(CONSULTATION_COLUMNS)))
    if facts.referrals:
        rows = [referral_row(facts.referrals[k]) for k in sorted(facts.referrals)]
        await conn.execute(REFERRALS_UPSERT, *_columns(rows, len(REFERRAL_COLUMNS)))


# --- reading figures ------------------------------------------------------------------------

_HOUR = "extract(hour FROM {t} AT TIME ZONE 'Asia/Tokyo')::int"
_DAY = "to_char({t} AT TIME ZONE 'Asia/Tokyo', 'YYYY-MM-DD')"

CONTACT_DIMENSIONS = {
    "field": "field", "organisation": "organisation", "desk": "desk", "channel": "channel",
    "prefecture": "prefecture", "hour": _HOUR.format(t="received_at"), "day": _DAY.format(t="received_at"),
}
CONSULTATION_DIMENSIONS = {
    "field": "field", "organisation": "organisation_id", "desk": "desk_id", "age_band": "age_band",
    "risk": "risk", "hour": _HOUR.format(t="recorded_at"), "day": _DAY.format(t="recorded_at"),
}
REFERRAL_DIMENSIONS = {
    "receiver_type": "coalesce(receiver_type, need)", "state": "state", "urgency": "urgency",
    "organisation": "organisation_id", "day": _DAY.format(t="requested_at"),
}

# A contact as the secretariat counts it: its field is the one chosen in the menu (else the one
# routing assigned), its organisation and desk the ones that answered (else the last assigned).
CONTACTS_VIEW = f"""
    SELECT received_at, channel, prefecture, caller_key,
           coalesce(field, assigned_field) AS field,
           coalesce(organisation_id, assigned_org) AS organisation,
           coalesce(desk_id, assigned_desk) AS desk,
           answered_at IS NOT NULL AS connected, answered_at, wait_seconds, talk_seconds,
           CASE WHEN answered_at IS NULL THEN abandon_stage END AS abandon_stage, abandon_wait,
           overflow_tier IS NOT NULL AS overflowed
      FROM "{SCHEMA}".contacts
     WHERE received_at >= $1 AND received_at < $2
       AND ($3::text IS NULL OR channel = $3)
       AND ($4::text IS NULL OR coalesce(organisation_id, assigned_org) = $4)
"""

ANSWER_RATE_AGGREGATES = """
    count(*) AS attempts,
    count(*) FILTER (WHERE connected) AS connected,
    count(*) FILTER (WHERE abandon_stage IS NOT NULL) AS abandoned,
    count(*) FILTER (WHERE abandon_stage = 'ivr') AS abandoned_ivr,
    count(*) FILTER (WHERE abandon_stage = 'queue') AS abandoned_queue,
    count(*) FILTER (WHERE abandon_stage = 'ringing') AS abandoned_ringing,
    count(*) FILTER (WHERE overflowed) AS overflowed,
    count(DISTINCT caller_key) AS callers,
    count(DISTINCT caller_key) FILTER (WHERE connected) AS callers_connected
"""


def _grouped(view: str, aggregates: str, key: str | None) -> str:
    if key is None:
        return f"SELECT NULL AS key, true AS is_total, {aggregates} FROM ({view}) v"
    return (
        f"SELECT {key} AS key, GROUPING({key}) = 1 AS is_total, {aggregates} FROM ({view}) v "
        f"GROUP BY GROUPING SETS (({key}), ()) ORDER BY is_total DESC, key NULLS LAST"
    )


def _split(rows: list[asyncpg.Record]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    totals: dict[str, Any] = {}
    groups: list[dict[str, Any]] = []
    for row in rows:
        values = {k: v for k, v in dict(row).items() if k not in ("is_total",)}
        if row["is_total"]:
            values.pop("key")
            totals = values
        else:
            groups.append(values)
    return totals, groups


async def answer_rate(
    conn: asyncpg.Connection | asyncpg.Pool, period: Period, group_by: str | None,
    channel: str | None = "phone", organisation: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    key = CONTACT_DIMENSIONS[group_by] if group_by else None
    sql = _grouped(CONTACTS_VIEW, ANSWER_RATE_AGGREGATES, key)
    return _split(await conn.fetch(sql, period.start, period.end, channel, organisation))


def _within_aggregates(within: list[int]) -> str:
    parts = [
        "count(*) AS attempts",
        "count(*) FILTER (WHERE connected) AS connected",
        "(avg(wait_seconds::numeric) FILTER (WHERE connected))::float8 AS wait_mean",
        "percentile_cont(ARRAY[0.5, 0.9, 0.95]) WITHIN GROUP (ORDER BY wait_seconds) FILTER (WHERE connected)"
        " AS wait_p",
        "(avg(talk_seconds::numeric) FILTER (WHERE connected))::float8 AS talk_mean",
        "percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY talk_seconds) FILTER (WHERE connected) AS talk_p",
        "count(*) FILTER (WHERE abandon_stage = 'queue') AS abandoned_queue",
        "percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY abandon_wait) FILTER (WHERE abandon_stage = 'queue')"
        " AS abandon_wait_p",
    ]
    parts += [f"count(*) FILTER (WHERE connected AND wait_seconds <= {int(n)}) AS within_{int(n)}" for n in within]
    return ", ".join(parts)


async def waits(
    conn: asyncpg.Connection | asyncpg.Pool, period: Period, group_by: str | None, within: list[int],
    channel: str | None = "phone", organisation: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    key = CONTACT_DIMENSIONS[group_by] if group_by else None
    sql = _grouped(CONTACTS_VIEW, _within_aggregates(within), key)
    return _split(await conn.fetch(sql, period.start, period.end, channel, organisation))


CONSULTATIONS_VIEW = f"""
    SELECT * FROM "{SCHEMA}".consultations
     WHERE recorded_at >= $1 AND recorded_at < $2 AND ($3::text IS NULL OR organisation_id = $3)
"""


async def consultations(
    conn: asyncpg.Connection | asyncpg.Pool, period: Period, group_by: str | None, organisation: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[tuple[str, int]]]]:
    """(totals, groups, breakdowns): breakdowns ranks categories, age bands and risk levels."""
    aggregates = (
        "count(*) AS consultations, count(*) FILTER (WHERE referral_needed) AS referral_needed, "
        "count(*) FILTER (WHERE risk IN ('high', 'imminent')) AS high_risk"
    )
    key = CONSULTATION_DIMENSIONS[group_by] if group_by else None
    args = (period.start, period.end, organisation)
    totals, groups = _split(await conn.fetch(_grouped(CONSULTATIONS_VIEW, aggregates, key), *args))
    breakdowns: dict[str, list[tuple[str, int]]] = {}
    for name, expr in (("categories", "unnest(categories)"), ("age_bands", "age_band"), ("risks", "risk")):
        rows = await conn.fetch(
            f"SELECT code, count(*) AS n FROM (SELECT {expr} AS code FROM ({CONSULTATIONS_VIEW}) v) c "
            "GROUP BY code ORDER BY n DESC, code", *args,
        )
        breakdowns[name] = [(r["code"], r["n"]) for r in rows]
    return totals, groups, breakdowns


REFERRALS_VIEW = f"""
    SELECT *, extract(epoch FROM acknowledged_at - requested_at) AS ack_seconds
      FROM "{SCHEMA}".referrals
     WHERE requested_at >= $1 AND requested_at < $2 AND ($3::text IS NULL OR organisation_id = $3)
"""
REFERRAL_AGGREGATES = """
    count(*) AS referrals,
    count(DISTINCT contact_id) AS contacts,
    count(*) FILTER (WHERE acknowledged_at IS NOT NULL) AS acknowledged,
    percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY ack_seconds) AS ack_p,
    count(*) FILTER (WHERE escalated_at IS NOT NULL) AS escalated,
    count(*) FILTER (WHERE state IN ('completed', 'failed', 'rejected', 'cancelled')) AS closed,
    count(*) FILTER (WHERE state = 'completed') AS completed
"""


async def referrals(
    conn: asyncpg.Connection | asyncpg.Pool, period: Period, group_by: str | None, organisation: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    key = REFERRAL_DIMENSIONS[group_by] if group_by else None
    return _split(await conn.fetch(_grouped(REFERRALS_VIEW, REFERRAL_AGGREGATES, key),
                                   period.start, period.end, organisation))


# --- capacity planning inputs ----------------------------------------------------------------


async def arrivals_by_field_and_hour(conn: Any, period: Period) -> list[asyncpg.Record]:
    """Phone attempts per chosen field and hour of day (Japan time)."""
    return await conn.fetch(
        f"SELECT field, {_HOUR.format(t='received_at')} AS hour, count(*) AS attempts, "
        "count(*) FILTER (WHERE connected) AS connected "
        f"FROM ({CONTACTS_VIEW}) v WHERE field IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
        period.start, period.end, "phone", None,
    )


async def service_by_field(conn: Any, period: Period) -> list[asyncpg.Record]:
    """Per field: mean talk time; abandonments in the queue and the total time callers spent waiting
    (answered or not) — the exponential patience estimate is abandonments / waiting time."""
    return await conn.fetch(
        f"""SELECT field,
                   (avg(talk_seconds::numeric) FILTER (WHERE connected AND talk_seconds IS NOT NULL))::float8
                     AS talk_mean,
                   count(*) FILTER (WHERE abandon_stage IN ('queue', 'ringing')) AS abandoned,
                   (coalesce(sum(wait_seconds::numeric) FILTER (WHERE connected), 0)
                     + coalesce(sum(abandon_wait::numeric) FILTER (WHERE abandon_stage IN ('queue', 'ringing')), 0)
                     )::float8 AS waited_seconds
              FROM ({CONTACTS_VIEW}) v WHERE field IS NOT NULL GROUP BY field ORDER BY field""",
        period.start, period.end, "phone", None,
    )


async def peak_lines_by_field(conn: Any, period: Period) -> dict[str, int]:
    """The most talks in progress at once per field: the lines the period shows were staffed."""
    rows = await conn.fetch(
        f"""WITH v AS ({CONTACTS_VIEW}),
            steps AS (
                SELECT field, answered_at AS at, 1 AS step FROM v
                 WHERE connected AND talk_seconds IS NOT NULL AND field IS NOT NULL
                UNION ALL
                SELECT field, answered_at + talk_seconds * interval '1 second', -1 FROM v
                 WHERE connected AND talk_seconds IS NOT NULL AND field IS NOT NULL)
            SELECT field, max(busy) AS lines FROM (
                SELECT field, sum(step) OVER (PARTITION BY field ORDER BY at, step
                                              ROWS UNBOUNDED PRECEDING) AS busy FROM steps) s
             GROUP BY field""",
        period.start, period.end, None, None,
    )
    return {r["field"]: int(r["lines"]) for r in rows}


# --- live gauges for ops ---------------------------------------------------------------------


async def live_figures(conn: Any) -> dict[str, Any]:
    """Queue length and busy lines per field, and the answer rate of the last 15 minutes — measured
    back from the newest event time seen (not the wall clock), so a replay shows its own 'now'."""
    newest: datetime | None = await conn.fetchval(f'SELECT max(received_at) FROM "{SCHEMA}".contacts')
    if newest is None:
        return {"queue": {}, "busy": {}, "answer_rate_15m": None, "as_of": None}
    rows = await conn.fetch(
        f"""SELECT coalesce(field, assigned_field) AS field,
                   count(*) FILTER (WHERE queued_at IS NOT NULL AND answered_at IS NULL AND abandoned_at IS NULL
                                      AND ended_at IS NULL AND (assigned_at IS NULL OR assigned_at < queued_at))
                     AS queue,
                   count(*) FILTER (WHERE answered_at IS NOT NULL AND ended_at IS NULL AND abandoned_at IS NULL)
                     AS busy
              FROM "{SCHEMA}".contacts
             WHERE received_at > $1::timestamptz - interval '4 hours' AND coalesce(field, assigned_field) IS NOT NULL
             GROUP BY 1""",
        newest,
    )
    recent = await conn.fetchrow(
        f"""SELECT count(*) AS attempts, count(*) FILTER (WHERE answered_at IS NOT NULL) AS connected
              FROM "{SCHEMA}".contacts
             WHERE received_at > $1::timestamptz - interval '15 minutes' AND channel = 'phone'""",
        newest,
    )
    return {
        "queue": {r["field"]: r["queue"] for r in rows},
        "busy": {r["field"]: r["busy"] for r in rows},
        "answer_rate_15m": recent["connected"] / recent["attempts"] if recent["attempts"] else None,
        "as_of": newest,
    }
