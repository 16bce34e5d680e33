"""routing's consumer on FastStream's in-memory broker: its real subscriber and board, a fake store
below it (tests/fakes.py). tests/integration/test_routing_service.py has the same consumer on the real
broker and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from services.routing import store
from services.routing.app import SPEC
from services.routing.desks import Registry
from services.routing.handlers import Routing, register_consumer
from tests.fakes import FakeOutbox, FakePool, fake_settings, in_memory
from tests.integration.routing_support import field_selected, received
from tests.unit.routing_support import LONELY, T0, registry
from tsunagu import topics
from tsunagu.outbox import Outgoing


class FakeRoutingStore:
    """routing's board row, its contacts, its inbox and outbox, in memory."""

    def __init__(self, registries: list[Registry]) -> None:
        self.registries = registries
        self.version = 0
        self.header: dict[str, Any] = {}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.inbox: set[tuple[str, str]] = set()
        self.queued: list[Outgoing] = []

    async def lock_and_claim(self, conn: object, keys: list[tuple[str, str, str]]
                             ) -> tuple[int, int, set[tuple[str, str]]]:
        new = {(source, id_) for source, id_, _ in keys} - self.inbox
        self.inbox |= new
        return self.version, len(self.registries), new

    async def load_registries(self, conn: object) -> tuple[int, list[Registry]]:
        return len(self.registries), self.registries

    async def load_snapshot(self, conn: object) -> tuple[int, dict[str, Any]]:
        return self.version, {**self.header, "contacts": list(self.contacts.values())}

    async def save_board(self, conn: object, version: int, clock: Any, header: dict[str, Any],
                         changed: list[dict[str, Any]], gone: list[str],
                         outgoing: Sequence[Outgoing] = ()) -> list[int]:
        self.version, self.header = version, header
        self.contacts.update({c["contact_id"]: c for c in changed})
        for contact_id in gone:
            self.contacts.pop(contact_id, None)
        first = len(self.queued) + 1
        self.queued += outgoing
        return list(range(first, len(self.queued) + 1))


@pytest.fixture
def fake_store(monkeypatch: pytest.MonkeyPatch) -> FakeRoutingStore:
    fake = FakeRoutingStore([registry(LONELY)])
    for name in ("lock_and_claim", "load_registries", "load_snapshot", "save_board"):
        monkeypatch.setattr(store, name, getattr(fake, name))
    return fake


def routing_on_fakes(outbox: FakeOutbox) -> Routing:
    routing = Routing(settings=fake_settings(SPEC.settings), pool=FakePool(), outbox=outbox)
    routing.streams = frozenset({"0"})  # the in-memory broker puts every record in partition 0
    return routing


def decisions(outgoing: list[Outgoing]) -> list[tuple[str, str]]:
    return [(json.loads(o.value)["type"], o.key) for o in outgoing]


async def test_a_caller_who_chose_a_field_is_assigned_and_the_decision_is_stored_and_published(fake_store):
    outbox = FakeOutbox()
    routing = routing_on_fakes(outbox)
    broker = SPEC.make_broker(routing.settings)
    register_consumer(SPEC, broker, routing)
    topic = routing.settings.topic(topics.CONTACT_EVENTS)

    async with in_memory(broker) as br:
        await br.publish(json.dumps(received("c1", T0)).encode(), topic, key=b"c1")
        await br.publish(json.dumps(field_selected("c1", "loneliness", T0 + timedelta(seconds=5))).encode(),
                         topic, key=b"c1")
        await routing.flush()

    assert decisions(fake_store.queued) == [("jp.tsunagu.routing.assigned.v1", "c1")]
    assert all(o.topic == topics.ROUTING_DECISIONS for o in fake_store.queued)
    assert outbox.published == fake_store.queued and outbox.kept  # published from memory after the commit
    assert "c1" in fake_store.contacts and routing.decided == 1
    assert routing.consumer.verdict().ok


async def test_a_redelivered_event_is_claimed_once_and_decides_nothing_twice(fake_store):
    outbox = FakeOutbox()
    routing = routing_on_fakes(outbox)
    broker = SPEC.make_broker(routing.settings)
    register_consumer(SPEC, broker, routing)
    topic = routing.settings.topic(topics.CONTACT_EVENTS)
    chose = json.dumps(field_selected("c1", "loneliness", T0 + timedelta(seconds=5))).encode()

    async with in_memory(broker) as br:
        await br.publish(json.dumps(received("c1", T0)).encode(), topic, key=b"c1")
        await br.publish(chose, topic, key=b"c1")
        await br.publish(chose, topic, key=b"c1")  # redelivered after a rebalance
        await routing.flush()

    assert decisions(fake_store.queued) == [("jp.tsunagu.routing.assigned.v1", "c1")]


async def test_a_second_caller_waits_in_the_queue_while_the_only_line_is_busy(fake_store):
    outbox = FakeOutbox()
    routing = routing_on_fakes(outbox)
    broker = SPEC.make_broker(routing.settings)
    register_consumer(SPEC, broker, routing)
    topic = routing.settings.topic(topics.CONTACT_EVENTS)

    async with in_memory(broker) as br:
        for n, cid in enumerate(("c1", "c2")):
            await br.publish(json.dumps(received(cid, T0 + timedelta(seconds=n))).encode(), topic, key=cid.encode())
            await br.publish(json.dumps(field_selected(cid, "loneliness", T0 + timedelta(seconds=5 + n))).encode(),
                             topic, key=cid.encode())
        await routing.flush()

    assert decisions(fake_store.queued) == [("jp.tsunagu.routing.assigned.v1", "c1"),
                                            ("jp.tsunagu.routing.queued.v1", "c2")]
