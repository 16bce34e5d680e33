"""Every rollup and the callers' links from the facts, from scratch: a catch-up's switch to live, a
schema that had facts before the rollups existed, and benchmarks that write facts directly."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from schemas.timezone import JST
from services.metrics.store.callers import CHAIN_GROUPS, caller_rollup_sql, rebuild_links
from services.metrics.store.rollups import consultation_rollup_sql, contact_hist_sql, contact_rollup_sql
from services.metrics.store.sql import ROLLUP_MEASURES, TZ_SQL, S, contact_view

_FACTS_DELTA = (f"(SELECT 1 AS sign, {contact_view(lambda col: col)} FROM {S}.contacts "
                "WHERE received_at >= $1 AND received_at < $2) v")
_CONSULTATION_FACTS_DELTA = (f"(SELECT 1 AS sign, * FROM {S}.consultations "
                             "WHERE recorded_at >= $1 AND recorded_at < $2) v")
_LINKS_DELTA = f"(SELECT 1 AS sign, * FROM {S}.caller_links WHERE received_at >= $1 AND received_at < $2) v"
_DAILY = """(VALUES ('d'::"char")) g(grain)"""


def _coarser(table: str, key: list[str], measures: list[str], grain: str, finer: str) -> str:
    """Sum the ``finer`` grain's rows into ``grain`` (a day or a month in Japan time)."""
    unit = "day" if grain == "d" else "month"
    cols = ", ".join(key)
    return f"""INSERT INTO {S}.{table} AS t (grain, bucket, {cols}, {", ".join(measures)})
        SELECT '{grain}', date_trunc('{unit}', bucket, {TZ_SQL}), {cols}, {", ".join(f"sum({m})" for m in measures)}
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
        await rebuild_links(conn)
        months = []
        t = _floor_month(lo)
        while t <= hi:
            nxt = _next_month(t)
            months.append((t, nxt))
            t = nxt
        for a, b in months:
            await conn.execute(contact_rollup_sql(_FACTS_DELTA, _DAILY), a, b)
            await conn.execute(contact_hist_sql(_FACTS_DELTA, _DAILY), a, b)
            await conn.execute(consultation_rollup_sql(_CONSULTATION_FACTS_DELTA, _DAILY), a, b)
            await conn.execute(caller_rollup_sql(_LINKS_DELTA, _DAILY), a, b)
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


def _floor_month(t: datetime) -> datetime:
    local = t.astimezone(JST)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(t: datetime) -> datetime:
    return t.replace(year=t.year + t.month // 12, month=t.month % 12 + 1)
