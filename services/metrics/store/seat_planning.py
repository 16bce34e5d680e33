"""The seat plan's inputs for text channels (chat, SNS), per field: arrivals by hour of day, conversation
time, patience until the first response, the counsellor's first-response delay, and the most
conversations the period shows at once. The phone plan's queries (``planning``) with a channel filter,
plus the one measure only text channels have: assignment to first response."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.metrics.domain.periods import Period
from services.metrics.store import planning
from services.metrics.store.sql import CONTACTS_VIEW, HOUR, S

# the counted view (its own channel filter off) cut to a list of channels, $5
_VIEW = f"SELECT * FROM ({CONTACTS_VIEW}) c WHERE channel = ANY($5::text[])"


async def arrivals_by_field_and_hour(conn: Any, period: Period, channels: list[str],
                                     within_s: float) -> list[asyncpg.Record]:
    """Contacts of ``channels`` per chosen field and hour of day (Japan time): connected (a first
    response) and connected within ``within_s`` seconds of arriving."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT field, {HOUR.format(t='received_at')} AS hour, count(*) AS attempts, "
        "count(*) FILTER (WHERE connected) AS connected, "
        "count(*) FILTER (WHERE connected AND wait_seconds <= $6) AS within "
        f"FROM ({_VIEW}) v WHERE field IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
        period.start, period.end, None, None, channels, within_s,
    )
    return rows


async def service_by_field(conn: Any, period: Period, channels: list[str]) -> list[asyncpg.Record]:
    """Per field: mean conversation time (first response to end); people who left before the first
    response and the time everyone waited for it (answered or not) — the exponential patience estimate
    is leavers / waiting time, as for phone."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT field,
                   (avg(talk_seconds::numeric) FILTER (WHERE connected AND talk_seconds IS NOT NULL))::float8
                     AS talk_mean,
                   count(*) FILTER (WHERE abandon_stage IN ('queue', 'ringing')) AS abandoned,
                   (coalesce(sum(wait_seconds::numeric) FILTER (WHERE connected), 0)
                     + coalesce(sum(abandon_wait::numeric) FILTER (WHERE abandon_stage IN ('queue', 'ringing')), 0)
                     )::float8 AS waited_seconds
              FROM ({_VIEW}) v WHERE field IS NOT NULL GROUP BY field ORDER BY field""",
        period.start, period.end, None, None, channels,
    )
    return rows


async def response_delay_by_field(conn: Any, period: Period, channels: list[str]) -> dict[str, float]:
    """Per field: the mean time from reaching a seat (the latest ``routing.assigned`` before the answer)
    to the counsellor's first response. An assignment after the answer is a transfer's, not the wait's."""
    rows = await conn.fetch(
        f"""SELECT coalesce(field, assigned_field) AS field,
                   avg(extract(epoch FROM answered_at - assigned_at))::float8 AS delay
              FROM {S}.contacts
             WHERE received_at >= $1 AND received_at < $2 AND channel = ANY($3::text[])
               AND answered_at IS NOT NULL AND assigned_at IS NOT NULL AND answered_at >= assigned_at
               AND coalesce(field, assigned_field) IS NOT NULL
             GROUP BY 1""",
        period.start, period.end, channels,
    )
    return {r["field"]: float(r["delay"]) for r in rows if r["delay"] is not None}


async def peak_conversations_by_field(conn: Any, period: Period, channels: list[str]) -> dict[str, int]:
    """The most conversations in progress at once per field (first response to end): with N a seat,
    at least ⌈peak / N⌉ seats were staffed."""
    return await planning.peak_in_progress_by_field(conn, period, channels)
