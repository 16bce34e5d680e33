"""Two routing processes in one consumer group, hundreds of contacts, one SIGKILLed mid-run.

The test plays the telephony platform: it answers every assignment at once and ends the call a
moment later, freeing the line. It checks from the published decisions, as they arrive, that no
desk is ever given more contacts than it has lines and that no contact holds two assignments —
sound because the platform frees a line (and forgets it) *before* it publishes the
``contact.ended`` that lets routing reuse it. In the end every contact was assigned exactly once
and ended: killing one instance lost no waiting contact and booked no line twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta

import pytest
import yaml

from tests.integration.routing_support import (
    answered,
    desk_registry,
    ended,
    field_selected,
    play_assignments,
    received,
    routing_rig_fixture,  # noqa: F401 - registers the routing_rig fixture
)
from tests.support import T0

pytestmark = pytest.mark.integration

CONTACTS = 300
DESKS = [
    {"org": "npo-a", "id": "a-lonely", "fields": ["loneliness"], "lines": 3},
    {"org": "npo-a", "id": "a-lonely-2", "fields": ["loneliness", "hardship"], "lines": 2},
    {"org": "npo-b", "id": "b-hardship", "fields": ["hardship"], "lines": 2},
    {"org": "npo-c", "id": "c-suicidal", "fields": ["suicidal"], "lines": 3},
    {"org": "npo-d", "id": "d-mixed", "fields": ["suicidal", "loneliness", "under18"], "lines": 2},
    {"org": "npo-e", "id": "e-under18", "fields": ["under18"], "lines": 1},
]
LINES = {d["id"]: d["lines"] for d in DESKS}
ORG = {d["id"]: d["org"] for d in DESKS}


async def test_two_instances_never_book_a_line_twice_and_lose_nothing_when_one_is_killed(routing_rig, tmp_path):
    rig = routing_rig
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(desk_registry(DESKS, overflow_after_s={"default": 3600})))
    rig.start("routing-a", registry=path)
    b = rig.start("routing-b", registry=path)
    await asyncio.sleep(4)  # the group settles: each instance holds some partitions

    started = time.monotonic()

    def now():
        return T0 + timedelta(seconds=time.monotonic() - started)

    active: dict[str, set[str]] = {d: set() for d in LINES}
    live: dict[str, str] = {}
    assigned: dict[str, set[str]] = {}  # contact -> ids of its assignment decisions
    finished: set[str] = set()
    violations: list[str] = []
    talks: set[asyncio.Task] = set()

    async def talk_and_end(cid: str, desk: str) -> None:
        await rig.publish([answered(cid, desk, ORG[desk], now())])
        await asyncio.sleep(random.uniform(0.05, 0.3))
        active[desk].discard(cid)  # freed here first, then told to routing
        live.pop(cid, None)
        finished.add(cid)
        await rig.publish([ended(cid, now())])

    def on_assigned(event_id: str, data: dict) -> None:
        cid, desk = data["contact_id"], data["desk_id"]
        assigned.setdefault(cid, set()).add(event_id)
        if cid in live or cid in finished:
            violations.append(f"{cid} assigned again while {live.get(cid, 'ended')}")
        if len(active[desk]) >= LINES[desk]:
            violations.append(f"{desk} given {cid} with {sorted(active[desk])} on {LINES[desk]} lines")
        active[desk].add(cid)
        live[cid] = desk
        task = asyncio.create_task(talk_and_end(cid, desk))
        talks.add(task)
        task.add_done_callback(talks.discard)

    fields = ["loneliness", "hardship", "suicidal", "under18"]
    player = asyncio.create_task(play_assignments(rig, lambda: len(finished) >= CONTACTS, violations, on_assigned))
    killed_at = None
    for n in range(CONTACTS):
        cid = f"k{n:04d}"
        await rig.publish([received(cid, now(), prefecture=random.choice(["13", "27", None])),
                           field_selected(cid, random.choice(fields), now())])
        if n == CONTACTS // 3:
            await asyncio.to_thread(b.kill)  # mid-run, likely mid-batch
            killed_at = len(assigned)
        await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(player, timeout=120)
    finally:
        player.cancel()
        for task in list(talks):
            task.cancel()

    assert killed_at is not None and killed_at > 0
    assert violations == []
    assert len(assigned) == CONTACTS, f"{CONTACTS - len(assigned)} contacts never assigned"
    assert all(len(ids) == 1 for ids in assigned.values())
    assert finished == set(assigned)
