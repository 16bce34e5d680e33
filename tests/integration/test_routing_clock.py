"""routing against a clock that jumps, on the real PostgreSQL and broker: an event far ahead of routing's
wall clock moves nothing by its own time, and a heartbeat years after the board's clock costs the last
hour of ring timeouts, not every one of the years (domain.py, "A jump in time", "Ahead of the wall
clock")."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
import yaml

from schemas import validate_event
from services.routing import store
from services.routing.domain.clock import GAP
from services.routing.handlers import Routing
from services.routing.settings import RoutingSettings
from tests.integration.routing_support import (
    PLATFORM,
    decisions,
    desk_registry,
    field_selected,
    heartbeat,
    received,
    routing_rig_fixture,  # noqa: F401 - registers the routing_rig fixture
)
from tests.support import T0, read_topic

pytestmark = pytest.mark.integration

YEAR_2100 = datetime(2100, 1, 1, tzinfo=UTC)
LEAD = timedelta(seconds=RoutingSettings().routing_max_clock_lead_s)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def batch(*pairs):
    return [(stream, validate_event(event)) for stream, event in pairs]


async def outbox(pool) -> list[tuple[str, str, datetime]]:
    rows = await pool.fetch(f"SELECT value FROM {store.SCHEMA}.outbox ORDER BY seq")
    values = [json.loads(r["value"]) for r in rows]
    return [(v["type"].split(".")[3], v["subject"], datetime.fromisoformat(v["time"])) for v in values]


@pytest.fixture(name="pool")
async def pool_fixture(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        await pool.execute(f"DROP SCHEMA IF EXISTS {store.SCHEMA} CASCADE")
        await store.migrate_schema(pool)
        document = desk_registry([{"org": "npo-a", "id": "a-lonely", "fields": ["loneliness"], "lines": 1}],
                                 ring_timeout_s=20)
        await store.apply_registry(pool, yaml.safe_load(yaml.safe_dump(document)))
        yield pool
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {store.SCHEMA} CASCADE")
        await pool.close()


def routing_at(pool, wall: datetime) -> Routing:
    routing = Routing(settings=RoutingSettings(), pool=pool, wall=lambda: wall)
    routing.streams = frozenset({"0", "1"})
    return routing


async def test_a_heartbeat_far_ahead_of_the_wall_clock_moves_no_mark_and_fires_no_timer(pool):
    routing = routing_at(pool, s(3600))
    try:
        assert await routing.apply_batch(batch(("0", received("c1", s(0))),
                                               ("0", field_selected("c1", "loneliness", s(0))),
                                               ("1", heartbeat(0, s(0))))) == 1
        # on every partition, as intake would publish it: routing neither claims nor applies it
        assert await routing.apply_batch(batch(("0", heartbeat(1, YEAR_2100)), ("1", heartbeat(1, YEAR_2100)))) == 0
        async with pool.acquire() as conn:
            _, snapshot = await store.load_snapshot(conn)
        assert snapshot["clock"] == s(0).isoformat() and set(snapshot["marks"].values()) == {s(0).isoformat()}
        # time still moves by the heartbeats that keep to the clock: the ring timeout fires at its time
        assert await routing.apply_batch(batch(("0", heartbeat(2, s(25))), ("1", heartbeat(2, s(25))))) == 2
        assert [(kind, at) for kind, _, at in await outbox(pool)] == [
            ("assigned", s(0)), ("withdrawn", s(20)), ("assigned", s(20))]
    finally:
        await routing.release_connection()


async def test_a_contact_event_far_ahead_of_the_wall_clock_is_applied_at_the_wall_clock_plus_the_lead(pool):
    routing = routing_at(pool, s(0))
    try:
        assert await routing.apply_batch(batch(("0", received("c1", YEAR_2100)),
                                               ("0", field_selected("c1", "loneliness", YEAR_2100)))) == 1
        assert await outbox(pool) == [("assigned", "c1", s(0) + LEAD)]  # its caller is routed all the same
        assert routing.board is not None and routing.board.clock == s(0) + LEAD
        assert routing.board.marks == {"0": s(0) + LEAD}
    finally:
        await routing.release_connection()


# --- the finding, on routing as its own process ---------------------------------------------


async def routing_decisions(rig, expect: int, timeout: float = 30) -> list[dict]:
    return decisions(await read_topic(rig.bootstrap, rig.topic("routing.decisions"), expect=expect, timeout=timeout))


async def watermark_reaches(process, rig, at: datetime, timeout: float = 30) -> dict:
    """/v1/desks once every partition has been read past ``at`` (so past all published before it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(base_url=process.url) as client:
        while True:
            desks = (await client.get("/v1/desks", headers=rig.headers("secretariat"))).json()
            if desks["watermark"] and datetime.fromisoformat(desks["watermark"]) >= at:
                return desks
            assert loop.time() < deadline, f"routing's watermark stays at {desks['watermark']}"
            await asyncio.sleep(0.2)


async def still_serving(process, rig) -> None:
    async with httpx.AsyncClient(base_url=process.url, timeout=5) as client:
        assert (await client.get("/health/ready")).status_code == 200
        queues = await client.get("/v1/queues", headers=rig.headers("secretariat"))
        assert queues.status_code == 200, queues.text
    rss_kib = int(next(line.split()[1] for line in open(f"/proc/{process.proc.pid}/status")
                       if line.startswith("VmRSS:")))
    assert rss_kib < 1024 * 1024, f"routing holds {rss_kib} KiB"


def ahead_warnings(process) -> list[dict]:
    lines = open(process.log_path, encoding="utf-8").read().splitlines()
    return [e for e in (json.loads(line) for line in lines if line.startswith("{"))
            if e.get("event") == "routing_event_ahead_of_clock"]


async def test_a_heartbeat_dated_2100_on_the_topic_leaves_routing_ready_and_bounded_also_when_replayed(routing_rig):
    rig = routing_rig
    process = rig.start()  # a-lonely: one line, 600 s ring timeout
    await rig.publish([received("c1", s(0)), field_selected("c1", "loneliness", s(0))])
    assert [e["type"] for e in await routing_decisions(rig, 1)] == ["jp.tsunagu.routing.assigned.v1"]

    # c1 rings; a platform's clock says 2100, straight onto every partition of contact.events
    await rig.publish([heartbeat(1, YEAR_2100), heartbeat(2, s(10))])
    desks = await watermark_reaches(process, rig, s(10))
    assert datetime.fromisoformat(desks["at"]) == s(10), "the heartbeat from 2100 moved routing's clock"
    assert len(await routing_decisions(rig, 2, timeout=2)) == 1, "nothing re-rings c1"
    await still_serving(process, rig)
    [warning] = ahead_warnings(process)  # once, however many partitions carried it
    assert warning["source"] == PLATFORM and warning["ahead_s"] > 70 * 365 * 86_400
    assert warning["level"] == "warning" and "platform_id" not in warning and "data" not in warning

    # live heartbeats resume, years after c1 began ringing: it is withdrawn once, re-routed when the last
    # hour begins, and rung through that hour only
    now = datetime.now(UTC).replace(microsecond=0)
    await rig.publish([heartbeat(3, now)])
    rings = int(GAP / timedelta(seconds=600))
    got = await routing_decisions(rig, 1 + 2 + 2 * rings)
    mine = sorted((e for e in got if e["data"]["contact_id"] == "c1"), key=lambda e: (e["time"], e["id"]))
    assert len(mine) == len(got) == 1 + 2 + 2 * rings
    assert [(e["type"].split(".")[3], datetime.fromisoformat(e["time"])) for e in mine[1:3]] == [
        ("withdrawn", s(600)), ("assigned", now - GAP)]
    await watermark_reaches(process, rig, now)
    await still_serving(process, rig)

    # restarted and made to read contact.events from the start (a consumer group of its own): the
    # heartbeat from 2100 is read again, and again moves nothing
    process.kill()
    process.env["TSUNAGU_CONSUMER_GROUP_PREFIX"] = f"{rig.settings.consumer_group_prefix}replayed-"
    process.start()
    later = now + timedelta(seconds=5)  # before c1's next ring timeout
    await rig.publish([heartbeat(4, later)])
    desks = await watermark_reaches(process, rig, later)
    assert datetime.fromisoformat(desks["at"]) == later
    assert len(await routing_decisions(rig, len(got) + 1, timeout=2)) == len(got), "nothing decided again"
    await still_serving(process, rig)
    assert len(ahead_warnings(process)) == 2  # the first process's warning and the restarted one's
