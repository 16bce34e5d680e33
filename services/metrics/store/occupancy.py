"""Seat figures in SQL: domain.occupancy's definitions over the seat events (migration 009) and the
contacts' ends, computed at read time for the period asked (no rollup: a seat's in-use time is a union of
intervals, which does not add up across days)."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.metrics.domain.periods import Period
from services.metrics.store.sql import DAY, HOUR, S, split_totals

# $1 period start, $2 period end, $3 organisation (None: every one)
_SPELLS = f"""
    a AS (SELECT * FROM {S}.seat_events e
           WHERE e.kind = 'assigned' AND e.seat IS NOT NULL AND e.at < $2
             AND ($3::text IS NULL OR e.organisation = $3)),
    raw AS (SELECT a.desk, a.organisation, a.seat, coalesce(a.capacity, 1) AS capacity, a.channel, a.at AS start,
                   n.at AS next_at, coalesce(c.ended_at, c.abandoned_at) AS ended, c.answered_at
              FROM a
              LEFT JOIN LATERAL (SELECT n.at FROM {S}.seat_events n
                                  WHERE n.contact_id = a.contact_id AND (n.at, n.tb) > (a.at, a.tb)
                                  ORDER BY n.at, n.tb LIMIT 1) n ON true
              LEFT JOIN {S}.contacts c ON c.contact_id = a.contact_id),
    spells AS (SELECT desk, organisation, seat, capacity, start, stop,
                      CASE WHEN channel = 'phone' THEN capacity ELSE 1 END AS weight,
                      coalesce(answered_at <= stop, false) AS conversation
                 FROM (SELECT *, greatest(least(next_at, ended), start) AS stop FROM raw) r
                WHERE coalesce(next_at, ended) IS NOT NULL),
    clipped AS (SELECT desk, organisation, seat, capacity, weight, greatest(start, $1) AS lo, least(stop, $2) AS hi
                  FROM spells WHERE start < $2 AND stop > $1),
    marked AS (SELECT *, CASE WHEN lo <= max(hi) OVER (PARTITION BY desk, organisation, seat ORDER BY lo, hi
                                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                              THEN 0 ELSE 1 END AS opens
                 FROM clipped),
    numbered AS (SELECT *, sum(opens) OVER (PARTITION BY desk, organisation, seat ORDER BY lo, hi
                                            ROWS UNBOUNDED PRECEDING) AS island
                   FROM marked),
    islands AS (SELECT desk, organisation, seat, min(lo) AS lo, max(hi) AS hi, max(capacity) AS capacity
                  FROM numbered GROUP BY desk, organisation, seat, island)"""


def _hour_slices(source: str, columns: str) -> str:
    """Each row of ``source`` cut into the hours it touches: ``h`` the hour, ``seconds`` its part."""
    return f"""SELECT {columns}, h AS at,
                      extract(epoch FROM least(hi, h + interval '1 hour') - greatest(lo, h)) AS seconds
                 FROM {source} CROSS JOIN LATERAL generate_series(date_trunc('hour', lo), hi, interval '1 hour') h
                WHERE h < hi"""


# group_by -> the key of a parts row (``at``: the hour, or a conversation's start)
SEAT_KEYS: dict[str, str] = {
    "desk": "desk", "organisation": "organisation", "hour": HOUR.format(t="at"), "day": DAY.format(t="at"),
}
SEAT_MEASURES = ["conversations", "held_seconds", "in_use_seconds", "capacity_seconds", "seats"]


def seats_sql(group_by: str | None) -> str:
    key = SEAT_KEYS[group_by] if group_by else "NULL::text"
    parts = f"""
    parts AS (
        SELECT desk, organisation, NULL::text AS seat_id, start AS at, 1 AS conversations, 0::numeric AS held,
               0::numeric AS in_use, 0::numeric AS capacity_s
          FROM spells WHERE conversation AND start >= $1 AND start < $2
        UNION ALL
        SELECT desk, organisation, NULL, at, 0, seconds * weight, 0, 0
          FROM ({_hour_slices("clipped", "desk, organisation, weight")}) held
        UNION ALL
        SELECT desk, organisation, CASE WHEN seconds > 0 THEN desk || ' ' || seat END, at, 0, 0, seconds,
               seconds * capacity
          FROM ({_hour_slices("islands", "desk, organisation, seat, capacity")}) used)"""
    sums = """sum(conversations)::bigint AS conversations, sum(held)::float8 AS held_seconds,
              sum(in_use)::float8 AS in_use_seconds, sum(capacity_s)::float8 AS capacity_seconds,
              count(DISTINCT seat_id) AS seats"""
    grouped = (f"SELECT NULL AS key, true AS is_total, {sums} FROM parts" if group_by is None else
               f"SELECT {key} AS key, GROUPING({key}) = 1 AS is_total, {sums} FROM parts "
               f"GROUP BY GROUPING SETS (({key}), ()) ORDER BY is_total DESC, key NULLS LAST")
    return f"WITH {_SPELLS},{parts}\n{grouped}"


async def seat_figures(conn: asyncpg.Connection | asyncpg.Pool, period: Period, group_by: str | None,
                       organisation: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(totals, groups) of the seat counts (domain.occupancy.seat_counts in SQL)."""
    rows = await conn.fetch(seats_sql(group_by), period.start, period.end, organisation)
    totals, groups = split_totals(rows)
    if totals.get("conversations") is None:  # no spell at all in the period
        totals = {"conversations": 0, "held_seconds": 0.0, "in_use_seconds": 0.0, "capacity_seconds": 0.0,
                  "seats": 0}
    return totals, groups
