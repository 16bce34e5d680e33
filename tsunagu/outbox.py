"""The transactional outbox every service publishes through.

A service writes the events it derives into ``<schema>.outbox`` in the same PostgreSQL
transaction as the state change (and the inbox record of what it consumed); the publisher drains
the table onto the topics. An event leaves the outbox only after the broker acknowledged it. A
crash between the ack and the delete publishes it again on restart — with the same CloudEvents
id, which every consumer de-duplicates — so nothing is lost and nothing is counted twice.

The table and its later columns are numbered migrations of the kit, ``tsunagu/migrations/inbox_outbox``
(``tsunagu.db.INBOX_OUTBOX``), applied inside each publishing service's schema before its own.

Tracing: a row stores the W3C traceparent of the span that enqueued it (tsunagu/telemetry.py) and
the publisher sends it as the record's ``traceparent`` header, so the consumer's span continues the
contact's trace across the hop, however much later the row is published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from schemas.kafka import kafka_headers
from tsunagu import telemetry
from tsunagu.db import SERVER_SETTINGS
from tsunagu.kafka import make_producer
from tsunagu.settings import Settings
from tsunagu.telemetry import traceparent_for

log = structlog.get_logger()

# A round gives way (``give_way``) before every this many records it hands to the producer.
SENDS_PER_TURN = 64


async def forget_published(conn: asyncpg.Connection) -> int:
    """Drop every retained (already published) record of every outbox in the database; returns how
    many. Only for when every consumer has read them: the stack's services stopped after a replay
    that waited for metrics to count everything (``tsunagu.stack.fresh_broker``)."""
    schemas = await conn.fetch("SELECT c.table_schema FROM information_schema.columns c "
                               "WHERE c.table_name = 'outbox' AND c.column_name = 'published_at'")
    dropped = 0
    for row in schemas:
        status = await conn.execute(f'DELETE FROM "{row["table_schema"]}".outbox WHERE published_at IS NOT NULL')
        dropped += int(status.split()[-1])
    return dropped


@dataclass(frozen=True)
class Outgoing:
    """One encoded record for a topic (short name) and key.

    ``traceparent``: the trace the record continues; by default the span of the event being handled
    for ``key`` (a contact id), else that contact's root. Pass ``traceparent_about(contact_id, key)``
    when the key is not the contact id (e.g. a referral id). None when this process records no spans:
    the consumer then starts from the root of the key's contact itself."""

    topic: str
    key: str
    value: bytes
    traceparent: str | None = None
    every_partition: bool = False  # published once to each partition of the topic, not by its key

    def __post_init__(self) -> None:
        if self.traceparent is None and telemetry.get().recording:
            object.__setattr__(self, "traceparent", traceparent_for(self.key))


async def enqueue(conn: asyncpg.Connection, schema: str, records: list[Outgoing]) -> None:
    """Queue records for publishing; call inside the transaction that makes them true."""
    if not records:
        return
    await conn.execute(
        f'INSERT INTO "{schema}".outbox (topic, key, value, traceparent, every_partition) '
        "SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::boolean[])",
        [r.topic for r in records], [r.key for r in records], [r.value for r in records],
        [r.traceparent for r in records], [r.every_partition for r in records],
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The outbox pool's connections carry no session state to undo (no SET, LISTEN or advisory lock):
    give them back without asyncpg's reset query, a round trip per publish round."""


async def create_outbox_pool(dsn: str, max_size: int = 2) -> asyncpg.Pool:
    """The publisher's own small pool. Its commits are asynchronous: all it commits is the deletion
    of records already acknowledged by the broker, and losing one to a server crash only republishes
    them with the same ids (consumers de-duplicate). It saves a disk flush per round; the services'
    own transactions stay synchronous."""
    return await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, reset=_keep_session,
                                     server_settings=SERVER_SETTINGS | {"synchronous_commit": "off"})


@contextlib.asynccontextmanager
async def running_outbox(settings: Settings, schema: str, service: str, pool_size: int = 2,
                         linger_ms: int | None = None,
                         give_way: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[OutboxPublisher]:
    """A service's outbox publisher — its own producer and small pool — running for the block; at
    its end what is left is published (best effort) and everything is closed. ``linger_ms``: the
    producer's, instead of the settings' (make_producer). ``give_way``: awaited before each round and
    every ``SENDS_PER_TURN`` records of it, so that a service's urgent requests go first
    (tsunagu/fairness.py)."""
    producer = make_producer(settings, client_id=f"tsunagu-{service}-outbox", linger_ms=linger_ms)
    await producer.start()
    try:
        pool = await create_outbox_pool(settings.database_url, pool_size)  # type: ignore[arg-type]  # services start only with one
        try:
            outbox = OutboxPublisher(pool, producer, settings, schema, give_way)
            outbox.start()
            try:
                yield outbox
            finally:
                await outbox.stop()
        finally:
            await pool.close()
    finally:
        await producer.stop()


async def outbox_depth(pool: asyncpg.Pool, schema: str) -> int:
    return int(await pool.fetchval(f'SELECT count(*) FROM "{schema}".outbox WHERE published_at IS NULL'))


class OutboxPublisher:
    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, settings: Settings, schema: str,
                 give_way: Callable[[], Awaitable[None]] | None = None) -> None:
        self._pool = pool
        self._give_way = give_way
        self._producer = producer
        self._settings = settings
        self._headers = kafka_headers()
        # SKIP LOCKED lets several instances of a service drain the outbox side by side; the records this
        # process publishes from memory (publish_stored) are left to it.
        self._claim = (
            f'SELECT seq, topic, key, value, traceparent, every_partition FROM "{schema}".outbox '
            "WHERE published_at IS NULL AND NOT (seq = ANY($1::bigint[])) "
            f"ORDER BY seq LIMIT {int(settings.outbox_batch)} FOR UPDATE SKIP LOCKED"
        )
        self._own: set[int] = set()  # seqs being published by publish_stored: not claimed by a round
        self._retain = settings.outbox_retain_seconds
        self._delete = (f'UPDATE "{schema}".outbox SET published_at = now() WHERE seq = ANY($1::bigint[])'
                        if self._retain > 0 else f'DELETE FROM "{schema}".outbox WHERE seq = ANY($1::bigint[])')
        self._expire = (f'DELETE FROM "{schema}".outbox WHERE published_at IS NOT NULL '
                        "AND published_at < now() - make_interval(secs => $1)")
        self._republish = f'UPDATE "{schema}".outbox SET published_at = NULL WHERE published_at IS NOT NULL'
        self._expired_at = 0.0
        self._schema = schema
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self.published = 0
        self.healthy = True


    @property
    def producer(self) -> AIOKafkaProducer:
        """The outbox's producer, started: its metadata says how many partitions a topic has."""
        return self._producer

    def wake(self) -> None:
        """Something was just stored: publish now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox")
        if self._retain > 0:
            self._watch = asyncio.create_task(self._watch_broker(), name="outbox-broker-watch")

    async def _watch_broker(self, every: float = 2.0) -> None:
        """With retention: notice a broker that lost its topics, create them again and republish.

        Each outbox keeps a marker topic of its own (``<prefix><schema>.outbox.alive``): when it is gone,
        the broker lost everything since this service last saw it (an in-memory broker restarted, also
        while this service was down), whichever service recreates the other topics first."""
        from tsunagu import topics
        from tsunagu.kafka import bootstrap_servers, create_topics

        marker = self._settings.topic(f"{self._schema}.outbox.alive")
        names = [self._settings.topic(n) for n in topics.ALL] + [marker]
        while not self._stopping:
            try:
                created = await create_topics(bootstrap_servers(self._settings), names, self._settings.partitions,
                                              attempts=1)
                if marker in created:
                    republished = await self.republish_retained()
                    # at a first start nothing is retained: a note, not a warning
                    (log.warning if republished else log.info)(
                        "broker_topics_recreated", topics=len(created), republished=republished)
            except Exception as err:  # broker or database away: the next round tries again
                log.info("broker_watch_failed", error=type(err).__name__)
            await asyncio.sleep(every)

    async def republish_retained(self) -> int:
        """Queue the retained records again (the broker lost them); returns how many. Consumers
        de-duplicate by event id, so what they had already read changes nothing."""
        status = await self._pool.execute(self._republish)
        self.wake()
        return int(status.split()[-1])

    async def _expire_retained(self) -> None:
        # every few seconds: published records past the retention (without retention none are kept)
        if self._retain <= 0:
            return
        now = asyncio.get_running_loop().time()
        if now - self._expired_at >= 5.0:
            self._expired_at = now
            await self._pool.execute(self._expire, float(self._retain))

    async def stop(self) -> None:
        """Publish what is left (best effort), then stop."""
        self._stopping = True
        self._wake.set()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=15)

    def _headers_of(self, traceparent: str | None) -> list[tuple[str, bytes]]:
        if not traceparent:
            return self._headers
        # correlation_id: FastStream's batch span links the records' traces by it (one link per span)
        return [*self._headers, ("traceparent", traceparent.encode()), ("correlation_id", traceparent[36:52].encode())]

    async def drain_once(self) -> int:
        """Publish one round of pending records; returns how many."""
        if self._give_way is not None:
            await self._give_way()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(self._claim, list(self._own))
            if not rows:
                return 0
            futures = []
            for i, r in enumerate(rows):
                if self._give_way is not None and i and i % SENDS_PER_TURN == 0:
                    await self._give_way()
                topic = self._settings.topic(r["topic"])
                # by its key, or once to each partition (the producer's metadata knows how many)
                partitions = sorted(await self._producer.partitions_for(topic)) if r["every_partition"] else [None]
                for partition in partitions:
                    futures.append(await self._producer.send(
                        topic, r["value"], key=r["key"].encode(), partition=partition,
                        headers=self._headers_of(r["traceparent"])))
            await asyncio.gather(*futures)
            await conn.execute(self._delete, [r["seq"] for r in rows])
        self.published += len(rows)
        return len(rows)

    def keep(self, seqs: list[int]) -> None:
        """Records stored under ``seqs`` are this process's to publish (``publish_stored``): rounds leave
        them alone from now on. Call it before the commit that stores them, so that no round can claim
        them in between; ``let_go`` if that commit fails."""
        self._own.update(seqs)

    def let_go(self, seqs: list[int]) -> None:
        """Rounds publish these again (a commit failed, or publishing them from memory did)."""
        self._own.difference_update(seqs)

    async def publish_stored(self, seqs: list[int], records: list[Outgoing]) -> None:
        """Publish records just committed to the outbox under ``seqs`` (``keep`` them first) from memory,
        then mark them published — no round trips to claim them before they leave. If anything fails
        they stay in the outbox for the rounds to publish, as any other record."""
        try:
            futures = []
            for r in records:
                topic = self._settings.topic(r.topic)
                partitions = sorted(await self._producer.partitions_for(topic)) if r.every_partition else [None]
                for partition in partitions:
                    futures.append(await self._producer.send(topic, r.value, key=r.key.encode(), partition=partition,
                                                             headers=self._headers_of(r.traceparent)))
            await asyncio.gather(*futures)
            await self._pool.execute(self._delete, seqs)
            self.published += len(seqs)
        except BaseException:
            self.wake()
            raise
        finally:
            self.let_go(seqs)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            # Cleared before the round, not after: a wake-up that arrives while a round is being
            # published must start the next round at once, not wait for the poll.
            self._wake.clear()
            try:
                n = await self.drain_once()
                await self._expire_retained()
                self.healthy = True
                backoff = 0.1
            except Exception as err:  # broker or database away: keep the records, retry
                self.healthy = False
                log.warning("outbox_publish_failed", error=type(err).__name__, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if self._stopping and backoff >= 5.0:
                    return
                continue
            if self._stopping and n == 0:
                return
            if n < self._settings.outbox_batch:
                # Poll too: other instances' leftovers and records stored before a restart.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._settings.outbox_poll_seconds)
