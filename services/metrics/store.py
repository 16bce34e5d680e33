"""metrics' PostgreSQL: the facts tables (schema ``metrics``), the order-independent upserts that
combine a batch's facts with what is stored, and the SQL that turns facts into figures.

The upserts apply domain.py's rules column by column: a slot's values are replaced only when the
incoming slot wins (earlier or later by (event time, tie-break)). The same statement returns each
changed row's old and new version (PostgreSQL 18 ``RETURNING old.*, new.*``) and moves the rollups
(migration 002) by the difference between the two contributions, inside the batch's transaction —
so the rollups always equal what the facts would give from scratch (``rebuild_rollups``). Figures
read whole days and months from the rollups and the hours at a period's edges from the facts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.metrics.domain import (
    CALLER_CHAINS,
    CHAIN_LINKS,
    EDGE_INDEX,
    HISTOGRAM_EDGES,
    JST,
    ConsultationFacts,
    ContactFacts,
    Facts,
    Period,
    ReferralFacts,
    cover,
    quantiles_from_bins,
    whole_span,
    within_from_bins,
)
from tsunagu.db import migrate

SCHEMA = "metrics"
MIGRATIONS = Path(__file__).parent / "migrations"
TZ = "Asia/Tokyo"


async def migrate_schema(pool: asyncpg.Pool) -> list[str]:
    applied = await migrate(pool, SCHEMA, MIGRATIONS, inbox_outbox=True)
    rebuilt = {"002_rollups.sql", "004_caller_links.sql", "008_every_grouping_from_rollups.sql"} & set(applied)
    if rebuilt and await pool.fetchval(f'SELECT EXISTS (SELECT FROM "{SCHEMA}".contacts)'):
        async with pool.acquire() as conn:  # facts from before the rollups (or the caller links) existed
            await rebuild_rollups(conn)
    return applied


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


@dataclass(frozen=True)
class FactRows:
    """A batch's facts as the upserts' column arrays (sorted keys: concurrent consumers then lock rows
    in the same order, so no deadlocks). Built in Python apart from the transaction, so the next batch
    can be prepared while this one's statements run."""

    contacts: list[list[Any]] | None
    consultations: list[list[Any]] | None
    referrals: list[list[Any]] | None


def fact_rows(facts: Facts) -> FactRows:
    def columns(table: dict[str, Any], row: Callable[[Any], list[Any]], width: int) -> list[list[Any]] | None:
        return _columns([row(table[k]) for k in sorted(table)], width) if table else None

    return FactRows(columns(facts.contacts, contact_row, len(CONTACT_COLUMNS)),
                    columns(facts.consultations, consultation_row, len(CONSULTATION_COLUMNS)),
                    columns(facts.referrals, referral_row, len(REFERRAL_COLUMNS)))


async def apply_rows(conn: asyncpg.Connection, rows: FactRows) -> None:
    """Combine a batch's facts with the stored ones — one set-based statement per table, which also
    moves the rollups by the difference between each changed row's old and new contribution. The
    callers' links of the contacts it changed are left to derive_links (migration 006)."""
    if rows.contacts is not None:
        await conn.execute(CONTACTS_APPLY, *rows.contacts)  # also lists the changed ones for derive_links
    if rows.consultations is not None:
        await conn.execute(CONSULTATIONS_APPLY, *rows.consultations)
    if rows.referrals is not None:
        await conn.execute(REFERRALS_UPSERT, *rows.referrals)


async def apply_facts(conn: asyncpg.Connection, facts: Facts) -> None:
    await apply_rows(conn, fact_rows(facts))


# --- rollups: each row's contribution, moved by deltas -----------------------------------------
# A contact contributes to contact_rollup / contact_hist exactly as the secretariat counts it
# (CONTACTS_VIEW below). The same SQL turns a row of the facts into its contribution in three places:
# the deltas of a batch (old row −1, new row +1), the rebuild of the rollups from the facts, and the
# edges of a period read straight from the facts. A batch also lists the contacts it changed, whose
# callers' links move later (derive_links).

S = f'"{SCHEMA}"'
_TZ = f"'{TZ}'"
_NEG_EDGES = "ARRAY[" + ",".join(str(-e) for e in reversed(HISTOGRAM_EDGES)) + "]::float8[]"


def _bin(value: str) -> str:
    """SQL for domain.bin_of: how many histogram edges lie below the value."""
    return f"({len(HISTOGRAM_EDGES)} - width_bucket(-({value})::float8, {_NEG_EDGES}))::smallint"


def _contact_view(c: Callable[[str], str], alias: Callable[[str], str] = lambda n: n) -> str:
    """The counted view of a contacts row; ``c`` names a stored column, ``alias`` the output."""
    answered = c("answered_at")
    return ", ".join(f"{expr} AS {alias(name)}" for name, expr in (
        ("received_at", c("received_at")), ("channel", c("channel")), ("caller_key", c("caller_key")),
        ("prefecture", c("prefecture")), ("field", f"coalesce({c('field')}, {c('assigned_field')})"),
        ("organisation", f"coalesce({c('organisation_id')}, {c('assigned_org')})"),
        ("desk", f"coalesce({c('desk_id')}, {c('assigned_desk')})"),
        ("connected", f"{answered} IS NOT NULL"),
        ("abandon_stage", f"CASE WHEN {answered} IS NULL THEN {c('abandon_stage')} END"),
        ("overflowed", f"{c('overflow_tier')} IS NOT NULL"),
        ("wait", f"CASE WHEN {answered} IS NOT NULL THEN {c('wait_seconds')} END"),
        ("talk", f"CASE WHEN {answered} IS NOT NULL THEN {c('talk_seconds')} END"),
        ("queue_wait", f"CASE WHEN {answered} IS NULL AND {c('abandon_stage')} = 'queue' THEN {c('abandon_wait')} END"),
    ))


VIEW_NAMES = ["received_at", "channel", "caller_key", "prefecture", "field", "organisation", "desk", "connected",
              "abandon_stage", "overflowed", "wait", "talk", "queue_wait"]
_HOD = f"extract(hour FROM {{t}} AT TIME ZONE {_TZ})::int::text"
_DAYKEY = f"to_char({{t}} AT TIME ZONE {_TZ}, 'YYYY-MM-DD')"
GRAIN_BUCKET = (f"CASE g.grain WHEN 'd' THEN date_trunc('day', received_at, {_TZ}) "
                f"ELSE date_trunc('month', received_at, {_TZ}) END")
GRAINS_SQL = """(VALUES ('d'::"char"), ('m'::"char")) g(grain)"""
# contact cubes: 0 none, 1 field, 2 desk, 3 prefecture, 4 hour of day
CONTACT_CUBE_KEY = ("CASE c.cube WHEN 1 THEN field WHEN 2 THEN desk WHEN 3 THEN prefecture "
                    f"WHEN 4 THEN {_HOD.format(t='received_at')} END")
CONTACT_MEASURES = """
    sum(sign) AS attempts,
    sum(sign * connected::int) AS connected,
    sum(sign * (abandon_stage IS NOT NULL)::int) AS abandoned,
    sum(sign * (abandon_stage IS NOT DISTINCT FROM 'ivr')::int) AS abandoned_ivr,
    sum(sign * (abandon_stage IS NOT DISTINCT FROM 'queue')::int) AS abandoned_queue,
    sum(sign * (abandon_stage IS NOT DISTINCT FROM 'ringing')::int) AS abandoned_ringing,
    sum(sign * overflowed::int) AS overflowed,
    sum(sign * (wait IS NOT NULL)::int) AS wait_n,
    coalesce(sum(sign * wait::numeric), 0) AS wait_sum,
    sum(sign * (talk IS NOT NULL)::int) AS talk_n,
    coalesce(sum(sign * talk::numeric), 0) AS talk_sum"""
ROLLUP_MEASURES = ["attempts", "connected", "abandoned", "abandoned_ivr", "abandoned_queue", "abandoned_ringing",
                   "overflowed", "wait_n", "wait_sum", "talk_n", "talk_sum"]
_ADD = ", ".join(f"{m} = t.{m} + EXCLUDED.{m}" for m in ROLLUP_MEASURES)
# groups whose every measure the delta leaves unchanged are not written (a contact whose talk time
# changed moves only the talk sums)
_ROLLUP_MOVED = "HAVING " + " OR ".join(f"sum({m}) <> 0" for m in ROLLUP_MEASURES)
# what places a contact in every cube's group and bucket: the hour it arrived (Japan time is a whole
# number of hours from UTC, so the UTC hour keeps its day, month and hour of day) and the group values
_PLACE = "date_trunc('hour', received_at) AS received_at, channel, organisation, field, desk, prefecture"


def _contact_rollup_sql(delta: str, grains: str = GRAINS_SQL) -> str:
    """The delta summed by place first, then crossed with grains and cubes."""
    return f"""INSERT INTO {S}.contact_rollup AS t
            (cube, grain, bucket, channel, organisation, k, {", ".join(ROLLUP_MEASURES)})
        SELECT c.cube, g.grain, {GRAIN_BUCKET}, channel, organisation, {CONTACT_CUBE_KEY},
               {", ".join(f"sum({m})" for m in ROLLUP_MEASURES)}
          FROM (SELECT {_PLACE}, {CONTACT_MEASURES} FROM {delta} GROUP BY 1, 2, 3, 4, 5, 6) v
               CROSS JOIN {grains} CROSS JOIN generate_series(0, 4) c(cube)
         GROUP BY 1, 2, 3, 4, 5, 6 {_ROLLUP_MOVED} ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (cube, grain, bucket, channel, organisation, k) DO UPDATE SET {_ADD}"""


def _contact_hist_sql(delta: str, grains: str = GRAINS_SQL) -> str:
    """Histograms of every cube (so waits by any group come from them): the values binned and summed by
    place first (a contact's old and new value that cancel — a wait unchanged when the talk time arrives —
    drop out), then crossed with grains and cubes."""
    return f"""INSERT INTO {S}.contact_hist AS t (cube, grain, bucket, measure, channel, organisation, k, bin, n)
        SELECT c.cube, g.grain, {GRAIN_BUCKET}, measure, channel, organisation, {CONTACT_CUBE_KEY}, bin, sum(sign)
          FROM (SELECT {_PLACE}, m.measure,
                       {_bin("m.value")} AS bin, sum(sign) AS sign
                  FROM {delta}
                       CROSS JOIN LATERAL (VALUES ('w'::"char", wait), ('t'::"char", talk),
                                                  ('a'::"char", queue_wait)) m(measure, value)
                 WHERE m.value IS NOT NULL
                 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 HAVING sum(sign) <> 0) v
               CROSS JOIN {grains} CROSS JOIN generate_series(0, 4) c(cube)
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 HAVING sum(sign) <> 0 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
        ON CONFLICT (cube, grain, bucket, measure, channel, organisation, k, bin) DO UPDATE SET n = t.n + EXCLUDED.n"""


_RETURN_CONTACT = (
    "RETURNING new.contact_id, " + _contact_view(lambda col: f"old.{col}", lambda n: f"o_{n}") + ", "
    + _contact_view(lambda col: f"new.{col}", lambda n: f"n_{n}")
)
_O = ", ".join(f"o_{n}" for n in VIEW_NAMES)
_N = ", ".join(f"n_{n}" for n in VIEW_NAMES)
CONTACTS_APPLY = f"""
WITH up AS ({CONTACTS_UPSERT} {_RETURN_CONTACT}),
changed AS (SELECT * FROM up WHERE ROW({_O}) IS DISTINCT FROM ROW({_N})),
delta AS (
    SELECT -1 AS sign, {", ".join(f"o_{n} AS {n}" for n in VIEW_NAMES)} FROM changed WHERE o_received_at IS NOT NULL
    UNION ALL
    SELECT 1, {", ".join(f"n_{n}" for n in VIEW_NAMES)} FROM changed WHERE n_received_at IS NOT NULL),
r AS ({_contact_rollup_sql("delta")}),
h AS ({_contact_hist_sql("delta")})
INSERT INTO {S}.caller_links_pending (contact_id) SELECT contact_id FROM changed
"""

# --- distinct callers: each caller's attempts in chains (migrations 004, 008; domain.CALLER_CHAINS) ----
# caller_links keeps, per contact, the values that put it in its chains and the event time of its
# previous and next attempt in each; caller_rollup counts attempts by bucket and the next's day. A derive
# (CHAINS_APPLY, run by derive_links over the contacts live batches listed as changed) finds the contacts
# whose chain values changed and, in the facts, their neighbours before and after each old and new
# position in each chain; it moves those contacts' links and the rollup by the difference — no other
# contact's links can change. A moved contact's links are the neighbours of its new position. A
# neighbour's link changes only on the side facing a moved position, in that chain (anything entering or
# leaving next to it is a moved contact, found by that contact's own lookups): it becomes the new position
# itself, or, beside an old position, the attempt on that position's other side.

# i: 1-based index into prev_at / next_at
_CHAINS = "(VALUES " + ", ".join(
    f"({i}, {chain}, {str(connected).lower()})" for i, (chain, connected) in enumerate(CHAIN_LINKS, start=1)
) + ") ch(i, chain, connected_only)"
# a chain value as a contacts row counts it (CONTACTS_VIEW)
_CHAIN_VALUE = {"channel": "{c}.channel", "field": "coalesce({c}.field, {c}.assigned_field)",
                "organisation": "coalesce({c}.organisation_id, {c}.assigned_org)",
                "desk": "coalesce({c}.desk_id, {c}.assigned_desk)", "prefecture": "{c}.prefecture",
                "hour": f"extract(hour FROM {{c}}.received_at AT TIME ZONE {_TZ})::smallint"}
# caller_links' columns before its links, in the table's order (migration 008)
_LINK_COLUMNS = ["contact_id", "caller_key", "received_at", "channel", "organisation", "field", "desk", "prefecture",
                 "hour", "connected"]


def _chains_with(name: str) -> str:
    return ", ".join(str(i) for i, names in enumerate(CALLER_CHAINS) if name in names) or "NULL"


def _in_chain(c: str, m: str) -> str:
    """SQL: the contacts row ``c`` is in chain ``ch`` of the position ``m`` (a caller_links-shaped row)."""
    return " AND ".join(
        [f"(ch.chain NOT IN ({_chains_with(name)}) OR {expr.format(c=c)} IS NOT DISTINCT FROM {m}.{name})"
         for name, expr in _CHAIN_VALUE.items()]
        + [f"(NOT ch.connected_only OR {c}.answered_at IS NOT NULL)"])


def _neighbour(c: str, m: str, before: bool, columns: tuple[str, ...] = ("received_at",)) -> str:
    """SQL: ``columns`` of the attempt just before (or after) position ``m`` in its chain ``ch`` — no row
    where ``m`` is not in that chain (not connected, in a chain of connected attempts)."""
    op, order = ("<", "DESC") if before else (">", "ASC")
    return f"""(SELECT {", ".join(f"{c}.{n}" for n in columns)} FROM {S}.contacts {c}
                 WHERE ({m}.connected OR NOT ch.connected_only) AND {c}.caller_key = {m}.caller_key
                   AND ({c}.received_at, {c}.contact_id) {op} ({m}.received_at, {m}.contact_id) AND {_in_chain(c, m)}
                 ORDER BY {c}.received_at {order}, {c}.contact_id {order} LIMIT 1)"""


_LINK_VIEW = ("c.contact_id, c.caller_key, c.received_at, "
              + "".join(f"{_CHAIN_VALUE[n].format(c='c')} AS {n}, " for n in _LINK_COLUMNS[3:-1])
              + "c.answered_at IS NOT NULL AS connected")


def _links_of(view: str) -> str:
    """SQL: the caller_links rows of the contacts in ``view`` (a subquery of _LINK_VIEW rows ``v`` with
    ``redo``: NULL for a moved contact, whose links ``own_prev`` / ``own_next`` were found beside its new
    position; else the chains where it neighbours a moved position, its links moved there in ``re_prev`` /
    ``re_next`` — looked up in every chain when it has none stored), with ``redo`` after them."""
    member = "(v.connected OR NOT ch.connected_only)"

    def link(before: bool) -> str:
        own, moved = ("v.own_prev", "v.re_prev") if before else ("v.own_next", "v.re_next")
        return f"""CASE WHEN v.redo IS NULL THEN {own} WHEN {moved} IS NOT NULL THEN {moved} ELSE
                ARRAY(SELECT CASE WHEN {member} THEN {_neighbour("p", "v", before)} END
                  FROM {_CHAINS} ORDER BY ch.i) END"""

    return (f"SELECT {', '.join('v.' + n for n in _LINK_COLUMNS)}, {link(True)} AS prev_at, {link(False)} AS next_at, "
            f"v.redo FROM {view}")


# the values that name a chain's group, as caller_rollup's columns
CHAIN_GROUPS = _LINK_COLUMNS[3:-1]


def _chain_value(name: str) -> str:
    return f"CASE WHEN ch.chain IN ({_chains_with(name)}) THEN {name} END"


def _caller_rollup_sql(delta: str, grains: str = GRAINS_SQL, chains: str = "true") -> str:
    """``chains``: SQL, which of a delta row's chains (``ch``) it moves. The delta is summed by day first,
    then crossed with the grains."""
    groups = ", ".join(CHAIN_GROUPS)
    bucket = f"CASE g.grain WHEN 'd' THEN day ELSE date_trunc('month', day, {_TZ}) END"
    return f"""INSERT INTO {S}.caller_rollup AS t (chain, connected, grain, bucket, {groups}, next_day, n)
        SELECT chain, connected, g.grain, {bucket}, {groups}, next_day, sum(n)
          FROM (SELECT ch.chain, ch.connected_only AS connected, date_trunc('day', received_at, {_TZ}) AS day,
                       {", ".join(f"{_chain_value(n)} AS {n}" for n in CHAIN_GROUPS)},
                       date_trunc('day', next_at[ch.i], {_TZ}) AS next_day, sum(sign) AS n
                  FROM {delta} CROSS JOIN {_CHAINS}
                 WHERE (connected OR NOT ch.connected_only) AND {chains}
                 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 HAVING sum(sign) <> 0) v
               CROSS JOIN {grains}
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
        ON CONFLICT (chain, connected, grain, bucket, {groups}, next_day) DO UPDATE SET n = t.n + EXCLUDED.n"""


_LINKS = ", ".join(_LINK_COLUMNS)
# Rows are fetched by their keys as an array (an index scan for each key, whatever the table's size):
# joined to a CTE, the planner, which cannot see how few rows a CTE holds, reads the whole table.
_CAND = "ARRAY(SELECT contact_id FROM cand)"
# each candidate's contacts row and stored links, looked up by its key (OFFSET 0: not to be turned into
# a join, for the same reason)
_CAND_VIEW = f"""(SELECT {_LINK_VIEW}, k.redo, k.own_prev, k.own_next, r.prev_at AS re_prev, r.next_at AS re_next
                    FROM cand k LEFT JOIN relinked r ON r.contact_id = k.contact_id
                   CROSS JOIN LATERAL (SELECT * FROM {S}.contacts c WHERE c.contact_id = k.contact_id
                                          AND c.caller_key IS NOT NULL AND c.received_at IS NOT NULL OFFSET 0) c) v"""
# every listed contact at once: the list is taken in the statement that reads the facts (derive_links)
CHAINS_APPLY = f"""
WITH taken AS (DELETE FROM {S}.caller_links_pending RETURNING contact_id),
ids AS (SELECT DISTINCT contact_id FROM taken),
now_ AS (
    SELECT {_LINK_VIEW} FROM ids
     CROSS JOIN LATERAL (SELECT * FROM {S}.contacts c WHERE c.contact_id = ids.contact_id OFFSET 0) c
     WHERE c.caller_key IS NOT NULL AND c.received_at IS NOT NULL),
was AS (SELECT {", ".join(f"l.{n}" for n in _LINK_COLUMNS)} FROM ids
         CROSS JOIN LATERAL (SELECT * FROM {S}.caller_links l WHERE l.contact_id = ids.contact_id OFFSET 0) l),
moved AS ((SELECT *, true AS is_now FROM (SELECT * FROM now_ EXCEPT SELECT * FROM was) n)
          UNION ALL (SELECT *, false FROM (SELECT * FROM was EXCEPT SELECT * FROM now_) w)),
-- the attempts just before and after each position, new and old, in each of its chains (NULL where it
-- is not in the chain): around a new position they are the moved contact's own links
nb AS (
    SELECT m.contact_id, m.received_at AS at, m.is_now, ch.i, b.contact_id AS b_id, b.received_at AS b_at,
           a.contact_id AS a_id, a.received_at AS a_at
      FROM moved m CROSS JOIN {_CHAINS}
      LEFT JOIN LATERAL {_neighbour("c", "m", True, ("contact_id", "received_at"))} b ON true
      LEFT JOIN LATERAL {_neighbour("c", "m", False, ("contact_id", "received_at"))} a ON true),
own AS (SELECT contact_id, array_agg(b_at ORDER BY i) AS own_prev, array_agg(a_at ORDER BY i) AS own_next
          FROM nb WHERE is_now GROUP BY 1),
-- a neighbour's link on the side facing a position (side 1: its next; 0: its previous) is the position
-- itself when that is new (nothing lies between them), else the attempt on the position's other side
-- (the position is gone); its other links are unchanged
near AS (SELECT b_id AS id, i, 1 AS side, CASE WHEN is_now THEN at ELSE a_at END AS t, is_now
           FROM nb WHERE b_id IS NOT NULL
         UNION ALL
         SELECT a_id, i, 0, CASE WHEN is_now THEN at ELSE b_at END, is_now FROM nb WHERE a_id IS NOT NULL),
-- each contact whose links may change, and in which chains (redo; NULL: all, for a moved contact)
cand AS (SELECT u.contact_id, u.redo, o.own_prev, o.own_next
           FROM (SELECT contact_id, CASE WHEN bool_or(i IS NULL) THEN NULL ELSE array_agg(DISTINCT i) END AS redo
                   FROM (SELECT contact_id, NULL::int AS i FROM moved UNION ALL SELECT id, i FROM near) u
                  GROUP BY 1) u
           LEFT JOIN own o ON o.contact_id = u.contact_id),
old AS (SELECT l.*, k.redo FROM cand k
         CROSS JOIN LATERAL (SELECT * FROM {S}.caller_links l WHERE l.contact_id = k.contact_id OFFSET 0) l),
roles AS (SELECT id, i, side, (array_agg(t ORDER BY is_now DESC))[1] AS t FROM near GROUP BY 1, 2, 3),
relinked AS (
    SELECT o.contact_id,
           array_agg(CASE WHEN p.id IS NULL THEN s.prev ELSE p.t END ORDER BY s.i) AS prev_at,
           array_agg(CASE WHEN n.id IS NULL THEN s.next ELSE n.t END ORDER BY s.i) AS next_at
      FROM old o CROSS JOIN LATERAL unnest(o.prev_at, o.next_at) WITH ORDINALITY s(prev, next, i)
      LEFT JOIN roles p ON p.id = o.contact_id AND p.i = s.i AND p.side = 0
      LEFT JOIN roles n ON n.id = o.contact_id AND n.i = s.i AND n.side = 1
     WHERE o.redo IS NOT NULL GROUP BY 1),
fresh AS ({_links_of(_CAND_VIEW)}),
gone AS (DELETE FROM {S}.caller_links l
          WHERE l.contact_id = ANY({_CAND}) AND NOT EXISTS (SELECT FROM fresh f WHERE f.contact_id = l.contact_id)),
kept AS (INSERT INTO {S}.caller_links AS t
         SELECT {_LINKS}, prev_at, next_at FROM (SELECT * FROM fresh EXCEPT SELECT * FROM old) f ORDER BY contact_id
         ON CONFLICT (contact_id) DO UPDATE SET
            {", ".join(f"{n} = EXCLUDED.{n}" for n in [*_LINK_COLUMNS[1:], "prev_at", "next_at"])}),
delta AS (SELECT -1 AS sign, * FROM old UNION ALL SELECT 1, * FROM fresh)
{_caller_rollup_sql("delta", chains="(redo IS NULL OR ch.i = ANY(redo))")}
"""
# The contacts a live batch changed, for derive_links: rows only ever added here and deleted by a
# derive, so a batch never waits for a derive, nor a derive for a batch.
# One derive at a time in the whole database (every instance's task and every read): each starts from
# the links the one before committed.
DERIVE_LOCK = "SELECT pg_advisory_xact_lock(7305)"


@contextlib.asynccontextmanager
async def _connection(db: asyncpg.Pool | asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


async def derive_links(db: asyncpg.Pool | asyncpg.Connection) -> None:
    """Move the links and the caller rollup of every contact the committed live batches listed as
    changed (CHAINS_APPLY), in one transaction after the derive before it.

    Exact beside batches: one statement takes the pending list and reads the facts, so it sees every
    batch that committed before it — its changed facts and its list — and nothing of the others, whose
    lists stay for the next derive. A contact outside the list has links that match its facts, which is
    what CHAINS_APPLY needs of the contacts around the ones it moves."""
    async with _connection(db) as conn:
        if not await conn.fetchval(f"SELECT EXISTS (SELECT FROM {S}.caller_links_pending)"):
            return  # nothing committed is waiting (reads take this path almost always)
        async with conn.transaction():
            await conn.execute(DERIVE_LOCK)
            await conn.execute(CHAINS_APPLY)


async def links_pending(db: asyncpg.Pool | asyncpg.Connection) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {S}.caller_links_pending"))


# every contact's links from the facts at once (a rebuild): a window per chain
_WINDOWS = ", ".join(
    f"w{i} AS (PARTITION BY caller_key{''.join(', ' + n for n in CALLER_CHAINS[chain])}"
    f"{', connected' if connected else ''} ORDER BY received_at, contact_id)"
    for i, (chain, connected) in enumerate(CHAIN_LINKS))


def _window_links(fn: str) -> str:
    return "ARRAY[" + ", ".join(
        f"CASE WHEN connected THEN {fn}(received_at) OVER w{i} END" if connected else f"{fn}(received_at) OVER w{i}"
        for i, (_, connected) in enumerate(CHAIN_LINKS)) + "]::timestamptz[]"


def _rebuild_caller_links(lower: bool, upper: bool) -> str:
    """Every link of the callers whose keys lie in [$1, $2) (a bound left out: open on that side), written
    in event-time order: a period's edge hours then lie in one run of pages per slice, not one page a row."""
    within = (" AND c.caller_key >= $1" if lower else "") + (f" AND c.caller_key < ${1 + lower}" if upper else "")
    return f"""
INSERT INTO {S}.caller_links
SELECT {_LINKS}, {_window_links("lag")}, {_window_links("lead")}
  FROM (SELECT {_LINK_VIEW} FROM {S}.contacts c
         WHERE c.caller_key IS NOT NULL AND c.received_at IS NOT NULL{within}) v
WINDOW {_WINDOWS}
ORDER BY received_at
"""


# A rebuild derives the links a slice of callers at a time (every window is per caller, so slices by
# caller key are exact): ten window sorts of a year's contacts at once spill to disk in many passes —
# superlinear (1 M contacts 121 s for the whole derive, 10 M ~10 min for the links alone); slices of
# about this many contacts sort in a few passes each.
LINK_SLICE_CONTACTS = 250_000


async def _rebuild_links(conn: asyncpg.Connection) -> None:
    n = await conn.fetchval(f"SELECT count(*) FROM {S}.contacts WHERE caller_key IS NOT NULL")
    slices = -(-n // LINK_SLICE_CONTACTS)
    bounds: list[str] = []
    if slices > 1:  # the slices' edges: quantiles of a sample of about 100,000 keys
        sample = min(100.0, 100.0 * 100_000 / n)
        bounds = await conn.fetchval(
            f"SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY caller_key) "
            f"FROM {S}.contacts TABLESAMPLE SYSTEM ($2) WHERE caller_key IS NOT NULL",
            [i / slices for i in range(1, slices)], sample) or []
        bounds = sorted(set(b for b in bounds if b is not None))
    edges: list[str | None] = [None, *bounds, None]
    for lo, hi in zip(edges, edges[1:], strict=False):
        given = [b for b in (lo, hi) if b is not None]
        await conn.execute(_rebuild_caller_links(lo is not None, hi is not None), *given)


_LINKS_DELTA = f"(SELECT 1 AS sign, * FROM {S}.caller_links WHERE received_at >= $1 AND received_at < $2) v"


# consultation cubes: 0 none, 1 field, 2 desk, 3 age band, 4 risk, 5 hour of day, 6 category
CONSULTATION_VIEW_NAMES = ["recorded_at", "organisation_id", "desk_id", "field", "categories", "age_band", "risk",
                           "referral_needed"]


def _consultation_rollup_sql(delta: str, grains: str = GRAINS_SQL) -> str:
    bucket = GRAIN_BUCKET.replace("received_at", "recorded_at")
    key = ("CASE c.cube WHEN 1 THEN field WHEN 2 THEN desk_id WHEN 3 THEN age_band WHEN 4 THEN risk "
           f"WHEN 5 THEN {_HOD.format(t='recorded_at')} WHEN 6 THEN cat.code END")
    return f"""INSERT INTO {S}.consultation_rollup AS t
            (cube, grain, bucket, organisation, k, consultations, referral_needed, high_risk)
        SELECT c.cube, g.grain, {bucket}, organisation_id, {key}, sum(sign), sum(sign * referral_needed::int),
               sum(sign * (risk IN ('high', 'imminent'))::int)
          FROM {delta} CROSS JOIN {grains} CROSS JOIN generate_series(0, 6) c(cube)
               CROSS JOIN LATERAL (SELECT NULL::text AS code WHERE c.cube <> 6
                                   UNION ALL SELECT u FROM unnest(categories) u WHERE c.cube = 6) cat
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (cube, grain, bucket, organisation, k) DO UPDATE
           SET consultations = t.consultations + EXCLUDED.consultations,
               referral_needed = t.referral_needed + EXCLUDED.referral_needed,
               high_risk = t.high_risk + EXCLUDED.high_risk"""


_CO = ", ".join(f"old.{n} AS o_{n}" for n in CONSULTATION_VIEW_NAMES)
_CN = ", ".join(f"new.{n} AS n_{n}" for n in CONSULTATION_VIEW_NAMES)
CONSULTATIONS_APPLY = f"""
WITH up AS ({CONSULTATIONS_UPSERT} RETURNING {_CO}, {_CN}),
changed AS (SELECT * FROM up WHERE ROW({", ".join(f"o_{n}" for n in CONSULTATION_VIEW_NAMES)})
                                   IS DISTINCT FROM ROW({", ".join(f"n_{n}" for n in CONSULTATION_VIEW_NAMES)})),
delta AS (
    SELECT -1 AS sign, {", ".join(f"o_{n} AS {n}" for n in CONSULTATION_VIEW_NAMES)} FROM changed
     WHERE o_recorded_at IS NOT NULL
    UNION ALL
    SELECT 1, {", ".join(f"n_{n}" for n in CONSULTATION_VIEW_NAMES)} FROM changed WHERE n_recorded_at IS NOT NULL)
{_consultation_rollup_sql("delta")}
"""

_FACTS_DELTA = (f"(SELECT 1 AS sign, {_contact_view(lambda col: col)} FROM {S}.contacts "
                "WHERE received_at >= $1 AND received_at < $2) v")
_CONSULTATION_FACTS_DELTA = (f"(SELECT 1 AS sign, * FROM {S}.consultations "
                             "WHERE recorded_at >= $1 AND recorded_at < $2) v")
_DAILY = """(VALUES ('d'::"char")) g(grain)"""


def _coarser(table: str, key: list[str], measures: list[str], grain: str, finer: str) -> str:
    """Sum the ``finer`` grain's rows into ``grain`` (a day or a month in Japan time)."""
    unit = "day" if grain == "d" else "month"
    cols = ", ".join(key)
    return f"""INSERT INTO {S}.{table} AS t (grain, bucket, {cols}, {", ".join(measures)})
        SELECT '{grain}', date_trunc('{unit}', bucket, {_TZ}), {cols}, {", ".join(f"sum({m})" for m in measures)}
          FROM {S}.{table} WHERE grain = '{finer}' AND bucket >= $1 AND bucket < $2
         GROUP BY 2, {cols}
        ON CONFLICT (grain, bucket, {cols}) DO UPDATE
           SET {", ".join(f"{m} = t.{m} + EXCLUDED.{m}" for m in measures)}"""


async def rebuild_rollups(conn: asyncpg.Connection) -> None:
    """Compute every rollup and the callers' links from the facts, from scratch (a rebuild's switch to
    live, a schema that had facts before the rollups existed, and benchmarks that write facts directly).
    The links come a slice of callers at a time; days from the facts (the callers' rollup: from the
    links) a month at a time; months from the days."""
    async with conn.transaction():
        await conn.execute(f"LOCK TABLE {S}.contacts, {S}.consultations IN SHARE MODE")
        for table in ("contact_rollup", "contact_hist", "consultation_rollup", "caller_links", "caller_rollup",
                      "caller_links_pending"):
            await conn.execute(f"TRUNCATE {S}.{table}")
        lo, hi = await conn.fetchrow(
            f"SELECT least((SELECT min(received_at) FROM {S}.contacts), "
            f"(SELECT min(recorded_at) FROM {S}.consultations)), "
            f"greatest((SELECT max(received_at) FROM {S}.contacts), (SELECT max(recorded_at) FROM {S}.consultations))")
        if lo is None:
            return
        await _rebuild_links(conn)
        months = []
        t = _floor_month(lo)
        while t <= hi:
            nxt = _next_month(t)
            months.append((t, nxt))
            t = nxt
        for a, b in months:
            await conn.execute(_contact_rollup_sql(_FACTS_DELTA, _DAILY), a, b)
            await conn.execute(_contact_hist_sql(_FACTS_DELTA, _DAILY), a, b)
            await conn.execute(_consultation_rollup_sql(_CONSULTATION_FACTS_DELTA, _DAILY), a, b)
            await conn.execute(_caller_rollup_sql(_LINKS_DELTA, _DAILY), a, b)
        start, end = months[0][0], months[-1][1]
        contact_key = ["cube", "channel", "organisation", "k"]
        for grain, finer in (("m", "d"),):
            await conn.execute(_coarser("contact_rollup", contact_key, ROLLUP_MEASURES, grain, finer), start, end)
            await conn.execute(_coarser("contact_hist", ["cube", "measure", *contact_key[1:], "bin"], ["n"], grain,
                                        finer), start, end)
            await conn.execute(_coarser("consultation_rollup", ["cube", "organisation", "k"],
                                        ["consultations", "referral_needed", "high_risk"], grain, finer), start, end)
            await conn.execute(_coarser("caller_rollup", ["chain", "connected", *CHAIN_GROUPS, "next_day"], ["n"],
                                        grain, finer), start, end)


ROLLUP_TABLES = {  # table -> its counts (a row whose counts are all zero says nothing)
    "contact_rollup": ROLLUP_MEASURES,
    "contact_hist": ["n"],
    "consultation_rollup": ["consultations", "referral_needed", "high_risk"],
    "caller_rollup": ["n"],
}


async def rollup_rows(conn: Any) -> dict[str, set[tuple[Any, ...]]]:
    """Every non-zero rollup row, per table — to compare the rollups of two runs (the pending links
    derived first, as every read of them does)."""
    await derive_links(conn)
    out = {}
    for table, counts in ROLLUP_TABLES.items():
        rows = await conn.fetch(f"SELECT * FROM {S}.{table} WHERE {' OR '.join(f'{c} <> 0' for c in counts)}")
        out[table] = {tuple(r) for r in rows}
    out["caller_links"] = {tuple(tuple(v) if isinstance(v, list) else v for v in r)
                           for r in await conn.fetch(f"SELECT * FROM {S}.caller_links")}
    return out


def _floor_month(t: datetime) -> datetime:
    local = t.astimezone(JST)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(t: datetime) -> datetime:
    return t.replace(year=t.year + t.month // 12, month=t.month % 12 + 1)


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


async def answer_rate_from_facts(
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


async def waits_from_facts(
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


async def consultations_from_facts(
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


# --- figures from the rollups (edges of the period from the facts) --------------------------------
# group_by -> (cube, key of a rollup row, key of a facts row, coarsest grain that still has the key)
_ROLLUP_DAY = f"to_char(bucket AT TIME ZONE {_TZ}, 'YYYY-MM-DD')"
CONTACT_ROLLUP_KEYS: dict[str | None, tuple[int, str, str, str]] = {
    None: (0, "NULL::text", "NULL::text", "m"),
    "field": (1, "k", "field", "m"),
    "desk": (2, "k", "desk", "m"),
    "prefecture": (3, "k", "prefecture", "m"),
    "hour": (4, "k::int", _HOUR.format(t="received_at"), "m"),
    "organisation": (0, "organisation", "organisation", "m"),
    "channel": (0, "channel", "channel", "m"),
    "day": (0, _ROLLUP_DAY, _DAY.format(t="received_at"), "d"),
}
CONSULTATION_ROLLUP_KEYS: dict[str | None, tuple[int, str, str, str]] = {
    None: (0, "NULL::text", "NULL::text", "m"),
    "field": (1, "k", "field", "m"),
    "desk": (2, "k", "desk_id", "m"),
    "age_band": (3, "k", "age_band", "m"),
    "risk": (4, "k", "risk", "m"),
    "hour": (5, "k::int", _HOUR.format(t="recorded_at"), "m"),
    "organisation": (0, "organisation", "organisation_id", "m"),
    "day": (0, _ROLLUP_DAY, _DAY.format(t="recorded_at"), "d"),
}


def _rollup_rows(table: str, cube: int, where: str) -> str:
    """The rows of ``table`` in the period's buckets ($1 grains, $2 starts, $3 ends): one index range
    scan per bucket range (OFFSET 0 keeps the planner from turning it into a scan of the table)."""
    return f"""(SELECT t.* FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) r(grain, lo, hi)
         CROSS JOIN LATERAL (SELECT * FROM {S}.{table} t WHERE t.cube = {cube} AND t.grain = r.grain::"char"
                                AND t.bucket >= r.lo AND t.bucket < r.hi AND {where} OFFSET 0) t) t"""


def _edge_rows(table: str, column: str) -> str:
    """The facts at the period's edges ($4 starts, $5 ends), one index range scan each."""
    return f"""unnest($4::timestamptz[], $5::timestamptz[]) e(lo, hi)
         CROSS JOIN LATERAL (SELECT * FROM {S}.{table} c WHERE c.{column} >= e.lo AND c.{column} < e.hi OFFSET 0) c"""


_CONTACT_EDGE_ROWS = f"""(SELECT 1 AS sign, {_contact_view(lambda col: "c." + col)}
           FROM {_edge_rows("contacts", "received_at")}) v"""
_EDGE_WHERE = "($6::text IS NULL OR channel = $6) AND ($7::text IS NULL OR organisation = $7)"
_CONTACT_EDGES = f"{_CONTACT_EDGE_ROWS} WHERE {_EDGE_WHERE}"
_MEASURE_VALUES = """CROSS JOIN LATERAL (VALUES ('w'::"char", wait), ('t'::"char", talk), ('a'::"char", queue_wait))
               m(measure, value)"""
_CONTACT_FILTER = "($6::text IS NULL OR t.channel = $6) AND ($7::text IS NULL OR t.organisation = $7)"


def _sum_groups(sums: str, count: str, total_only: bool) -> str:
    """Sum the parts per key and in total (keys whose count nets to zero left out)."""
    if total_only:
        return f"SELECT NULL AS key, true AS is_total, {sums} FROM parts"
    return (f"SELECT key, GROUPING(key) = 1 AS is_total, {sums} FROM parts GROUP BY GROUPING SETS ((key), ()) "
            f"HAVING GROUPING(key) = 1 OR sum({count}) <> 0 ORDER BY is_total DESC, key NULLS LAST")


def _cover_args(period: Period, coarsest: str) -> list[Any]:
    c = cover(period, coarsest)
    return [[b[0] for b in c.buckets], [b[1] for b in c.buckets], [b[2] for b in c.buckets],
            [e[0] for e in c.edges], [e[1] for e in c.edges]]


def _totals_and_groups(rows: list[asyncpg.Record], names: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    totals: dict[str, Any] = dict.fromkeys(names, 0)
    groups = []
    for row in rows:
        values = {n: row[n] for n in names}
        if row["is_total"]:
            totals = values
        else:
            groups.append({"key": row["key"], **values})
    return totals, groups


async def contact_sums(conn: Any, period: Period, group_by: str | None, channel: str | None,
                        organisation: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    cube, rkey, fkey, coarsest = CONTACT_ROLLUP_KEYS[group_by]
    sums = ", ".join(f"coalesce(sum({m}), 0)::{'numeric' if m.endswith('_sum') else 'bigint'} AS {m}"
                     for m in ROLLUP_MEASURES)
    sql = f"""
        WITH parts AS (
            SELECT {rkey} AS key, {", ".join(ROLLUP_MEASURES)}
              FROM {_rollup_rows("contact_rollup", cube, _CONTACT_FILTER)}
            UNION ALL
            SELECT {fkey}, {CONTACT_MEASURES} FROM {_CONTACT_EDGES} GROUP BY 1)
        {_sum_groups(sums, "attempts", group_by is None)}"""
    rows = await conn.fetch(sql, *_cover_args(period, coarsest), channel, organisation)
    return _totals_and_groups(rows, ROLLUP_MEASURES)


async def _contact_bins(conn: Any, period: Period, group_by: str | None, channel: str | None,
                        organisation: str | None) -> dict[Any, dict[str, dict[int, int]]]:
    """key -> measure ('w' wait, 't' talk, 'a' queue abandon wait) -> bin -> count; key "total" too."""
    cube, rkey, fkey, coarsest = CONTACT_ROLLUP_KEYS[group_by]
    sql = f"""
        WITH parts AS (
            SELECT {rkey} AS key, measure, bin, n FROM {_rollup_rows("contact_hist", cube, _CONTACT_FILTER)}
            UNION ALL
            SELECT {fkey}, m.measure, {_bin("m.value")}, count(*) FROM {_CONTACT_EDGE_ROWS} {_MEASURE_VALUES}
             WHERE {_EDGE_WHERE} AND m.value IS NOT NULL GROUP BY 1, 2, 3)
        SELECT key, measure::text AS measure, bin, sum(n)::bigint AS n FROM parts GROUP BY 1, 2, 3 HAVING sum(n) <> 0"""
    out: dict[Any, dict[str, dict[int, int]]] = {}
    for r in await conn.fetch(sql, *_cover_args(period, coarsest), channel, organisation):
        for key in ("total", r["key"]) if group_by else ("total",):
            bins = out.setdefault(key, {}).setdefault(r["measure"], {})
            bins[r["bin"]] = bins.get(r["bin"], 0) + r["n"]
    return out


def caller_plan(group_by: str | None, channel: str | None,
                organisation: str | None) -> tuple[tuple[int, str | None], ...] | None:
    """Which chains (domain.CALLER_CHAINS) answer a question: (chain, None) for the totals, then
    (chain, the group's column, or "day") — None when the links do not answer it (it is counted from the
    facts): a partner's scope by prefecture or hour. Over every channel (``channel`` None) a chain's
    groups are summed across channels: a caller key belongs to one channel."""
    scoped = organisation is not None
    total = 2 if scoped else 0
    if group_by is None:
        return ((total, None),)
    if group_by == "day":  # each day's part of the period on its own, from the totals' chain
        return ((total, None), (total, "day"))
    chain = {"channel": total, "field": 3 if scoped else 1, "organisation": 2, "desk": 4}.get(group_by)
    if chain is None and not scoped:
        chain = {"prefecture": 5, "hour": 6}[group_by]
    return None if chain is None else ((total, None), (chain, group_by))


def _callers_sql(chain: int, key: str | None) -> str:
    """Distinct callers per group of one chain over a period (domain.callers_in): $1–$3 the whole buckets
    (grains, starts, ends), $4–$5 the edges, $6 channel, $7 organisation (NULL: any), $8–$9 the whole
    buckets' span [D1, D2), $10 the period's end. With ``key`` "day" each day's part of the period is a
    period of its own (whole days only, no $8–$10): a whole day's callers are its attempts whose next is
    on a later day, an edge's those whose next is at or after the edge's end."""
    day = key == "day"
    t_key = _DAYKEY.format(t="t.bucket") if day else f"t.{key}" if key else "NULL::text"
    l_key = _DAYKEY.format(t="e.lo") if day else f"l.{key}" if key else "NULL::text"
    l_filter = " AND ".join(
        f"(${n}::text IS NULL OR l.{name} = ${n})" for n, name in ((6, "channel"), (7, "organisation")))
    t_filter = l_filter.replace("l.", "t.")
    later = "> t.bucket" if day else ">= $9"
    last = ("count(*) FILTER (WHERE l.next_at[ch.i] IS NULL OR l.next_at[ch.i] >= e.hi)" if day else
            "count(*) FILTER (WHERE l.next_at[ch.i] IS NULL OR l.next_at[ch.i] >= $10)"
            " - count(*) FILTER (WHERE l.received_at >= $9 AND l.prev_at[ch.i] >= $8 AND l.prev_at[ch.i] < $9)")
    links = ", ".join(f"({i}, {str(k).lower()})" for i, (c, k) in enumerate(CHAIN_LINKS, start=1) if c == chain)
    return f"""
        WITH parts AS (
            SELECT {t_key} AS key, t.connected, sum(t.n) AS n
              FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) r(grain, lo, hi)
                   CROSS JOIN LATERAL (SELECT * FROM {S}.caller_rollup t
                                        WHERE t.chain = {chain} AND t.connected IN (false, true)
                                          AND t.grain = r.grain::"char" AND t.bucket >= r.lo AND t.bucket < r.hi
                                          AND {t_filter} AND (t.next_day IS NULL OR t.next_day {later})
                                       OFFSET 0) t
             GROUP BY 1, 2
            UNION ALL
            SELECT {l_key}, ch.connected_only, {last}
              FROM unnest($4::timestamptz[], $5::timestamptz[]) e(lo, hi)
                   CROSS JOIN LATERAL (SELECT * FROM {S}.caller_links l
                                        WHERE l.received_at >= e.lo AND l.received_at < e.hi OFFSET 0) l
                   CROSS JOIN (VALUES {links}) ch(i, connected_only)
             WHERE {l_filter} AND (l.connected OR NOT ch.connected_only)
             GROUP BY 1, 2)
        SELECT key, connected, sum(n)::bigint AS n FROM parts GROUP BY 1, 2"""


async def _callers_from_links(conn: Any, period: Period, chain: int, key: str | None, channel: str | None,
                              organisation: str | None) -> dict[Any, tuple[int, int]]:
    c = cover(period, "d" if key == "day" else "m")
    names = CALLER_CHAINS[chain]
    args = [[b[0] for b in c.buckets], [b[1] for b in c.buckets], [b[2] for b in c.buckets],
            [e[0] for e in c.edges], [e[1] for e in c.edges],
            channel if "channel" in names else None, organisation if "organisation" in names else None]
    if key != "day":
        args += [*(whole_span(c) or (period.end, period.end)), period.end]
    out: dict[Any, list[int]] = {}
    for r in await conn.fetch(_callers_sql(chain, key), *args):
        out.setdefault(r["key"], [0, 0])[1 if r["connected"] else 0] += r["n"]
    return {k: (a, cc) for k, (a, cc) in out.items()}


async def distinct_callers(conn: Any, period: Period, group_by: str | None, channel: str | None,
                           organisation: str | None) -> dict[Any, tuple[int, int]]:
    """key ("total" for all) -> (callers, callers who got through): from the callers' links (caller_plan
    says which questions they answer), else counted from the facts (exact, slower on long periods)."""
    out: dict[Any, tuple[int, int]] = {"total": (0, 0)}
    plan = caller_plan(group_by, channel, organisation)
    if plan is None:
        return await callers_from_facts(conn, period, group_by, channel, organisation)
    await derive_links(conn)  # the links of every committed event
    for i, (chain, key) in enumerate(plan):
        for k, counts in (await _callers_from_links(conn, period, chain, key, channel, organisation)).items():
            out["total" if i == 0 else k] = counts
    return out


async def callers_from_facts(conn: Any, period: Period, group_by: str | None, channel: str | None,
                             organisation: str | None) -> dict[Any, tuple[int, int]]:
    """The same as distinct_callers, counted from the facts (exact; seconds over a long period)."""
    out: dict[Any, tuple[int, int]] = {"total": (0, 0)}
    key = CONTACT_DIMENSIONS[group_by] if group_by else None
    sql = _grouped(CONTACTS_VIEW, "count(DISTINCT caller_key) AS callers, "
                   "count(DISTINCT caller_key) FILTER (WHERE connected) AS callers_connected", key)
    for r in await conn.fetch(sql, period.start, period.end, channel, organisation):
        out["total" if r["is_total"] else r["key"]] = (r["callers"], r["callers_connected"])
    return out


ANSWER_RATE_FIELDS = ["attempts", "connected", "abandoned", "abandoned_ivr", "abandoned_queue", "abandoned_ringing",
                      "overflowed"]


async def answer_rate(
    conn: asyncpg.Connection | asyncpg.Pool, period: Period, group_by: str | None,
    channel: str | None = "phone", organisation: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    totals, groups = await contact_sums(conn, period, group_by, channel, organisation)
    callers = await distinct_callers(conn, period, group_by, channel, organisation)

    def row(values: dict[str, Any], key: Any) -> dict[str, Any]:
        c, cc = callers.get(key, (0, 0))
        return {**{n: values[n] for n in ANSWER_RATE_FIELDS}, "callers": c, "callers_connected": cc}

    return row(totals, "total"), [{"key": g["key"], **row(g, g["key"])} for g in groups]


def _mean(total: Any, n: int) -> float | None:
    return float(total) / n if n else None


async def waits(
    conn: asyncpg.Connection | asyncpg.Pool, period: Period, group_by: str | None, within: list[int],
    channel: str | None = "phone", organisation: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Waits and service level from the rollups: means exact, percentiles from the histogram bins
    (domain.HISTOGRAM_EDGES gives the precision), "answered within N s" exact for N on a bin edge —
    any other N is counted from the facts."""
    if any(n not in EDGE_INDEX for n in within):
        return await waits_from_facts(conn, period, group_by, within, channel, organisation)
    totals, groups = await contact_sums(conn, period, group_by, channel, organisation)
    bins = await _contact_bins(conn, period, group_by, channel, organisation)

    def row(v: dict[str, Any], key: Any) -> dict[str, Any]:
        b = bins.get(key, {})
        w, t, a = b.get("w", {}), b.get("t", {}), b.get("a", {})
        out = {
            "attempts": v["attempts"], "connected": v["connected"], "wait_mean": _mean(v["wait_sum"], v["wait_n"]),
            "wait_p": quantiles_from_bins(w, (0.5, 0.9, 0.95)), "talk_mean": _mean(v["talk_sum"], v["talk_n"]),
            "talk_p": quantiles_from_bins(t, (0.5, 0.9)), "abandoned_queue": v["abandoned_queue"],
            "abandon_wait_p": quantiles_from_bins(a, (0.5, 0.9)),
        }
        for n in within:
            out[f"within_{n}"] = within_from_bins(w, n)
        return out

    return row(totals, "total"), [{"key": g["key"], **row(g, g["key"])} for g in groups]


async def consultations(
    conn: asyncpg.Connection | asyncpg.Pool, period: Period, group_by: str | None, organisation: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[tuple[str, int]]]]:
    """(totals, groups, breakdowns) from the consultation rollups (edges of the period from the facts)."""
    names = ["consultations", "referral_needed", "high_risk"]
    edge_rows = f"""(SELECT 1 AS sign, c.* FROM {_edge_rows("consultations", "recorded_at")}) v"""
    where = "($6::text IS NULL OR organisation_id = $6)"

    def parts(cube: int, rkey: str, fkey: str) -> str:
        measures = ("sum(sign), sum(sign * referral_needed::int), sum(sign * (risk IN ('high', 'imminent'))::int)")
        if cube == 6:
            facts = (f"SELECT u, {measures} FROM {edge_rows} CROSS JOIN LATERAL unnest(v.categories) u "
                     f"WHERE {where} GROUP BY 1")
        else:
            facts = f"SELECT {fkey}, {measures} FROM {edge_rows} WHERE {where} GROUP BY 1"
        return f"""WITH parts AS (
            SELECT {rkey} AS key, {", ".join(names)}
              FROM {_rollup_rows("consultation_rollup", cube, "($6::text IS NULL OR t.organisation = $6)")}
            UNION ALL {facts})"""

    cube, rkey, fkey, coarsest = CONSULTATION_ROLLUP_KEYS[group_by]
    args = [*_cover_args(period, coarsest), organisation]
    sums = ", ".join(f"coalesce(sum({n}), 0)::bigint AS {n}" for n in names)
    rows = await conn.fetch(f"""{parts(cube, rkey, fkey)}
        {_sum_groups(sums, "consultations", group_by is None)}""", *args)
    totals, groups = _totals_and_groups(rows, names)
    breakdowns: dict[str, list[tuple[str, int]]] = {}
    args = [*_cover_args(period, "m"), organisation]
    for name, cube, fkey in (("categories", 6, "u"), ("age_bands", 3, "age_band"), ("risks", 4, "risk")):
        rows = await conn.fetch(f"""{parts(cube, "k", fkey)}
            SELECT key AS code, sum(consultations)::bigint AS n FROM parts GROUP BY 1 HAVING sum(consultations) <> 0
             ORDER BY n DESC, code""", *args)
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
    recent = await conn.fetch(
        f"""SELECT field, grouping(field) = 1 AS total, count(*) AS attempts,
                   count(*) FILTER (WHERE answered_at IS NOT NULL) AS connected
              FROM "{SCHEMA}".contacts
             WHERE received_at > $1::timestamptz - interval '15 minutes' AND channel = 'phone'
             GROUP BY ROLLUP (field)""",
        newest,
    )
    rate = {(r["total"], r["field"]): r["connected"] / r["attempts"] for r in recent if r["attempts"]}
    return {
        "queue": {r["field"]: r["queue"] for r in rows},
        "busy": {r["field"]: r["busy"] for r in rows},
        "answer_rate_15m": rate.get((True, None)),
        "answer_rate_15m_by_field": {f: r for (total, f), r in rate.items() if not total and f is not None},
        "as_of": newest,
    }
