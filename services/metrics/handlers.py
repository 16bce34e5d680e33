"""metrics' one subscriber: every canonical topic, one consumer group, batches of facts.

Per batch, in one PostgreSQL transaction: claim the events in the inbox (a redelivered event is a
no-op), fold the new ones into facts (domain.py) and combine them with the stored facts, moving the
rollups by each changed contact's difference (store.py). Offsets are committed after the
transaction (NACK_ON_ERROR): a crash anywhere replays the batch, which finds its events already
claimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

from schemas import ValidatedEvent
from services.metrics import store
from services.metrics.domain import fold
from services.metrics.telemetry import OpsTelemetry
from tsunagu import topics
from tsunagu.consume import batch_subscriber, decode_records
from tsunagu.inbox import claim_new
from tsunagu.settings import Settings

log = structlog.get_logger()

CONSUMED = (topics.CONTACT_EVENTS, topics.ROUTING_DECISIONS, topics.CONSULTATION_EVENTS, topics.REFERRAL_EVENTS)


@dataclass
class Metrics:
    """What the handler needs, filled in by the app's lifespan."""

    settings: Settings
    telemetry: OpsTelemetry
    pool: asyncpg.Pool | None = None
    consumed: int = field(default=0)  # new events applied by this process


async def apply_events(conn: asyncpg.Connection, events: list[ValidatedEvent]) -> list[ValidatedEvent]:
    """Inside the caller's transaction: claim the events in the inbox and fold the new ones into the
    facts and the rollups. Returns the events that were new."""
    new = await claim_new(conn, store.SCHEMA, [(e.envelope.source, e.envelope.id, e.envelope.type) for e in events])
    fresh = []
    for event in events:
        pair = (event.envelope.source, event.envelope.id)
        if pair in new:
            new.discard(pair)  # a repeat within the batch is applied once
            fresh.append(event)
    await store.apply_facts(conn, fold(fresh))
    return fresh


async def apply_batch(metrics: Metrics, records: Any) -> int:
    """Apply one batch of records; returns how many events were new."""
    assert metrics.pool is not None
    batch = decode_records(records)
    for record, why in batch.invalid:
        # set aside, never retried: logged by where it sits and its id — never its payload
        log.warning("event_set_aside", topic=record.topic, partition=record.partition, offset=record.offset,
                    id=why.id, source=why.source, problems=[p.path for p in why.problems])
    if not batch.events:
        return 0
    async with metrics.pool.acquire() as conn, conn.transaction():
        fresh = await apply_events(conn, batch.events)
    metrics.telemetry.record(fresh)
    metrics.consumed += len(fresh)
    return len(fresh)


def register_consumer(broker: KafkaBroker, metrics: Metrics) -> None:
    settings = metrics.settings

    @broker.subscriber(
        *(settings.topic(t) for t in CONSUMED),
        **batch_subscriber(settings.group(settings.metrics_consumer_group), max_records=2000, fetch_max_wait_ms=100),
        title="metrics.events",
        description="Every canonical event, folded into facts for the secretariat's figures.",
    )
    async def on_canonical_events(records: Any) -> None:
        await apply_batch(metrics, records)
