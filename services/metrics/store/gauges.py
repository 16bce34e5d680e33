"""Live gauges for ops, read from the facts (so every instance reports the same values)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.metrics.store.sql import SCHEMA


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
