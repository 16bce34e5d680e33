"""The capacity plan's inputs, per field: arrivals by hour of day, talk time and patience, and the
most talks the period shows at once."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.metrics.domain.periods import Period
from services.metrics.store.sql import CONTACTS_VIEW, HOUR


async def arrivals_by_field_and_hour(conn: Any, period: Period) -> list[asyncpg.Record]:
    """Phone attempts per chosen field and hour of day (Japan time)."""
    return await conn.fetch(
        f"SELECT field, {HOUR.format(t='received_at')} AS hour, count(*) AS attempts, "
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
    """The most calls in progress at once per field: the phone lines the period shows were staffed."""
    return await peak_in_progress_by_field(conn, period, ["phone"])


async def peak_in_progress_by_field(conn: Any, period: Period, channels: list[str]) -> dict[str, int]:
    """The most contacts of ``channels`` in progress at once per field (answer or first response to end)."""
    rows = await conn.fetch(
        f"""WITH v AS (SELECT * FROM ({CONTACTS_VIEW}) c WHERE channel = ANY($5::text[])),
            steps AS (
                SELECT field, answered_at AS at, 1 AS step FROM v
                 WHERE connected AND talk_seconds IS NOT NULL AND field IS NOT NULL
                UNION ALL
                SELECT field, answered_at + talk_seconds * interval '1 second', -1 FROM v
                 WHERE connected AND talk_seconds IS NOT NULL AND field IS NOT NULL)
            SELECT field, max(busy) AS busy FROM (
                SELECT field, sum(step) OVER (PARTITION BY field ORDER BY at, step
                                              ROWS UNBOUNDED PRECEDING) AS busy FROM steps) s
             GROUP BY field""",
        period.start, period.end, None, None, channels,
    )
    return {r["field"]: int(r["busy"]) for r in rows}
