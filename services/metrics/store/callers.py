"""Distinct callers: each caller's attempts in chains (migrations 004, 008; domain.callers).

caller_links keeps, per contact, the values that put it in its chains and the event time of its
previous and next attempt in each; caller_rollup counts attempts by bucket and the next's day. A derive
(CHAINS_APPLY, run by derive_links over the contacts live batches listed as changed) finds the contacts
whose chain values changed and, in the facts, their neighbours before and after each old and new
position in each chain; it moves those contacts' links and the rollup by the difference — no other
contact's links can change. A moved contact's links are the neighbours of its new position. A
neighbour's link changes only on the side facing a moved position, in that chain (anything entering or
leaving next to it is a moved contact, found by that contact's own lookups): it becomes the new position
itself, or, beside an old position, the attempt on that position's other side. A rebuild derives every
contact's links from the facts at once (``rebuild_links``). Distinct callers over a period are read
from the links and their rollup (``distinct_callers``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from services.metrics.domain.callers import CALLER_CHAINS, CHAIN_LINKS
from services.metrics.domain.periods import Period
from services.metrics.domain.rollups import cover, whole_span
from services.metrics.store.sql import (
    CONTACT_DIMENSIONS,
    CONTACTS_VIEW,
    DAY,
    GRAINS_SQL,
    TZ_SQL,
    S,
    grouped_sql,
)

# i: 1-based index into prev_at / next_at
_CHAINS = "(VALUES " + ", ".join(
    f"({i}, {chain}, {str(connected).lower()})" for i, (chain, connected) in enumerate(CHAIN_LINKS, start=1)
) + ") ch(i, chain, connected_only)"
# a chain value as a contacts row counts it (CONTACTS_VIEW)
_CHAIN_VALUE = {"channel": "{c}.channel", "field": "coalesce({c}.field, {c}.assigned_field)",
                "organisation": "coalesce({c}.organisation_id, {c}.assigned_org)",
                "desk": "coalesce({c}.desk_id, {c}.assigned_desk)", "prefecture": "{c}.prefecture",
                "hour": f"extract(hour FROM {{c}}.received_at AT TIME ZONE {TZ_SQL})::smallint"}
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


def caller_rollup_sql(delta: str, grains: str = GRAINS_SQL, chains: str = "true") -> str:
    """``chains``: SQL, which of a delta row's chains (``ch``) it moves. The delta is summed by day first,
    then crossed with the grains."""
    groups = ", ".join(CHAIN_GROUPS)
    bucket = f"CASE g.grain WHEN 'd' THEN day ELSE date_trunc('month', day, {TZ_SQL}) END"
    return f"""INSERT INTO {S}.caller_rollup AS t (chain, connected, grain, bucket, {groups}, next_day, n)
        SELECT chain, connected, g.grain, {bucket}, {groups}, next_day, sum(n)
          FROM (SELECT ch.chain, ch.connected_only AS connected, date_trunc('day', received_at, {TZ_SQL}) AS day,
                       {", ".join(f"{_chain_value(n)} AS {n}" for n in CHAIN_GROUPS)},
                       date_trunc('day', next_at[ch.i], {TZ_SQL}) AS next_day, sum(sign) AS n
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
{caller_rollup_sql("delta", chains="(redo IS NULL OR ch.i = ANY(redo))")}
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


async def rebuild_links(conn: asyncpg.Connection) -> None:
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


# --- reading: distinct callers over any from–to ----------------------------------------------------


def caller_plan(group_by: str | None, channel: str | None,
                organisation: str | None) -> tuple[tuple[int, str | None], ...] | None:
    """Which chains (domain.callers.CALLER_CHAINS) answer a question: (chain, None) for the totals, then
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
    """Distinct callers per group of one chain over a period (domain.callers.callers_in): $1–$3 the whole
    buckets (grains, starts, ends), $4–$5 the edges, $6 channel, $7 organisation (NULL: any), $8–$9 the whole
    buckets' span [D1, D2), $10 the period's end. With ``key`` "day" each day's part of the period is a
    period of its own (whole days only, no $8–$10): a whole day's callers are its attempts whose next is
    on a later day, an edge's those whose next is at or after the edge's end."""
    day = key == "day"
    t_key = DAY.format(t="t.bucket") if day else f"t.{key}" if key else "NULL::text"
    l_key = DAY.format(t="e.lo") if day else f"l.{key}" if key else "NULL::text"
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
    sql = grouped_sql(CONTACTS_VIEW, "count(DISTINCT caller_key) AS callers, "
                      "count(DISTINCT caller_key) FILTER (WHERE connected) AS callers_connected", key)
    for r in await conn.fetch(sql, period.start, period.end, channel, organisation):
        out["total" if r["is_total"] else r["key"]] = (r["callers"], r["callers_connected"])
    return out
