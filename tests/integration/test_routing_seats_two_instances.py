"""Two routing processes, calls and chats mixed, seats holding three conversations, one process SIGKILLed
with chats in flight.

The test plays the platforms: it answers every assignment at once (a chat's first response), keeps the
conversation a moment and ends it, freeing the place *before* it publishes the ``contact.ended`` that lets
routing reuse it. From the published decisions, as they arrive, it checks that no seat ever holds more
than ``conversations_per_seat``, that a call never shares a seat, that no phone line is booked twice and
that no contact holds two places. In the end every contact was assigned exactly once and ended.
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
    triaged,
)
from tests.support import T0

pytestmark = pytest.mark.integration

CONTACTS = 300
DESKS = [
    {"org": "npo-a", "id": "a-phone", "fields": ["loneliness", "hardship"], "lines": 3},
    {"org": "npo-b", "id": "b-line", "fields": ["loneliness", "hardship"], "lines": 0, "seats": 2,
     "conversations_per_seat": 3},
    {"org": "npo-c", "id": "c-blended", "fields": ["loneliness", "suicidal"], "lines": 1, "seats": 2,
     "conversations_per_seat": 2, "blended": True},
    {"org": "npo-d", "id": "d-crisis", "fields": ["suicidal"], "lines": 1, "seats": 1, "conversations_per_seat": 2,
     "imminent": True},
]
BY_ID = {d["id"]: d for d in DESKS}


async def test_two_instances_never_overfill_a_seat_and_lose_no_chat_when_one_is_killed(routing_rig, tmp_path):
    rig = routing_rig
    path = tmp_path / "seats.yaml"
    path.write_text(yaml.safe_dump(desk_registry(
        DESKS, overflow_after_s={"default": 3600},
        channels={"chat": {"overflow_after_s": {"default": 3600}, "offer_timeout_s": 3600},
                  "sns": {"overflow_after_s": {"default": 3600}, "offer_timeout_s": 3600}})))
    rig.start("routing-a", registry=path)
    b = rig.start("routing-b", registry=path)
    await asyncio.sleep(4)  # the group settles: each instance holds some partitions

    started = time.monotonic()

    def now():
        return T0 + timedelta(seconds=time.monotonic() - started)

    on_lines: dict[str, set[str]] = {d: set() for d in BY_ID}
    on_seats: dict[tuple[str, int], set[str]] = {}
    channel_of: dict[str, str] = {}
    live: dict[str, tuple[str, int | None]] = {}
    assigned: dict[str, set[str]] = {}
    finished: set[str] = set()
    violations: list[str] = []
    talks: set[asyncio.Task] = set()
    peak = [0]  # the most conversations one seat held at once

    def place(cid: str) -> set[str]:
        desk, seat = live[cid]
        return on_lines[desk] if seat is None else on_seats.setdefault((desk, seat), set())

    async def talk_and_end(cid: str, desk: str) -> None:
        await rig.publish([answered(cid, desk, BY_ID[desk]["org"], now())])
        await asyncio.sleep(random.uniform(0.05, 0.4))
        place(cid).discard(cid)  # freed here first, then told to routing
        live.pop(cid, None)
        finished.add(cid)
        await rig.publish([ended(cid, now())])

    def check(cid: str, desk: str, seat: int | None) -> None:
        spec = BY_ID[desk]
        if cid in live or cid in finished:
            violations.append(f"{cid} assigned again while {live.get(cid, 'ended')}")
        if seat is None:
            if channel_of[cid] != "phone" or len(on_lines[desk]) >= spec["lines"]:
                violations.append(f"{desk} line given {cid} ({channel_of[cid]}) with {sorted(on_lines[desk])}")
            return
        holders = on_seats.get((desk, seat), set())
        if seat > spec.get("seats", 0):
            violations.append(f"{desk} has no seat {seat}")
        if channel_of[cid] == "phone" and (holders or not spec.get("blended")):
            violations.append(f"{desk} seat {seat} given call {cid} beside {sorted(holders)}")
        if any(channel_of[h] == "phone" for h in holders):
            violations.append(f"{desk} seat {seat} on a call given {cid}")
        if len(holders) >= spec.get("conversations_per_seat", 1):
            violations.append(f"{desk} seat {seat} given {cid} with {sorted(holders)}")

    def on_assigned(event_id: str, data: dict) -> None:
        cid, desk, seat = data["contact_id"], data["desk_id"], data.get("seat")
        assigned.setdefault(cid, set()).add(event_id)
        check(cid, desk, seat)
        live[cid] = (desk, seat)
        place(cid).add(cid)
        if seat is not None:
            peak[0] = max(peak[0], len(place(cid)))
        task = asyncio.create_task(talk_and_end(cid, desk))
        talks.add(task)
        task.add_done_callback(talks.discard)

    fields = ["loneliness", "hardship", "suicidal"]
    player = asyncio.create_task(play_assignments(rig, lambda: len(finished) >= CONTACTS, violations, on_assigned))
    killed_at = None
    for n in range(CONTACTS):
        cid = f"s{n:04d}"
        channel_of[cid] = random.choice(["phone", "chat", "chat", "sns"])
        events = [received(cid, now(), channel=channel_of[cid])]
        if channel_of[cid] != "phone" and random.random() < 0.5:
            events.append(triaged(cid, random.choice(["low", "medium", "high", "imminent"]), now()))
        events.append(field_selected(cid, random.choice(fields), now()))
        await rig.publish(events)
        if n == CONTACTS // 3:
            await asyncio.to_thread(b.kill)  # mid-run, likely mid-batch, chats in flight
            killed_at = len(assigned)
        await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(player, timeout=150)
    finally:
        player.cancel()
        for task in list(talks):
            task.cancel()

    assert killed_at is not None and killed_at > 0
    assert violations == []
    assert len(assigned) == CONTACTS, f"{CONTACTS - len(assigned)} contacts never assigned"
    assert all(len(ids) == 1 for ids in assigned.values())
    assert finished == set(assigned)
    assert peak[0] >= 2, "no seat ever held two conversations: capacity > 1 was not exercised"
