"""The secretariat's figures: whole days and months from the rollups, the hours at a period's edges
from the facts — exact for any from–to (domain.rollups.cover). What the rollups cannot answer (a
service level off the histogram's edges) is counted from the facts."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.metrics.domain.periods import Period
from services.metrics.domain.rollups import EDGE_INDEX, cover, quantiles_from_bins, within_from_bins
from services.metrics.store.callers import distinct_callers
from services.metrics.store.sql import (
    CONTACT_DIMENSIONS,
    CONTACT_MEASURES,
    CONTACTS_VIEW,
    DAY,
    HOUR,
    ROLLUP_MEASURES,
    SCHEMA,
    TZ_SQL,
    S,
    bin_sql,
    contact_view,
    grouped_sql,
    split_totals,
)

# --- counted from the facts: a service level off the histogram's edges ----------------------------


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
    sql = grouped_sql(CONTACTS_VIEW, _within_aggregates(within), key)
    return split_totals(await conn.fetch(sql, period.start, period.end, channel, organisation))


# --- from the rollups, the edges of the period from the facts ------------------------------------
# group_by -> (cube, key of a rollup row, key of a facts row, coarsest grain that still has the key)
_ROLLUP_DAY = f"to_char(bucket AT TIME ZONE {TZ_SQL}, 'YYYY-MM-DD')"
CONTACT_ROLLUP_KEYS: dict[str | None, tuple[int, str, str, str]] = {
    None: (0, "NULL::text", "NULL::text", "m"),
    "field": (1, "k", "field", "m"),
    "desk": (2, "k", "desk", "m"),
    "prefecture": (3, "k", "prefecture", "m"),
    "hour": (4, "k::int", HOUR.format(t="received_at"), "m"),
    "organisation": (0, "organisation", "organisation", "m"),
    "channel": (0, "channel", "channel", "m"),
    "day": (0, _ROLLUP_DAY, DAY.format(t="received_at"), "d"),
}
CONSULTATION_ROLLUP_KEYS: dict[str | None, tuple[int, str, str, str]] = {
    None: (0, "NULL::text", "NULL::text", "m"),
    "field": (1, "k", "field", "m"),
    "desk": (2, "k", "desk_id", "m"),
    "age_band": (3, "k", "age_band", "m"),
    "risk": (4, "k", "risk", "m"),
    "hour": (5, "k::int", HOUR.format(t="recorded_at"), "m"),
    "organisation": (0, "organisation", "organisation_id", "m"),
    "day": (0, _ROLLUP_DAY, DAY.format(t="recorded_at"), "d"),
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


_CONTACT_EDGE_ROWS = f"""(SELECT 1 AS sign, {contact_view(lambda col: "c." + col)}
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
            SELECT {fkey}, m.measure, {bin_sql("m.value")}, count(*) FROM {_CONTACT_EDGE_ROWS} {_MEASURE_VALUES}
             WHERE {_EDGE_WHERE} AND m.value IS NOT NULL GROUP BY 1, 2, 3)
        SELECT key, measure::text AS measure, bin, sum(n)::bigint AS n FROM parts GROUP BY 1, 2, 3 HAVING sum(n) <> 0"""
    out: dict[Any, dict[str, dict[int, int]]] = {}
    for r in await conn.fetch(sql, *_cover_args(period, coarsest), channel, organisation):
        for key in ("total", r["key"]) if group_by else ("total",):
            bins = out.setdefault(key, {}).setdefault(r["measure"], {})
            bins[r["bin"]] = bins.get(r["bin"], 0) + r["n"]
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
    (domain.rollups.HISTOGRAM_EDGES gives the precision), "answered within N s" exact for N on a bin edge —
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


# group_by -> the key of a REFERRALS_VIEW row
REFERRAL_DIMENSIONS = {
    "receiver_type": "coalesce(receiver_type, need)", "state": "state", "urgency": "urgency",
    "organisation": "organisation_id", "day": DAY.format(t="requested_at"),
}
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
    return split_totals(await conn.fetch(grouped_sql(REFERRALS_VIEW, REFERRAL_AGGREGATES, key),
                                         period.start, period.end, organisation))
