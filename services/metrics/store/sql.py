"""SQL pieces several rooms of the store share: the schema and time zone, a contacts row as the
secretariat counts it (for the rollups' deltas, their rebuild and a period's edges alike), the contact
measures the rollups keep, and the grouping of a view into totals and groups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from services.metrics.domain.rollups import HISTOGRAM_EDGES

SCHEMA = "metrics"
TZ = "Asia/Tokyo"
S = f'"{SCHEMA}"'
TZ_SQL = f"'{TZ}'"
# {t}: a timestamptz's hour of day and day in Japan time
HOUR = f"extract(hour FROM {{t}} AT TIME ZONE {TZ_SQL})::int"
HOUR_TEXT = HOUR + "::text"
DAY = f"to_char({{t}} AT TIME ZONE {TZ_SQL}, 'YYYY-MM-DD')"
GRAINS_SQL = """(VALUES ('d'::"char"), ('m'::"char")) g(grain)"""
_NEG_EDGES = "ARRAY[" + ",".join(str(-e) for e in reversed(HISTOGRAM_EDGES)) + "]::float8[]"


def bin_sql(value: str) -> str:
    """SQL for domain.rollups.bin_of: how many histogram edges lie below the value."""
    return f"({len(HISTOGRAM_EDGES)} - width_bucket(-({value})::float8, {_NEG_EDGES}))::smallint"


def contact_view(c: Callable[[str], str], alias: Callable[[str], str] = lambda n: n) -> str:
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


# the names contact_view gives, in its order
VIEW_NAMES = ["received_at", "channel", "caller_key", "prefecture", "field", "organisation", "desk", "connected",
              "abandon_stage", "overflowed", "wait", "talk", "queue_wait"]
# a contact view's rows (each with a ``sign``: +1, or −1 for a delta's old row) summed into the measures
# contact_rollup keeps
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

# group_by -> the key of a CONTACTS_VIEW row
CONTACT_DIMENSIONS = {
    "field": "field", "organisation": "organisation", "desk": "desk", "channel": "channel",
    "prefecture": "prefecture", "hour": HOUR.format(t="received_at"), "day": DAY.format(t="received_at"),
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


def grouped_sql(view: str, aggregates: str, key: str | None) -> str:
    """SQL: ``aggregates`` over ``view`` in total and, with a ``key``, per group (the totals row first)."""
    if key is None:
        return f"SELECT NULL AS key, true AS is_total, {aggregates} FROM ({view}) v"
    return (
        f"SELECT {key} AS key, GROUPING({key}) = 1 AS is_total, {aggregates} FROM ({view}) v "
        f"GROUP BY GROUPING SETS (({key}), ()) ORDER BY is_total DESC, key NULLS LAST"
    )


def split_totals(rows: list[asyncpg.Record]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(totals, groups) of a grouped_sql answer."""
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
