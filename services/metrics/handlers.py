"""metrics' one subscriber: every canonical topic, one consumer group, batches of facts.

A batch is applied in chunks of records, each in one PostgreSQL transaction: claim the events in the
inbox (a redelivered event is a no-op), fold the new ones into facts (domain.facts) and combine them
with the stored facts, moving the rollups by each changed contact's difference (store.rollups) — or,
while the schema catches up with a backlog (catchup.py), the facts alone (store.facts). The next
chunk is decoded and folded while this one's transaction runs; chunks commit in order. Offsets are
committed after the last chunk's transaction (NACK_ON_ERROR): a crash anywhere replays the batch,
whose committed chunks find their events already claimed.

A record metrics cannot count never holds the batch up: one that is not a canonical event, or whose
event time lies outside the window metrics can store (domain.periods.EARLIEST_TIME..LATEST_TIME), is *set
aside* — logged by where it sits and its id, counted (``tsunagu_events_set_aside_total``) and published
to ``tsunagu.intake.rejected`` as a ``RejectedRecord`` (its topic, partition and offset, the reason,
the payload's SHA-256 and size, never the payload; header ``tsunagu-set-aside-by: metrics``) — and the
rest of the batch goes on. A batch that fails all the same is logged with its cause (class and message,
never a value), waited on (``ConsumerHealth.backoff``) and redelivered; after two failures in a row
metrics is not ready (``/health/ready`` check ``consumer``, with the reason) until a batch succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

from schemas import EventInvalid, ValidatedEvent
from schemas.registry import Problem
from schemas.rejected import RejectedRecord, rejected_record
from services.metrics.catchup import CatchUp
from services.metrics.domain.facts import Facts, fold
from services.metrics.domain.periods import TIME_OUT_OF_RANGE, time_problem
from services.metrics.settings import MetricsSettings
from services.metrics.store.facts import FactRows, apply_facts_only, fact_rows
from services.metrics.store.fold_mode import DeriveInProgress, live_for_batch
from services.metrics.store.rollups import apply_rows
from services.metrics.store.sql import SCHEMA
from services.metrics.telemetry import OpsTelemetry
from tsunagu import telemetry as process_telemetry
from tsunagu import topics
from tsunagu.consume import decode_records
from tsunagu.health import ConsumerHealth, batch_failed
from tsunagu.inbox import claim_new
from tsunagu.service import ServiceSpec
from tsunagu.settings import Settings

log = structlog.get_logger()



@dataclass
class Metrics:
    """What the handler needs, filled in by the app's lifespan."""

    settings: MetricsSettings
    telemetry: OpsTelemetry
    pool: asyncpg.Pool | None = None
    consumed: int = field(default=0)  # new events applied by this process
    live: bool = False  # the schema's fold_mode was seen 'live' (it never goes back)
    catch_up: CatchUp | None = None  # while catching up: watches the offsets, then derives
    consumer: ConsumerHealth = field(default_factory=ConsumerHealth)  # batches failing: not ready
    clock: Callable[[], datetime] | None = None  # when a record was set aside (the app's wall clock)
    # publishes what was set aside (key, record) onto the rejected topic; None: only logged and counted
    publish_aside: Callable[[list[tuple[bytes | None, RejectedRecord]]], Awaitable[None]] | None = None
    set_aside: int = field(default=0)  # records set aside by this process


# A batch is applied in chunks, one transaction each, pipelined: while one chunk's statements run in
# PostgreSQL, this process decodes, validates and folds the next (asyncio: the loop is free while the
# connection waits). Chunks no smaller than 2,000: a contact's events spread over more transactions
# make PostgreSQL move its rollups more often (500-record chunks cost it ~18 % more
# per event, more than the overlap saved), so batches are fetched three chunks at a time.
CHUNK_RECORDS = 2000
# Python work is done in slices, with a yield between them, so a pending statement's reply is read
# and the next statement sent within a slice's time rather than after a whole chunk's decode.
SLICE_RECORDS = 100


@dataclass
class Prepared:
    """A chunk ready for its transaction: what the inbox is asked to claim and the folded rows."""

    unique: list[ValidatedEvent]  # each (source, id) once, first occurrence first
    rows: FactRows  # fold(unique): right whenever the inbox finds every one of them new
    aside: list[tuple[Any, EventInvalid]] = field(default_factory=list)  # (record, why) set aside


def unique_events(events: list[ValidatedEvent]) -> list[ValidatedEvent]:
    seen: set[tuple[str, str]] = set()
    out = []
    for event in events:
        pair = (event.envelope.source, event.envelope.id)
        if pair not in seen:  # a repeat within the batch is applied once
            seen.add(pair)
            out.append(event)
    return out


async def apply_prepared(conn: asyncpg.Connection, prepared: Prepared, rollups: bool = True) -> list[ValidatedEvent]:
    """Inside the caller's transaction: claim the chunk's events in the inbox and fold the new ones
    into the facts and (``rollups``: live) the rollups. Returns the events that were new."""
    unique = prepared.unique
    new = await claim_new(conn, SCHEMA, [(e.envelope.source, e.envelope.id, e.envelope.type) for e in unique])
    if len(new) == len(unique):
        fresh, rows = unique, prepared.rows
    else:  # a redelivery (e.g. the chunks that committed before a crash): fold only what is new
        fresh = [e for e in unique if (e.envelope.source, e.envelope.id) in new]
        rows = fact_rows(fold(fresh))
    if rollups:
        await apply_rows(conn, rows)
    else:
        await apply_facts_only(conn, rows)
    return fresh


async def apply_events(conn: asyncpg.Connection, events: list[ValidatedEvent]) -> list[ValidatedEvent]:
    """Inside the caller's transaction: claim the events in the inbox and fold the new ones into the
    facts and the rollups. Returns the events that were new."""
    unique = unique_events(events)
    return await apply_prepared(conn, Prepared(unique, fact_rows(fold(unique))))


def _log_aside(record: Any, why: EventInvalid, reason: str) -> None:
    # set aside, never retried: logged by where it sits and its id — never its payload
    log.warning("event_set_aside", reason=reason, topic=record.topic, partition=record.partition,
                offset=record.offset, id=why.id, source=why.source, problems=[p.path for p in why.problems])


def _split_by_time(records: list[Any], batch: Any) -> tuple[list[ValidatedEvent], list[tuple[Any, EventInvalid]]]:
    """The batch's events whose time metrics can count, and (record, why) of those it cannot."""
    if all(time_problem(e) is None for e in batch.events):
        return batch.events, []
    invalid = {id(r) for r, _ in batch.invalid}
    valid_records = [r for r in records if id(r) not in invalid]  # in step with batch.events
    keep: list[ValidatedEvent] = []
    aside: list[tuple[Any, EventInvalid]] = []
    for record, event in zip(valid_records, batch.events, strict=True):
        problem = time_problem(event)
        if problem is None:
            keep.append(event)
            continue
        env = event.envelope
        why = EventInvalid([Problem("time", problem)], id=env.id, source=env.source, type=env.type)
        _log_aside(record, why, TIME_OUT_OF_RANGE)
        aside.append((record, why))
    tel = process_telemetry.get()
    tel.set_aside().add(len(aside), {"service": tel.service})
    return keep, aside


async def prepare(records: list[Any]) -> Prepared:
    """Decode, validate and fold a chunk of records, yielding to the loop between slices; what cannot
    be counted (not a canonical event, a time outside the window) is set aside, not folded."""
    events: list[ValidatedEvent] = []
    aside: list[tuple[Any, EventInvalid]] = []
    for i in range(0, len(records), SLICE_RECORDS):
        chunk = records[i:i + SLICE_RECORDS]
        batch = decode_records(chunk)  # counts the invalid ones as set aside
        for record, why in batch.invalid:
            _log_aside(record, why, "not_canonical")
        aside += batch.invalid
        keep, outside = _split_by_time(chunk, batch)
        events += keep
        aside += outside
        await asyncio.sleep(0)
    unique = unique_events(events)
    facts = Facts()
    for i in range(0, len(unique), SLICE_RECORDS):
        fold(unique[i:i + SLICE_RECORDS], into=facts)
        await asyncio.sleep(0)
    return Prepared(unique, fact_rows(facts), aside)


async def publish_set_aside(metrics: Metrics, aside: list[tuple[Any, EventInvalid]]) -> None:
    """Publish what a batch set aside onto the rejected topic (before its offsets are committed: a
    failure redelivers the batch, so a record may be published twice, never lost)."""
    metrics.set_aside += len(aside)
    if not aside or metrics.publish_aside is None or metrics.clock is None:
        return
    at = metrics.clock()
    await metrics.publish_aside([
        (record.key, rejected_record(record.value or b"", why, rejected_at=at, topic=record.topic,
                                     partition=record.partition, offset=record.offset))
        for record, why in aside
    ])


async def _committed(metrics: Metrics, prepared: Prepared) -> list[ValidatedEvent]:
    assert metrics.pool is not None
    if not prepared.unique:
        return []
    async with metrics.pool.acquire() as conn, conn.transaction():
        # catching up: the mode is held until this transaction ends, so no derive runs in between
        live = metrics.live or await live_for_batch(conn)
        metrics.live = metrics.live or live
        return await apply_prepared(conn, prepared, rollups=live)


async def _counted(metrics: Metrics, fresh: list[ValidatedEvent]) -> None:
    for i in range(0, len(fresh), SLICE_RECORDS):
        metrics.telemetry.record(fresh[i:i + SLICE_RECORDS])
        await asyncio.sleep(0)
    metrics.consumed += len(fresh)


async def apply_batch(metrics: Metrics, records: Any, chunk: int = CHUNK_RECORDS) -> int:
    """Apply one batch of records; returns how many events were new.

    Chunks commit one after the other, in the batch's order; the batch's offsets are committed only
    after this returns, when every chunk has committed. A crash in between redelivers the whole batch:
    the chunks that committed find their events claimed, the others apply them — nothing twice, nothing
    lost."""
    records = list(records) if isinstance(records, (list, tuple)) else [records]
    pending: asyncio.Task[list[ValidatedEvent]] | None = None
    total = 0
    aside: list[tuple[Any, EventInvalid]] = []
    try:
        for i in range(0, len(records), chunk):
            prepared = await prepare(records[i:i + chunk])  # overlaps the pending chunk's transaction
            aside += prepared.aside
            fresh = await pending if pending is not None else []
            pending = asyncio.create_task(_committed(metrics, prepared))
            await _counted(metrics, fresh)  # ops counters of the chunk before, also while the next one runs
            total += len(fresh)
        fresh = await pending if pending is not None else []
        pending = None
        await _counted(metrics, fresh)
        await publish_set_aside(metrics, aside)
        return total + len(fresh)
    except BaseException:
        if pending is not None and not pending.done():
            pending.cancel()  # its transaction rolls back; the batch is redelivered
            with contextlib.suppress(BaseException):
                await pending
        raise


def rejected_publisher(broker: KafkaBroker, settings: Settings) -> Callable[[list[tuple[bytes | None, RejectedRecord]]],
                                                                            Awaitable[None]]:
    """Publish set-aside records onto the rejected topic, keyed as received."""
    topic = settings.topic(topics.REJECTED)
    headers = {"content-type": "application/json", SET_ASIDE_BY: "metrics"}

    async def publish(aside: list[tuple[bytes | None, RejectedRecord]]) -> None:
        futures = [await broker.publish(record.model_dump_json().encode(), topic, key=key, headers=headers,
                                        no_confirm=True) for key, record in aside]
        for future in futures:
            await future

    return publish


SET_ASIDE_BY = "tsunagu-set-aside-by"  # header naming the consumer that set a record aside


def register_consumer(spec: ServiceSpec, broker: KafkaBroker, metrics: Metrics) -> Any:
    """Subscribe metrics to the topics of its spec (every canonical one); returns the subscriber (its
    consumer's offsets tell when a catch-up has reached the end of the topics)."""
    subscriber = spec.subscriber(
        broker, metrics.settings, max_records=6000, fetch_max_wait_ms=100,
        title="metrics.events",
        description="Every canonical event, folded into facts for the secretariat's figures.",
    )

    @subscriber
    async def on_canonical_events(records: Any) -> None:
        try:
            await apply_batch(metrics, records)
        except DeriveInProgress:
            log.info("batch_waits_for_derive")  # redelivered once the rollups are derived
            raise
        except Exception as err:
            await batch_failed(metrics.consumer, records, err)
            raise
        metrics.consumer.succeeded()
        if not metrics.live and metrics.catch_up is not None:
            metrics.catch_up.applied_records(records if isinstance(records, (list, tuple)) else [records])

    return subscriber
