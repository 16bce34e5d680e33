"""Distinct callers over any from–to: each attempt's previous and next attempt in its caller's chains.

``chain_links`` and ``callers_in`` state in Python the rule ``store/callers.py`` applies in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from services.metrics.domain.counting import CountedContact
from services.metrics.domain.periods import Period
from services.metrics.domain.rollups import cover, whole_span

# Distinct callers are not additive, but the attempts that are the LAST of their caller in a period are:
# the callers of [from, to) are the attempts in [from, to) whose caller's next attempt (in the same
# group) is at or after ``to``, or absent. So each attempt keeps the event time of its caller's previous
# and next attempt in each *chain* — the caller's attempts in one group, ordered by (event time, contact
# id) — and the rollup counts attempts by (bucket, day of the next attempt). "Got through" is the same
# over the chains of connected attempts only. A chain is named by the caller key and these values:
# Every chain is within one channel: a caller key belongs to one channel (intake hashes the E.164 number
# for phones and ``<channel>:<id>`` otherwise — schemas' ContactReceived.caller_key), so the callers of
# every channel together are the sum of each channel's.
CALLER_CHAINS: tuple[tuple[str, ...], ...] = (
    ("channel",),  # 0: the totals; group_by=channel
    ("channel", "field"),  # 1: group_by=field
    ("channel", "organisation"),  # 2: group_by=organisation, and a partner's scope
    ("channel", "organisation", "field"),  # 3: a partner's scope by field
    ("channel", "organisation", "desk"),  # 4: group_by=desk (a desk answers for one organisation)
    ("channel", "prefecture"),  # 5: group_by=prefecture
    ("channel", "hour"),  # 6: group_by=hour (of day, Japan time)
)
# (chain, connected only) in the order of the stored arrays of previous / next times
CHAIN_LINKS: tuple[tuple[int, bool], ...] = tuple((c, k) for c in range(len(CALLER_CHAINS)) for k in (False, True))

Link = tuple[datetime | None, datetime | None]  # (previous, next) event time in the chain


def chain_of(c: CountedContact, chain: int) -> tuple[Any, ...]:
    return (c.caller_key, *(c.key(name) for name in CALLER_CHAINS[chain]))


def chain_links(contacts: dict[str, CountedContact]) -> dict[str, tuple[Link | None, ...]]:
    """contact id -> per CHAIN_LINKS its (previous, next) attempt time (None where it is not in that
    chain: no caller key, or not connected for a chain of connected attempts)."""
    members: dict[tuple[Any, ...], list[tuple[datetime, str]]] = {}
    for cid, c in contacts.items():
        if c.caller_key is None:
            continue
        for i, (chain, connected) in enumerate(CHAIN_LINKS):
            if c.connected or not connected:
                members.setdefault((i, *chain_of(c, chain)), []).append((c.received_at, cid))
    links: dict[str, list[Link | None]] = {cid: [None] * len(CHAIN_LINKS) for cid in contacts}
    for (i, *_), ordered in members.items():
        ordered.sort()
        for j, (_, cid) in enumerate(ordered):
            prev = ordered[j - 1][0] if j > 0 else None
            nxt = ordered[j + 1][0] if j + 1 < len(ordered) else None
            links[cid][i] = (prev, nxt)
    return {cid: tuple(v) for cid, v in links.items()}


def callers_in(period: Period, members: Iterable[tuple[datetime, datetime | None, datetime | None]]) -> int:
    """Distinct callers of one chain group in ``period``, from its attempts' (time, previous, next) — by
    the rule the store applies to its rollup and edges: the attempts whose next is at or after the end.
    Over whole days [D1, D2) the rollup can only tell "next on or after D2" (it keeps the next's day);
    those whose next falls in [D2, to) are exactly the attempts of the tail [D2, to) whose previous lies in
    [D1, D2), so they are subtracted from the tail's facts."""
    c = cover(period)
    span = whole_span(c)
    n = 0
    for t, prev, nxt in members:
        if span is not None and span[0] <= t < span[1]:
            n += nxt is None or nxt >= span[1]  # the rollup: next's day on or after D2
        elif period.start <= t < period.end:
            n += nxt is None or nxt >= period.end  # the edges, from the facts
            if span is not None and t >= span[1] and prev is not None and span[0] <= prev < span[1]:
                n -= 1  # its previous was counted in the whole days as a last attempt, but is not
    return n
