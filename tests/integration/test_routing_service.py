"""routing as its own process: decisions on the topic, live state over HTTP, exact restart."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import httpx
import pytest

from tests.integration.routing_support import (
    answered,
    decisions,
    ended,
    field_selected,
    heartbeat,
    received,
    routing_rig_fixture,  # noqa: F401 - registers the routing_rig fixture
)
from tests.support import T0, read_topic

pytestmark = pytest.mark.integration


def s(seconds: float):
    return T0 + timedelta(seconds=seconds)


def summary(events: list[dict]) -> list[tuple]:
    return [(e["type"].split(".")[3], e["data"]["contact_id"], e["data"].get("desk_id")) for e in events]


async def wait_for(rig, count: int) -> list[dict]:
    records = await read_topic(rig.bootstrap, rig.topic("routing.decisions"), expect=count, timeout=30)
    out = decisions(records)
    return sorted(out, key=lambda e: (e["time"], e["id"]))


async def test_calls_are_assigned_queued_and_given_the_freed_line_and_state_survives_a_sigkill(routing_rig):
    rig = routing_rig
    process = rig.start()
    await rig.publish([received("c1", s(0)), field_selected("c1", "loneliness", s(1))])
    await wait_for(rig, 1)
    # c2 and c3 sit on different partitions: whichever is read first, they queue in choice order
    await rig.publish([received("c3", s(4)), field_selected("c3", "loneliness", s(5)),
                       received("c2", s(2)), field_selected("c2", "loneliness", s(3)),
                       answered("c1", "a-lonely", "npo-a", s(6))])
    got = await wait_for(rig, 3)
    assert {(kind, cid) for kind, cid, _ in summary(got)} == {("assigned", "c1"), ("queued", "c2"), ("queued", "c3")}
    assigned = next(e for e in got if e["type"] == "jp.tsunagu.routing.assigned.v1")
    assert assigned["source"] == "/tsunagu/routing" and assigned["subject"] == "c1"
    assert assigned["data"]["desk_id"] == "a-lonely" and assigned["data"]["reason"] == "free_line"
    await asyncio.sleep(0.5)  # the answer is applied too

    async with httpx.AsyncClient(base_url=process.url) as client:
        desks_before = (await client.get("/v1/desks", headers=rig.headers("secretariat"))).json()
        queues_before = (await client.get("/v1/queues", headers=rig.headers("secretariat"))).json()
        mine = (await client.get("/v1/desks", headers=rig.headers("npo-a"))).json()
        their_queues = (await client.get("/v1/queues", headers=rig.headers("npo-a"))).json()
        assert (await client.get("/v1/desks")).status_code == 401
        assert (await client.get("/v1/queues", headers=rig.headers("receiver"))).status_code == 403
        scrape = (await client.get("/metrics")).text  # ops: lines open and free per field
    assert re.search(r'tsunagu_open_lines\{[^}]*field="loneliness"[^}]*\} 1(\.0)?\n', scrape), scrape
    assert re.search(r'tsunagu_free_lines\{[^}]*field="loneliness"[^}]*\} 0(\.0)?\n', scrape), scrape
    lonely = next(d for d in desks_before["desks"] if d["desk_id"] == "a-lonely")
    assert (lonely["busy"], lonely["free"], lonely["open"]) == (1, 0, True)
    assert [d["desk_id"] for d in mine["desks"]] == ["a-lonely"]
    queue = next(q for q in queues_before["queues"] if q["field"] == "loneliness")
    assert [c["contact_id"] for c in queue["contacts"]] == ["c2", "c3"]
    assert [(q["field"], q["waiting"], q["contacts"]) for q in their_queues["queues"]] == [("loneliness", 2, None)]

    process.kill()
    process.start()
    async with httpx.AsyncClient(base_url=process.url) as client:
        assert (await client.get("/v1/desks", headers=rig.headers("secretariat"))).json() == desks_before
        assert (await client.get("/v1/queues", headers=rig.headers("secretariat"))).json() == queues_before

    # the platform's heartbeat, on every partition: both have waited past the 30 s overflow
    await rig.publish([heartbeat(1, s(59))])
    got = await wait_for(rig, 5)
    assert sorted(summary(got)[3:5]) == [("overflowed", "c2", None), ("overflowed", "c3", None)]
    await rig.publish([ended("c1", s(60))])
    got = await wait_for(rig, 6)
    assert summary(got)[5] == ("assigned", "c2", "a-lonely")
    assert got[-1]["data"]["reason"] == "line_freed" and got[-1]["data"]["queue_position"] == 1
    assert len({e["id"] for e in got}) == len(got) == 6, "nothing decided twice across the restart"


async def test_heartbeats_move_time_so_an_unanswered_call_is_withdrawn_and_a_waiting_one_overflows(
        routing_rig, tmp_path):
    rig = routing_rig
    import yaml

    from tests.integration.routing_support import desk_registry
    path = tmp_path / "timed.yaml"
    path.write_text(yaml.safe_dump(desk_registry([
        {"org": "npo-a", "id": "a-lonely", "fields": ["loneliness"], "lines": 1},
        {"org": "npo-c", "id": "c-backup", "fields": ["loneliness"], "lines": 1, "tier": 2},
    ], ring_timeout_s=20, overflow_after_s={"default": 30})))
    rig.start(registry=path)
    await rig.publish([received("c1", s(0)), field_selected("c1", "loneliness", s(0))])
    await wait_for(rig, 1)
    await rig.publish([received("c2", s(1)), field_selected("c2", "loneliness", s(1))])
    await wait_for(rig, 2)
    await rig.publish([heartbeat(1, s(25))])  # nobody answered c1 by 20 s
    got = await wait_for(rig, 4)
    # c1 keeps its place at the head of the queue: the only tier-1 line rings for it again
    assert summary(got)[2:] == [("withdrawn", "c1", "a-lonely"), ("assigned", "c1", "a-lonely")]
    assert got[3]["data"]["reason"] == "rerouted"
    await rig.publish([heartbeat(2, s(35))])  # c2 has waited 30 s: the backup desk may take it
    got = await wait_for(rig, 6)
    assert summary(got)[4:] == [("overflowed", "c2", None), ("assigned", "c2", "c-backup")]
    assert got[-1]["data"]["reason"] == "overflow"
