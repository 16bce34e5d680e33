"""Distinct callers over any from–to: counting each caller's last attempt in the period (from the
attempts' previous and next attempt in the same group) equals counting distinct caller keys, for any
from–to (edges inside days), under duplicates, shuffling and late events; and moving only the links
next to the contacts a batch changes keeps every link equal to the links computed from scratch."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.metrics.domain.callers import CALLER_CHAINS, CHAIN_LINKS, callers_in, chain_links, chain_of
from services.metrics.domain.counting import CountedContact, counted
from services.metrics.domain.facts import fold
from services.metrics.domain.periods import JST, Period
from tests.integration.metrics_support import caller_key, event, validated

TEL = "/partners/tel-platform/telephony"
START = datetime(2022, 7, 1, tzinfo=JST)
FIELDS = ("loneliness", "suicidal", None)
ORGS = ("npo-a", "npo-b", None)
PREFECTURES = ("13", "27", None)


def attempt_log(rnd: random.Random, contacts: int, callers: int, days: int) -> list[dict[str, Any]]:
    """Contacts of a few callers over a few days (ties in time included), from one prefecture or another,
    some choosing a field, some assigned or answered by one of an organisation's desks."""
    out = []
    for i in range(contacts):
        cid = f"c{i}"
        at = START + timedelta(minutes=rnd.randrange(days * 24 * 4) * 15)
        channel = rnd.choice(["phone", "phone", "chat"])
        received = {"contact_id": cid, "channel": channel, "caller_key": caller_key(rnd.randrange(callers), channel)}
        prefecture = rnd.choice(PREFECTURES)
        if prefecture is not None:  # where the caller is may change from one attempt to the next
            received["prefecture"] = prefecture
        out.append(event("contact.received", f"{cid}-r", at, received, TEL))
        field = rnd.choice(FIELDS)
        if field is not None:
            out.append(event("contact.field_selected", f"{cid}-f", at + timedelta(seconds=20),
                             {"contact_id": cid, "field": field, "menu_position": 1}, TEL))
        org = rnd.choice(ORGS)
        desk = f"{org}-{rnd.randrange(2)}"
        if org is not None and rnd.random() < 0.6:
            out.append(event("contact.answered", f"{cid}-w", at + timedelta(seconds=60),
                             {"contact_id": cid, "desk_id": desk, "organisation_id": org,
                              "wait_seconds": 30.0}, TEL))
        elif org is not None:
            out.append(event("routing.assigned", f"{cid}-s", at + timedelta(seconds=40),
                             {"contact_id": cid, "desk_id": desk, "organisation_id": org,
                              "field": field or "hardship", "reason": "free_line"}, "/tsunagu/routing"))
    return out


def counted_contacts(events: list) -> dict[str, CountedContact]:
    out = {}
    for cid, f in fold(events).contacts.items():
        c = counted(f)
        if c is not None:
            out[cid] = c
    return out


def brute_force(contacts: dict[str, CountedContact], period: Period, chain: int, connected: bool) -> dict:
    groups: dict[tuple, set] = {}
    for c in contacts.values():
        if c.caller_key is not None and period.start <= c.received_at < period.end and (c.connected or not connected):
            groups.setdefault(chain_of(c, chain)[1:], set()).add(c.caller_key)
    return {k: len(v) for k, v in groups.items()}


def by_links(contacts: dict[str, CountedContact], period: Period, chain: int, connected: bool) -> dict:
    links = chain_links(contacts)
    i = CHAIN_LINKS.index((chain, connected))
    members: dict[tuple, list] = {}
    for cid, c in contacts.items():
        link = links[cid][i]
        if link is not None:
            members.setdefault(chain_of(c, chain)[1:], []).append((c.received_at, *link))
    counts = {k: callers_in(period, m) for k, m in members.items()}
    return {k: n for k, n in counts.items() if n}


instants = st.integers(0, 9 * 24 * 4).map(lambda q: START - timedelta(days=1) + timedelta(minutes=15 * q))
odd_instants = st.integers(0, 9 * 24 * 3600).map(lambda s: START - timedelta(days=1) + timedelta(seconds=s))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), contacts=st.integers(1, 60), callers=st.integers(1, 12),
       bounds=st.tuples(st.one_of(instants, odd_instants), st.one_of(instants, odd_instants)),
       repeats=st.integers(0, 40))
def test_last_attempts_in_the_period_count_the_distinct_callers(seed, contacts, callers, bounds, repeats):
    rnd = random.Random(seed)
    log = validated(attempt_log(rnd, contacts, callers, days=7))
    sent = log + [rnd.choice(log) for _ in range(repeats)]
    rnd.shuffle(sent)
    lo, hi = sorted(bounds)
    if lo == hi:
        hi = lo + timedelta(minutes=1)
    period = Period(lo, hi)
    mine = counted_contacts(sent)
    assert mine == counted_contacts(log)
    for chain in range(len(CALLER_CHAINS)):
        for connected in (False, True):
            assert by_links(mine, period, chain, connected) == brute_force(mine, period, chain, connected), (
                chain, connected)


def moved_neighbours(contacts: dict[str, CountedContact], view: CountedContact, cid: str) -> set[str]:
    """The contacts just before and just after a position in each of its chains (store.callers.CHAINS_APPLY)."""
    out = set()
    for chain, connected in CHAIN_LINKS:
        if view.caller_key is None or (connected and not view.connected):
            continue
        same = sorted((c.received_at, other) for other, c in contacts.items()
                      if c.caller_key is not None and chain_of(c, chain) == chain_of(view, chain)
                      and (c.connected or not connected))
        before = [x for x in same if x < (view.received_at, cid)]
        after = [x for x in same if x > (view.received_at, cid)]
        out |= {before[-1][1]} if before else set()
        out |= {after[0][1]} if after else set()
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), contacts=st.integers(1, 40), callers=st.integers(1, 6),
       batches=st.integers(1, 12))
def test_moving_only_the_links_next_to_changed_contacts_keeps_every_link_exact(seed, contacts, callers, batches):
    rnd = random.Random(seed)
    log = validated(attempt_log(rnd, contacts, callers, days=3))
    sent = log + [rnd.choice(log) for _ in range(len(log) // 3)]
    rnd.shuffle(sent)  # late events: a contact's received, choice and answer arrive in any batches
    cuts = sorted(rnd.sample(range(1, len(sent)), k=min(batches - 1, len(sent) - 1)))
    seen: list = []
    links: dict[str, tuple] = {}
    before: dict[str, CountedContact] = {}
    for a, b in zip([0, *cuts], [*cuts, len(sent)], strict=True):
        seen += sent[a:b]
        after = counted_contacts(seen)
        moved = {cid for cid in set(before) | set(after) if before.get(cid) != after.get(cid)}
        candidates = set(moved)
        for cid in moved:
            for view in (before.get(cid), after.get(cid)):
                if view is not None:
                    candidates |= moved_neighbours(after, view, cid)
        fresh = chain_links(after)
        for cid in candidates:
            if cid in fresh:
                links[cid] = fresh[cid]
        assert links == fresh
        before = after
