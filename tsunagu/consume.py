"""The idempotent batch-consume pattern every service follows.

    @broker.subscriber(settings.topic(topics.CONTACT_EVENTS), **batch_subscriber("routing"))
    async def on_contact_events(records: Any) -> None:
        batch = decode_records(records)               # canonical events; bad records set aside
        async with pool.acquire() as conn, conn.transaction():
            new = await claim_new(conn, SCHEMA, batch.keys())      # the inbox: redelivery is a no-op
            ... apply only the new events to this service's state ...
            await enqueue(conn, SCHEMA, derived_events)             # the outbox
        outbox.wake()

Offsets are committed after the handler returns (``AckPolicy.NACK_ON_ERROR``: an exception rewinds
the batch, which is then redelivered and finds its events in the inbox). A record that is not a
valid canonical event cannot be fixed by retrying: it is set aside, logged by id, never retried
(and counted: ``tsunagu_events_set_aside_total{service}``).

Tracing needs nothing here: the broker's middlewares (tsunagu/telemetry.py) start a span per record in
its contact's trace around the handler, and every ``Outgoing`` enqueued meanwhile carries the span of
the record with its key on — so one contact's events stay one trace across the services.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from faststream import AckPolicy

from schemas import EventInvalid, ValidatedEvent, decode_json, validate_event
from tsunagu import telemetry


async def raw_records(msg: Any) -> Any:
    # Hand the handler the records untouched: decoding is ours, so a poison record becomes a
    # rejection instead of an exception that would redeliver it forever.
    return msg.raw_message


def batch_subscriber(group_id: str, *, max_records: int = 1000, fetch_max_wait_ms: int = 50) -> dict[str, Any]:
    """Subscriber options for an at-least-once batch consumer in ``group_id``.

    ``fetch_max_wait_ms`` bounds latency on the embedded broker, whose waiting fetch is not woken
    by new data (docs/reference-host.md, quirk 1).
    """
    return dict(
        group_id=group_id,
        batch=True,
        max_records=max_records,
        batch_timeout_ms=fetch_max_wait_ms,
        fetch_max_wait_ms=fetch_max_wait_ms,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=raw_records,
    )


@dataclass
class Batch:
    events: list[ValidatedEvent] = field(default_factory=list)
    invalid: list[tuple[Any, EventInvalid]] = field(default_factory=list)  # (record, why)
    partitions: list[tuple[str, int]] = field(default_factory=list)  # (topic, partition) of each event

    def keys(self) -> list[tuple[str, str, str]]:
        """(source, id, type) of each event, for the inbox."""
        return [(e.envelope.source, e.envelope.id, e.envelope.type) for e in self.events]

    def in_event_time_order(self) -> list[ValidatedEvent]:
        """The events merged across partitions by event time, each partition's own order kept.

        A batch holds several partitions one after the other; state kept in event time (routing's
        board, whose clock never goes back) should see them interleaved as they happened. Within a
        partition the offset order stands even where the times disagree: a contact's events are all
        in one partition, in the order its partner sent them, which a plain sort by time could swap."""
        return [event for _, event in self.merged()]

    def merged(self) -> list[tuple[tuple[str, int], ValidatedEvent]]:
        """``in_event_time_order``, each event with its (topic, partition)."""
        runs: dict[tuple[str, int], list[tuple[tuple[str, int], ValidatedEvent]]] = {}
        for where, event in zip(self.partitions, self.events, strict=True):
            runs.setdefault(where, []).append((where, event))
        if len(runs) <= 1:
            return list(zip(self.partitions, self.events, strict=True))
        return list(heapq.merge(*runs.values(), key=_event_time))


def _event_time(pair: tuple[tuple[str, int], ValidatedEvent]) -> Any:
    return pair[1].envelope.time


def decode_records(records: Any) -> Batch:
    """Canonical events from a batch of Kafka records; what is not one is set aside with the reason."""
    records = records if isinstance(records, (list, tuple)) else [records]
    batch = Batch()
    for r in records:
        try:
            batch.events.append(validate_event(decode_json(r.value or b"")))
        except EventInvalid as err:
            batch.invalid.append((r, err))
        else:
            batch.partitions.append((r.topic, r.partition))
    if batch.invalid:
        tel = telemetry.get()
        tel.set_aside().add(len(batch.invalid), {"service": tel.service})
    return batch
