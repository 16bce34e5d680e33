"""routing's handler on the real PostgreSQL: every stream's mark is kept with the board, and a
heartbeat's copy on a lagging partition — a duplicate event, applied once — still moves time."""

from __future__ import annotations

import asyncpg
import pytest
import yaml

from schemas import validate_event
from services.routing import store
from services.routing.handlers import Routing
from services.routing.settings import RoutingSettings
from tests.integration.routing_support import desk_registry, field_selected, heartbeat, received
from tests.support import T0

pytestmark = pytest.mark.integration


def s(seconds: float):
    from datetime import timedelta
    return T0 + timedelta(seconds=seconds)


def batch(*pairs):
    return [(stream, validate_event(event)) for stream, event in pairs]


async def decisions(pool) -> list[tuple[str, str]]:
    rows = await pool.fetch(f"SELECT value FROM {store.SCHEMA}.outbox ORDER BY seq")
    import json
    return [(json.loads(r["value"])["type"].split(".")[3], json.loads(r["value"])["subject"]) for r in rows]


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


async def routing_on(pool, order: str) -> Routing:
    routing = Routing(settings=RoutingSettings(routing_order=order), pool=pool)
    routing.streams = frozenset({"0", "1"})
    return routing


async def test_arrival_order_fires_a_timer_once_the_heartbeat_copy_on_the_other_partition_is_read(pool):
    routing = await routing_on(pool, "arrival")
    try:
        assert await routing.apply_batch(batch(("0", received("c1", s(0))),
                                               ("0", field_selected("c1", "loneliness", s(0))),
                                               ("1", heartbeat(0, s(0))))) == 1
        assert await routing.apply_batch(batch(("0", heartbeat(1, s(25))))) == 0, "partition 1 is still at 0 s"
        # the same heartbeat's copy on partition 1: a duplicate, but it moves partition 1's mark
        assert await routing.apply_batch(batch(("1", heartbeat(1, s(25))))) == 2
        assert await decisions(pool) == [("assigned", "c1"), ("withdrawn", "c1"), ("assigned", "c1")]
    finally:
        await routing.release_connection()


async def test_event_time_order_holds_events_until_every_partition_passed_them_and_keeps_them_across_a_restart(pool):
    routing = await routing_on(pool, "event_time")
    try:
        assert await routing.apply_batch(batch(("0", received("c1", s(0))),
                                               ("0", field_selected("c1", "loneliness", s(1))))) == 0
    finally:
        await routing.release_connection()
    restarted = await routing_on(pool, "event_time")  # a new process: the held events come from PostgreSQL
    try:
        assert await restarted.apply_batch(batch(("1", heartbeat(1, s(30))))) == 1
        assert await decisions(pool) == [("assigned", "c1")]
        assert await restarted.apply_batch(batch(("0", heartbeat(1, s(30))))) == 2  # rang out at 21 s
        assert await decisions(pool) == [("assigned", "c1"), ("withdrawn", "c1"), ("assigned", "c1")]
        version, snapshot = await store.read_board(pool)
        assert snapshot["held"] == [] and set(snapshot["marks"]) == {"0", "1"}
    finally:
        await restarted.release_connection()
