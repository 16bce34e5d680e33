"""Fakes below a process, for fast unit tests of a service's subscriber: a pool and connection that
run no SQL, an outbox that keeps what it is handed, and FastStream's in-memory ``TestKafkaBroker``
with a catcher for what a handler publishes.

A subscriber under test is the real one, registered by its service's ``register_consumer`` on a real
``KafkaBroker``; only the broker's transport is in memory and the service's store functions are
replaced (``monkeypatch.setattr(store, "name", fake.name)``) by the fake store of its test. These are
no substitute for the real-broker and PostgreSQL tests in tests/integration: they reach the wiring —
topics, group, decoding, what is stored and published — in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from typing import Any
from unittest.mock import patch

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.testing import FakeProducer

from tsunagu.consume import raw_records
from tsunagu.outbox import Outgoing
from tsunagu.settings import Settings


def fake_settings(cls: type[Settings] = Settings, /, **overrides: Any) -> Settings:
    """Settings for a broker that is never dialled (``TestKafkaBroker`` replaces its transport); ``cls``:
    a service's (its ``SPEC.settings``) when the code under test reads its own knobs."""
    values: dict[str, Any] = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "topic_prefix": "unit.",
                              **known_to(cls, overrides)}
    return cls(**values)


def known_to(cls: type[Settings], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides``, refused when one is no field of ``cls`` (it would be ignored: a service's knob
    given to the shared settings)."""
    unknown = set(overrides) - set(cls.model_fields) - {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"}
    if unknown:
        raise TypeError(f"{sorted(unknown)} are not settings of {cls.__name__}")
    return overrides


class FakeConnection:
    """A connection whose transactions do nothing: every query is the fake store's to answer."""

    def transaction(self, **_options: Any) -> FakeConnection:
        return self

    async def __aenter__(self) -> FakeConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def _sql(self, query: str, *args: Any) -> Any:
        raise AssertionError(f"SQL reached a fake connection (fake the store function instead): {query[:80]}")

    execute = fetch = fetchrow = fetchval = _sql


class _Acquired:
    """What ``pool.acquire()`` returns, as asyncpg's: awaited, or entered with ``async with``."""

    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn

    def __await__(self) -> Generator[Any, None, FakeConnection]:
        return self._get().__await__()

    async def _get(self) -> FakeConnection:
        return self.conn

    async def __aenter__(self) -> FakeConnection:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        return None


class FakePool:
    def __init__(self) -> None:
        self.conn = FakeConnection()
        self.released = 0

    def acquire(self) -> _Acquired:
        return _Acquired(self.conn)

    async def release(self, conn: FakeConnection) -> None:
        self.released += 1

    async def close(self) -> None:
        return None


class FakeOutbox:
    """An ``OutboxPublisher`` (wake, keep, let_go, publish_stored) and ``tsunagu.outbox.enqueue`` in one,
    remembering every record handed to it."""

    healthy = True

    def __init__(self) -> None:
        self.woken = 0
        self.enqueued: list[Outgoing] = []  # through enqueue(conn, schema, records), in the transaction
        self.published: list[Outgoing] = []  # through publish_stored, after the commit
        self.kept: list[int] = []
        self.let_go_seqs: list[int] = []

    def wake(self) -> None:
        self.woken += 1

    def keep(self, seqs: list[int]) -> None:
        self.kept += seqs

    def let_go(self, seqs: list[int]) -> None:
        self.let_go_seqs += seqs

    async def publish_stored(self, seqs: list[int], records: list[Outgoing]) -> None:
        self.published += records

    async def enqueue(self, conn: Any, schema: str, records: list[Outgoing]) -> None:
        self.enqueued += records


def catch(broker: KafkaBroker, topic: str) -> list[ConsumerRecord]:
    """The records a handler publishes onto ``topic`` (subscribe before the test broker starts)."""
    caught: list[ConsumerRecord] = []

    @broker.subscriber(topic, decoder=raw_records)
    async def caught_on(record: Any) -> None:
        caught.append(record)

    return caught


@asynccontextmanager
async def in_memory(broker: KafkaBroker) -> AsyncIterator[KafkaBroker]:
    """``TestKafkaBroker(broker)``: the broker's subscribers are called in memory by its ``publish``.

    With ``no_confirm=True`` the real producer returns the send's delivery future, which handlers
    await after queueing several sends; the in-memory producer returns nothing, so it is given a
    future that is already done (the record was handled before ``publish`` returned)."""
    original = FakeProducer.publish

    async def publish(self: FakeProducer, cmd: Any) -> Any:
        await original(self, cmd)
        if not cmd.no_confirm:
            return None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    with patch.object(FakeProducer, "publish", publish):
        async with TestKafkaBroker(broker) as test_broker:
            yield test_broker
