"""routing's thin subscriber: a batch of contact events in, decisions out, in one transaction.

``on_contact_events`` follows tsunagu/consume.py: inbox claim + board change + outbox enqueue in
ONE PostgreSQL transaction, under the board row's lock (store.py explains why that is what keeps
two instances from booking a line twice).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from faststream.kafka import KafkaBroker
from opentelemetry.metrics import Observation

from schemas import ValidatedEvent
from schemas.kafka import encode_value
from services.routing import store
from services.routing.desks import Registry
from services.routing.domain.board import Board
from services.routing.domain.clock import board_time
from services.routing.domain.records import Decision, sender_of
from tsunagu import telemetry, topics
from tsunagu.consume import decode_records
from tsunagu.health import ConsumerHealth, batch_failed
from tsunagu.outbox import OutboxPublisher, Outgoing
from tsunagu.service import ServiceSpec
from tsunagu.settings import Settings

log = structlog.get_logger()

SOURCE = "/tsunagu/routing"
# How long a fetch waits on the broker. The embedded broker does not wake a waiting fetch when data
# arrives (docs/reference-host.md, quirk 1), so this bounds the consume side of routing's latency; bench/routing.py
# gives its echo baseline the same wait.
FETCH_MAX_WAIT_MS = 20
HEARTBEAT = "platform.heartbeat"
# Sources warned about running ahead of the wall clock, at most: each is warned about once, and
# records written straight onto the topic could name any number of them.
MAX_WARNED_SOURCES = 256


def wall_clock() -> datetime:
    return datetime.now(UTC)


def decision_id(cause_source: str, cause_id: str, index: int) -> str:
    """Deterministic: the same input event yields the same decision ids when it is reprocessed."""
    digest = hashlib.sha256(f"{cause_source}\n{cause_id}".encode()).hexdigest()[:24]
    return f"rt-{digest}-{index}"


def encode_decision(decision: Decision, event_id: str) -> Outgoing:
    envelope = {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": f"jp.tsunagu.{decision.kind}.v1",
        "time": decision.at.isoformat(),
        "subject": decision.contact_id,
        "partitionkey": decision.contact_id,
        "data": decision.data.model_dump(mode="json", exclude_none=True),
    }
    return Outgoing(topics.ROUTING_DECISIONS, decision.contact_id, encode_value(envelope))


@dataclass
class Routing:
    """What the handler and the API need, built in the app's lifespan."""

    settings: Settings
    pool: asyncpg.Pool | None = None
    outbox: OutboxPublisher | None = None
    board: Board | None = None  # the last board this instance committed or read
    version: int = -1
    registry_seq: int = -1
    registries: list[Registry] = field(default_factory=list)
    decided: int = 0
    _view: tuple[int, int, Board] | None = None  # (board version, registry seq, board) for the API
    _rounds: set[asyncio.Task[None]] = field(default_factory=set)  # publish rounds in flight
    # The consumer's own connection, held between batches: taking one from the pool and giving it back
    # costs a round trip per batch (asyncpg resets a released connection), before the batch's
    # decisions can be published.
    _conn: asyncpg.Connection | None = None
    # field -> (lines open, free, seat conversations open, free), for ops
    lines: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    producer: Any = None  # the outbox's producer: its metadata says how many partitions there are
    streams: frozenset[str] = frozenset()  # contact.events' partitions, as the board's streams
    # Routing's wall clock, only to keep event times that run ahead of it off the board (domain.py,
    # "Ahead of the wall clock"); the board itself never reads a clock. Tests hand in their own.
    wall: Callable[[], datetime] = wall_clock
    _warned_ahead: set[str] = field(default_factory=set)  # "outcome:source"s already warned about
    consumer: ConsumerHealth = field(default_factory=ConsumerHealth)  # batches failing: not ready

    def observe_lines(self, meter: Any) -> None:
        """Gauges of the lines open and free per field, as of the board this instance last wrote
        (its event time: a replay shows its own 'now'). Several instances report alike: use max."""
        def gauge(index: int) -> Any:
            return lambda _options: [Observation(v[index], {"field": f}) for f, v in self.lines.items()]
        meter.create_observable_gauge("tsunagu_open_lines", [gauge(0)],
                                      description="lines of the desks open now, per field (routing's board)")
        meter.create_observable_gauge("tsunagu_free_lines", [gauge(1)],
                                      description="of those, lines free now, per field (routing's board)")
        meter.create_observable_gauge("tsunagu_open_conversations", [gauge(2)],
                                      description="conversations the chat/SNS seats of the desks open now hold at "
                                      "most, per field (routing's board)")
        meter.create_observable_gauge("tsunagu_free_conversations", [gauge(3)],
                                      description="of those, conversations the seats could still take, per field")

    def _apply(self, board: Board, kind: str, at: datetime, data: Any, ident: tuple[str, str]) -> list[Outgoing]:
        """One event onto the board, told which organisation sent it (its source), and its decisions."""
        return self._decide(board.apply(kind, at, data, sender=sender_of(ident[0])), ident)

    async def _sync(self, conn: asyncpg.Connection, version: int, seq: int) -> Board:
        """The board as committed at ``version``: the one in memory when this instance wrote that
        version itself (the usual case, and free), else read back from PostgreSQL."""
        if seq != self.registry_seq:
            self.registry_seq, self.registries = await store.load_registries(conn)
            if self.board is not None:
                self.board.set_registries(self.registries)
        if self.board is None or version != self.version:
            version, snapshot = await store.load_snapshot(conn)
            self.board = Board.restore(snapshot, self.registries, track_changes=True)
            self.version = version
        return self.board

    async def apply_batch(self, events: list[tuple[str, ValidatedEvent]]) -> int:
        """Apply a batch of canonical contact events, each with its stream (partition), in the order
        given (the handler gives them merged across partitions by event time, ``Batch.merged``: a plain
        sort by time could swap one contact's own events); returns how many decisions were made.

        Every record moves its stream's mark, a redelivered one too — never past the wall clock plus
        ``routing_max_clock_lead_s`` (``_admit``); only new events are applied — at once
        (``routing_order`` arrival) or held until every stream has passed them (event_time)."""
        assert self.pool is not None
        hold = self.settings.routing_order == "event_time"
        admitted = self._admit(events)
        if not admitted:
            return 0  # only heartbeats from a clock that runs ahead: nothing to claim, nothing moves
        if any(stream not in self.streams for stream, _, _ in admitted):
            await self._learn_streams()
        stored: list[int] = []  # the outbox seqs of the batch's decisions
        try:
            if self._conn is None:
                self._conn = await self.pool.acquire()
            conn = self._conn
            async with conn.transaction():
                keys = [(e.envelope.source, e.envelope.id, e.envelope.type) for _, e, _ in admitted]
                version, seq, new = await store.lock_and_claim(conn, keys)
                board = await self._sync(conn, version, seq)
                board.expect(self.streams)
                outgoing: list[Outgoing] = []
                fresh = moved = 0
                if not hold and board.held:  # held under event_time before a restart in arrival order
                    for h in board.release(everything=True):
                        outgoing += self._apply(board, h.kind, h.at, h.data, h.ident)
                # first: the batch's timers fire in their place among its events
                for stream, _, at in admitted:
                    moved += board.observe(stream, at)
                for stream, e, at in admitted:
                    ident = (e.envelope.source, e.envelope.id)
                    if ident not in new:
                        continue
                    new.discard(ident)  # the same event twice in one batch counts once
                    fresh += 1
                    if hold:
                        board.hold(stream, ident, e.event_type.short, at, e.data)
                    else:
                        outgoing += self._apply(board, e.event_type.short, at, e.data, ident)
                if fresh or moved:
                    for h in board.release() if hold else ():
                        outgoing += self._apply(board, h.kind, h.at, h.data, h.ident)
                    watermark = board.watermark
                    if watermark is not None:  # the timers every stream has now passed
                        outgoing += self._decide(board.tick(watermark), (SOURCE, f"tick-{version + 1}"))
                    changed, gone = board.take_changes()
                    stored = await store.save_board(conn, version + 1, board.clock, board.snapshot_header(), changed,
                                                    gone, outgoing)
                    if self.outbox is not None:
                        self.outbox.keep(stored)  # before the commit: no round of the outbox's loop takes them
        except BaseException:
            if stored and self.outbox is not None:
                self.outbox.let_go(stored)
            self.board = None  # it may hold half a batch that was rolled back: re-read next time
            await self.release_connection()  # it may be broken: the next batch takes a fresh one
            raise
        if stored:
            self._publish(stored, outgoing)
        if fresh or moved:
            self.version = version + 1
            self.lines = board.lines_by_field()
        self.decided += len(outgoing)
        return len(outgoing)

    def _admit(self, events: list[tuple[str, ValidatedEvent]]) -> list[tuple[str, ValidatedEvent, datetime]]:
        """The batch's events with the event time the board may take from each: a heartbeat more than
        ``routing_max_clock_lead_s`` ahead of the wall clock is left out, a contact event that far
        ahead is taken at the wall clock plus that lead (domain.py, "Ahead of the wall clock")."""
        wall = self.wall()
        cap = wall + timedelta(seconds=self.settings.routing_max_clock_lead_s)
        admitted: list[tuple[str, ValidatedEvent, datetime]] = []
        for stream, e in events:
            at = board_time(e.envelope.time)
            if at > cap:
                heartbeat = e.event_type.short == HEARTBEAT
                self._note_ahead(e.envelope.source, heartbeat, (at - wall).total_seconds())
                if heartbeat:
                    continue
                at = board_time(cap.astimezone(at.tzinfo))
            admitted.append((stream, e, at))
        return admitted

    def _note_ahead(self, source: str, heartbeat: bool, ahead_s: float) -> None:
        """Count an event ahead of the wall clock; warn once per source (its name and how far ahead:
        nothing of the event's data)."""
        outcome = "ignored" if heartbeat else "clamped"
        telemetry.get().counter(
            "tsunagu_routing_events_ahead", "events whose time ran ahead of routing's wall clock by more than "
            "TSUNAGU_ROUTING_MAX_CLOCK_LEAD_S: heartbeats ignored, contact events clamped", unit="{event}",
        ).add(1, {"outcome": outcome})
        key = f"{outcome}:{source}"
        if key in self._warned_ahead or len(self._warned_ahead) >= MAX_WARNED_SOURCES:
            return
        self._warned_ahead.add(key)
        log.warning("routing_event_ahead_of_clock", source=source, outcome=outcome, ahead_s=round(ahead_s),
                    max_lead_s=self.settings.routing_max_clock_lead_s)

    async def _learn_streams(self) -> None:
        """The partitions of contact.events, from the producer's metadata (a topic can gain some)."""
        if self.producer is None:
            return
        partitions = await self.producer.partitions_for(self.settings.topic(topics.CONTACT_EVENTS))
        self.streams = frozenset(str(p) for p in partitions)

    @staticmethod
    def _decide(decisions: list[Decision], cause: tuple[str, str]) -> list[Outgoing]:
        return [encode_decision(d, decision_id(*cause, i)) for i, d in enumerate(decisions)]

    def _publish(self, stored: list[int], outgoing: list[Outgoing]) -> None:
        """Publish a committed batch's decisions at once, from memory (``OutboxPublisher.publish_stored``):
        a task of its own, beside the next batch. Claiming them back from the outbox first cost three
        round trips before the first decision left; a round of the outbox's loop would also wait for
        the round in flight."""
        if self.outbox is None:
            return
        task = asyncio.create_task(self._publish_stored(self.outbox, stored, outgoing))
        self._rounds.add(task)
        task.add_done_callback(self._rounds.discard)

    async def _publish_stored(self, outbox: OutboxPublisher, stored: list[int], outgoing: list[Outgoing]) -> None:
        try:
            await outbox.publish_stored(stored, outgoing)
        except Exception as err:  # the rows stay; the publisher's loop publishes them
            log.warning("routing_publish_deferred", error=type(err).__name__)

    async def flush(self) -> None:
        """Wait for the batches' publishing tasks (before the producer stops)."""
        if self._rounds:
            await asyncio.wait(set(self._rounds), timeout=15)

    async def release_connection(self) -> None:
        """Give the consumer's connection back to the pool (before the pool closes: it waits for it)."""
        conn, self._conn = self._conn, None
        if conn is not None and self.pool is not None:
            try:
                await self.pool.release(conn)
            except Exception:  # noqa: BLE001 - a broken connection is terminated by the pool anyway
                conn.terminate()

    async def live_board(self) -> Board:
        """The last committed board, for the API: its own copy, so a request can never swap the
        board the consumer is applying a batch to (another instance may have moved it since)."""
        assert self.pool is not None
        version = await store.board_version(self.pool)
        seq = await store.registry_seq(self.pool)
        view = self._view
        if view is None or view[0] != version or view[1] != seq:
            seq, registries = await store.load_registries(self.pool)
            version, snapshot = await store.read_board(self.pool)
            self._view = view = (version, seq, Board.restore(snapshot, registries))
        return view[2]


def register_consumer(spec: ServiceSpec, broker: KafkaBroker, routing: Routing) -> None:
    settings = routing.settings

    @spec.subscriber(
        broker, settings, fetch_max_wait_ms=settings.routing_fetch_wait_ms,
        title="routing.contact_events",
        description="Contact events and platform heartbeats: assign, queue, overflow, withdraw.",
    )
    async def on_contact_events(records: Any) -> None:
        try:
            await _contact_events(records)
        except Exception as err:
            await batch_failed(routing.consumer, records, err)
            raise
        routing.consumer.succeeded()

    async def _contact_events(records: Any) -> None:
        batch = decode_records(records)
        for record, why in batch.invalid:
            log.warning("contact_event_set_aside", partition=record.partition, offset=record.offset,
                        id=why.id, problems=len(why.problems))
        if not batch.events:
            return
        t0 = time.perf_counter()
        # by event time across partitions, each with its stream: the board's clock never goes back,
        # and its timers wait for every stream (domain.py)
        decided = await routing.apply_batch([(str(where[1]), e) for where, e in batch.merged()])
        t1 = time.perf_counter()
        log.debug("routing_batch", events=len(batch.events), decisions=decided, apply_ms=round((t1 - t0) * 1000, 1))
