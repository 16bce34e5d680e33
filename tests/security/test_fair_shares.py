"""Fair shares of intake: one partner's flood cannot take another's turn (tsunagu/fairness.py).

The gate's rules are checked on an event loop with no wall-clock bound in play; through HTTP, an intake
process where each organisation may have one request in progress and none waiting, so that the
answers are decided by what is in progress — never by how long anything takes. A partner holds its
slot with a request whose body it has not sent yet (``Expect: 100-continue``: intake answers ``100
Continue`` once the request has its slot and intake wants the body).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from services.intake.settings import IntakeSettings
from tests.security.intake_support import stored_ids
from tests.support import ServiceProcess, contact_received
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.fairness import FairGate, HeldSlot, held_slot
from tsunagu.settings import get_settings
from tsunagu_tools import stack

# --- the gate's rules ------------------------------------------------------------------------------------------


async def test_an_organisation_gets_its_slots_and_a_full_queue_is_refused_at_once():
    gate = FairGate(limit=8, per_org=2, queue=0, wait=60)
    assert await gate.acquire("npo-a") and await gate.acquire("npo-a")
    assert not await gate.acquire("npo-a")  # its two slots are taken and it may not queue
    assert await gate.acquire("npo-b")  # another organisation is not held up
    gate.release("npo-a")
    assert await gate.acquire("npo-a")


async def test_a_waiting_request_gets_the_next_slot_of_its_organisation():
    gate = FairGate(limit=8, per_org=1, queue=1, wait=60)
    assert await gate.acquire("npo-a")
    waiting = asyncio.create_task(gate.acquire("npo-a"))
    await asyncio.sleep(0)
    assert not await gate.acquire("npo-a")  # one waits already: the queue is full
    assert not waiting.done()
    gate.release("npo-a")
    assert await waiting
    assert gate.in_progress("npo-a") == 1


async def test_a_freed_slot_goes_to_the_organisation_with_the_fewest_in_progress():
    gate = FairGate(limit=4, per_org=4, queue=10, wait=60)
    for _ in range(4):
        assert await gate.acquire("flood")  # alone, it may fill the process
    flood_more = asyncio.create_task(gate.acquire("flood"))
    await asyncio.sleep(0)
    quiet = asyncio.create_task(gate.acquire("quiet"))
    await asyncio.sleep(0)
    gate.release("flood")
    assert await quiet  # waited second, served first: it had nothing in progress
    assert not flood_more.done()
    # two organisations present: the flood keeps at most 4 // 2 = 2 once its requests finish
    gate.release("flood")
    await asyncio.sleep(0)
    assert not flood_more.done() and gate.in_progress("flood") == 2
    gate.release("flood")
    assert await flood_more
    assert gate.in_progress("flood") == 2 and gate.in_progress("quiet") == 1


async def test_a_wait_that_runs_out_is_refused_and_leaves_nothing_behind():
    gate = FairGate(limit=8, per_org=1, queue=5, wait=0.01)
    assert await gate.acquire("npo-a")
    assert not await gate.acquire("npo-a")
    gate.release("npo-a")
    assert gate.active == 0 and gate.in_progress("npo-a") == 0
    assert await gate.acquire("npo-a")


async def test_a_request_cancelled_while_waiting_gives_back_what_it_was_handed():
    gate = FairGate(limit=8, per_org=1, queue=5, wait=60)
    assert await gate.acquire("npo-a")
    waiting = asyncio.create_task(gate.acquire("npo-a"))
    await asyncio.sleep(0)
    gate.release("npo-a")  # hands the slot to the waiting request...
    waiting.cancel()  # ...which is cancelled before it runs (the client went away)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert gate.active == 0 and gate.in_progress("npo-a") == 0


async def test_the_held_slot_is_released_however_the_request_ends():
    gate = FairGate(limit=8, per_org=1, queue=0, wait=0)
    dependency = held_slot()
    slot: HeldSlot = await anext(dependency)
    assert await slot.take(gate, "npo-a")
    with pytest.raises(RuntimeError):
        await dependency.athrow(RuntimeError("the database went away"))
    assert gate.active == 0 and await gate.acquire("npo-a")


async def test_no_gate_when_the_cap_is_zero():
    gate = FairGate(limit=0, per_org=1, queue=0, wait=0)
    assert all([await gate.acquire("npo-a") for _ in range(100)])


# --- precedence: a quiet partner's request first, a busy partner's work at its turns ---------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_quiet_partners_request_is_urgent_and_a_busy_partners_is_not_even_one_at_a_time():
    clock = Clock()
    gate = FairGate(limit=8, per_org=2, queue=8, wait=60, clock=clock)
    flood, quiet = HeldSlot(), HeldSlot()
    assert await flood.take(gate, "flood") and flood.urgent  # nothing known yet: the first is urgent
    flood.charge(100)
    flood.release()
    assert await quiet.take(gate, "quiet") and quiet.urgent  # sent less than the average lately
    quiet.charge(1)
    quiet.release()
    clock.now += 0.2
    again = HeldSlot()
    assert await again.take(gate, "flood") and not again.urgent  # alone in progress, but sent the most lately
    second_quiet = HeldSlot()
    assert await quiet.take(gate, "quiet") and quiet.urgent
    assert await second_quiet.take(gate, "quiet") and not second_quiet.urgent  # its first is still in progress
    for slot in (again, quiet, second_quiet):
        slot.release()
    clock.now += 60  # a minute later the flood is forgotten: its next request starts afresh
    assert gate.usage("flood") < 0.01 and gate.urgent_for("flood")


async def test_other_work_gives_way_while_an_urgent_request_is_in_progress_and_only_then():
    gate = FairGate(limit=8, per_org=2, queue=8, wait=60, give_way_s=60)
    gate.charge("quiet", 1)
    gate.charge("flood", 500)
    busy = HeldSlot()
    assert await busy.take(gate, "flood") and not busy.urgent
    await asyncio.wait_for(busy.give_way(), 5)  # nobody urgent: a turn, no wait
    quiet = HeldSlot()
    assert await quiet.take(gate, "quiet") and quiet.urgent
    waiting = asyncio.create_task(busy.give_way())
    outbox = asyncio.create_task(gate.give_way())  # the outbox's rounds give way too
    await asyncio.sleep(0.01)
    assert not waiting.done() and not outbox.done()
    await asyncio.wait_for(quiet.give_way(), 5)  # the urgent request itself never waits
    quiet.release()
    await asyncio.wait_for(asyncio.gather(waiting, outbox), 5)
    busy.release()


async def test_giving_way_is_bounded_so_a_stream_of_urgent_requests_never_stops_the_rest():
    gate = FairGate(limit=8, per_org=2, queue=8, wait=60, give_way_s=0.01)
    quiet = HeldSlot()
    assert await quiet.take(gate, "quiet") and quiet.urgent
    await asyncio.wait_for(gate.give_way(), 5)  # returns after give_way_s though the urgent one goes on
    quiet.release()


def test_the_defaults_leave_room_for_others():
    settings = get_settings(IntakeSettings)
    assert settings.intake_org_in_flight < settings.intake_in_flight


# --- through HTTP: an intake process with one slot per organisation and no queue ----------------------------


@pytest.fixture(scope="module")
async def fair_intake(secure_stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServiceProcess]:
    port = stack.free_port()
    env = {**secure_stack.processes["intake"].env, "TSUNAGU_INTAKE_PORT": str(port),
           "TSUNAGU_INTAKE_IN_FLIGHT": "4", "TSUNAGU_INTAKE_ORG_IN_FLIGHT": "1", "TSUNAGU_INTAKE_ORG_QUEUE": "0"}
    process = ServiceProcess("intake", env, port, tmp_path_factory.mktemp("fair-logs") / "intake-fair.log")
    await asyncio.to_thread(process.start, 180.0)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def two_partners(secure_stack) -> dict[str, str]:
    pool = await create_pool(secure_stack.settings.database_url)
    try:
        orgs = [f"fair-{uuid.uuid4().hex[:8]}" for _ in range(2)]
        return {org: (await auth.issue_credential(pool, org, "partner", backfill=True))[1] for org in orgs}
    finally:
        await pool.close()


async def hold_a_slot(port: int, key: str, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A request whose headers are sent and whose body is held back until intake asks for it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                  f"Content-Type: application/cloudevents+json\r\nContent-Length: {len(body)}\r\n"
                  "Expect: 100-continue\r\n\r\n").encode())
    await writer.drain()
    interim = await reader.readline()
    assert interim.startswith(b"HTTP/1.1 100"), interim  # the request holds its slot; intake waits for the body
    assert await reader.readline() == b"\r\n"
    return reader, writer


async def finish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> int:
    writer.write(body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


async def test_a_partner_holding_its_slot_gets_429_while_another_partner_is_served(fair_intake, two_partners,
                                                                                   secure_stack):
    (busy, busy_key), (other, other_key) = two_partners.items()
    held_body = json.dumps(contact_received(busy, 1)).encode()
    reader, writer = await hold_a_slot(fair_intake.port, busy_key, held_body)
    try:
        async with httpx.AsyncClient(base_url=fair_intake.url, timeout=15) as client:
            def post(key: str, event: dict):
                return client.post("/v1/events", content=json.dumps(event).encode(), headers={
                    "Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents+json"})

            extra = await post(busy_key, contact_received(busy, 2))
            assert extra.status_code == 429
            assert extra.json()["error"] == "too_many_in_progress" and extra.json()["results"] == []
            assert int(extra.headers["Retry-After"]) >= 1
            served = await post(other_key, contact_received(other, 1))
            assert served.status_code == 202
            # the held request completes as usual; then the slot is free again
            assert await finish(reader, writer, held_body) == 202
            again = await post(busy_key, contact_received(busy, 3))
            assert again.status_code == 202
    finally:
        writer.close()
    ids = await stored_ids(secure_stack.settings.database_url)
    assert {contact_received(busy, n)["id"] for n in (1, 3)} | {contact_received(other, 1)["id"]} <= ids
    assert contact_received(busy, 2)["id"] not in ids  # the refused request stored nothing


async def test_only_partner_requests_take_slots(fair_intake, two_partners, secure_stack):
    busy, busy_key = next(iter(two_partners.items()))
    held_body = json.dumps(contact_received(busy, 10)).encode()
    reader, writer = await hold_a_slot(fair_intake.port, busy_key, held_body)
    try:
        async with httpx.AsyncClient(base_url=fair_intake.url, timeout=15) as client:
            # unauthenticated and non-partner requests are answered as before, whatever is in progress
            assert (await client.post("/v1/events", content=b"{}")).status_code == 401
            forbidden = await client.post("/v1/events", content=b"{}", headers=secure_stack.headers("secretariat"))
            assert forbidden.status_code == 403
        assert await finish(reader, writer, held_body) == 202
    finally:
        writer.close()
