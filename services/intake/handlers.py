"""intake's two doors share one path: sort the events, store the new ones, answer per event.

``accept_events`` is what both the HTTP route and the Kafka ingress subscriber call; the subscriber reads
each record in the content mode its headers say (structured or binary: services/intake/bindings.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from faststream.kafka import KafkaBroker
from opentelemetry.trace import SpanKind

from schemas import EVENT_TYPES, partner_org
from schemas.envelope import CloudEvent
from schemas.kafka import kafka_headers
from schemas.rejected import RejectedRecord
from services.intake import store
from services.intake.bindings import event_from_kafka
from services.intake.domain import Canonical, Outcome, Rules, Sorted, outcomes, sorting_steps
from services.intake.settings import IntakeSettings
from tsunagu import auth, telemetry, topics
from tsunagu.consume import decode_records
from tsunagu.fairness import FairGate
from tsunagu.health import ConsumerHealth, batch_failed
from tsunagu.outbox import OutboxPublisher
from tsunagu.ratelimit import Holds, RateLimiter
from tsunagu.service import ServiceSpec
from tsunagu.telemetry import EventRef, current_of, emit_contact_root, event_spans

log = structlog.get_logger()

# The reasons intake counts by: the envelope's attributes and every data field of the contract.
REASONS = frozenset({"event", "conflict", *CloudEvent.model_fields} | {
    f"data.{name}" for t in EVENT_TYPES.values() for m in (t.data_model, t.ingress_model) for name in m.model_fields})


KEYS_REMEMBERED = 10_000


@dataclass
class Intake:
    """What the handlers need, built in the app's lifespan."""

    settings: IntakeSettings
    rules: Rules
    clock: Callable[[], datetime]
    pool: asyncpg.Pool | None = None
    outbox: OutboxPublisher | None = None
    limiter: RateLimiter | None = None  # the HTTP door's per-partner limits (live keys)
    backfill_limiter: RateLimiter | None = None  # the same for back-fill keys (replays)
    holds: Holds = field(default_factory=lambda: Holds(time.monotonic))  # keys told to wait
    gate: FairGate | None = None  # the HTTP door's fair shares; the Kafka door gives way to its urgent requests
    # the organisation each key hash last authenticated as: for precedence only, never for authorisation
    key_orgs: dict[bytes, str] = field(default_factory=dict)

    def remember_key(self, key_hash: bytes, org: str | None) -> None:
        if org is None:
            self.key_orgs.pop(key_hash, None)
            return
        if key_hash not in self.key_orgs and len(self.key_orgs) >= KEYS_REMEMBERED:
            self.key_orgs.clear()  # more keys than partners have: start afresh rather than grow
        self.key_orgs[key_hash] = org
    consumer: ConsumerHealth = field(default_factory=ConsumerHealth)  # ingress batches failing: not ready


async def _a_turn() -> None:
    await asyncio.sleep(0)


async def accept_events(
    intake: Intake, raws: list[object], caller: auth.Caller | None, sizes: list[int] | None = None,
    give_way: Callable[[], Awaitable[None]] = _a_turn,
) -> tuple[list[Outcome], list[Outcome]]:
    """Returns (outcomes in request order, foreign-source outcomes).

    ``give_way`` is awaited at each turn of the work (tsunagu/fairness.py: urgent requests first).

    ``caller`` is the HTTP door's authenticated partner; the Kafka door has none (each source's
    organisation speaks as its active keys allow). When any event names another organisation's
    source, nothing is stored: the caller gets 403 and the list of offending events.
    """
    assert intake.pool is not None
    if caller is not None:
        speaker, speakers = auth.speaker_of(caller), None
    else:
        orgs = {org for raw in raws if isinstance(raw, dict) and (org := partner_org(raw.get("source"))) is not None}
        speaker, speakers = None, (await auth.partner_speakers(intake.pool, orgs) if orgs else {})
    sorted_ = await sorted_in_turns(raws, intake.rules, intake.clock(), intake.settings.intake_turn_events,
                                    give_way, caller=speaker, speakers=speakers, sizes=sizes)
    if sorted_.foreign:
        count_rejected(sorted_.foreign, "http")
        return [], sorted_.foreign
    await give_way()
    # The HTTP door stores in parts only while another organisation is sending too: alone (a replay), one
    # transaction is fastest. The Kafka door never does: it pulls at its own pace, and parts made its
    # batches 3.5x slower (a commit each) while it gives way at its turns all the same.
    part = intake.settings.intake_store_events
    if caller is None or intake.gate is None or not intake.gate.shared(caller.org_id):
        part = 0
    stored = await stored_in_parts(intake.pool, sorted_.canonical, part, give_way)
    if stored.new and intake.outbox is not None:
        intake.outbox.wake()
    results = outcomes(sorted_, stored.new, stored.settled)
    count_rejected(results, "http" if caller is not None else "kafka")
    return results, []


async def sorted_in_turns(raws: list[object], rules: Rules, now: datetime, turn: int,
                          give_way: Callable[[], Awaitable[None]] = _a_turn, **who: Any) -> Sorted:
    """``sort_events``, awaiting ``give_way`` every ``turn`` events: a large batch costs tens of ms of
    CPU, and another partner's request then takes its turns meanwhile instead of waiting it out (fair
    shares: tsunagu/fairness.py bounds how many requests, this how long each holds the loop, and
    ``give_way`` lets urgent requests go first)."""
    out = Sorted()
    for index in sorting_steps(raws, rules, now, out, **who):
        if turn and index and index % turn == 0:
            await give_way()
    return out


# --- telemetry (tsunagu/telemetry.py) ------------------------------------------------------------


async def store_traced(pool: asyncpg.Pool, canonical: list[Canonical]) -> store.Stored:
    """``store.store_new`` with an ``intake accept`` span per event in its contact's trace (linked to
    the request); each outbox row carries its event's span on."""
    if not telemetry.get().recording:
        return await store.store_new(pool, canonical)
    refs = [EventRef(c.contact_id, None, {"tsunagu.event.type": c.type, "tsunagu.event.id": c.id})
            for c in canonical]
    with event_spans("intake accept", refs, kind=SpanKind.INTERNAL) as spans:
        canonical = [replace(c, traceparent=current_of(span)) for c, span in zip(canonical, spans, strict=True)]
        stored = await store.store_new(pool, canonical)
        for c, span in zip(canonical, spans, strict=True):
            new = (c.source, c.id) in stored.new
            settled = stored.settled.get(c.index)
            span.set_attribute("tsunagu.outcome", "accepted" if new else settled.status if settled else "duplicate")
            if new and c.type.startswith("jp.tsunagu.contact.received."):
                emit_contact_root(c.contact_id, getattr(span, "start_time", None))
    return stored


async def stored_in_parts(pool: asyncpg.Pool, canonical: list[Canonical], part: int,
                          give_way: Callable[[], Awaitable[None]]) -> store.Stored:
    """``store_traced`` in transactions of at most ``part`` events (0: one for all), awaiting
    ``give_way`` between them: a large batch then holds the database for a part at a time, and a quiet
    partner's request goes first in between. Each part is judged after the ones before it are
    committed, so the ownership rules read the same as in one transaction; if intake stops in between,
    the parts stored answer as duplicates when the request is sent again."""
    if not part or len(canonical) <= part:
        return await store_traced(pool, canonical)
    stored = store.Stored()
    for start in range(0, len(canonical), part):
        if start:
            await give_way()
        done = await store_traced(pool, canonical[start:start + part])
        stored.new |= done.new
        stored.settled.update(done.settled)
    return stored


def count_rejected(results: list[Outcome], door: str) -> None:
    """``tsunagu_intake_rejected_total{door, reason}``: reason is where the first problem sits (a
    schema path without indexes, e.g. ``data.caller_id``), ``conflict`` for a conflict — never a value,
    and only names of the contract (REASONS): a path the client chose, such as an unknown attribute,
    counts as ``other``."""
    rejected = [o for o in results if o.status in ("rejected", "conflict")]
    if not rejected:
        return
    counter = telemetry.get().counter("tsunagu_intake_rejected", "events intake refused, by door and reason",
                                      unit="{event}")
    for o in rejected:
        if o.status == "conflict":
            reason = "conflict"
        else:
            path = re.sub(r"\[\d+\]", "", o.problems[0].path) if o.problems else ""
            reason = ".".join(path.split(".")[:2]) or "event"
        counter.add(1, {"door": door, "reason": reason if reason in REASONS else "other"})


def assigned_in(records: list[Any]) -> set[tuple[str, str]]:
    """(contact, organisation) of each ``routing.assigned`` among routing's decisions. Only routing writes
    that topic; a record that is not a canonical event (it should not happen) is skipped, not retried."""
    out: set[tuple[str, str]] = set()
    batch = decode_records(records)
    for event in batch.events:
        if event.event_type.short == "routing.assigned":
            data: Any = event.data
            out.add((data.contact_id, data.organisation_id))
    return out


def register_consumer(spec: ServiceSpec, broker: KafkaBroker, intake: Intake) -> None:
    settings = intake.settings
    headers = {k: v.decode() for k, v in kafka_headers()}

    ingress, decisions = settings.topic(topics.INGRESS), settings.topic(topics.ROUTING_DECISIONS)

    @spec.subscriber(
        broker, settings,
        title="intake.ingress",
        description="Partners' events over Kafka, validated like POST /v1/events; and routing's decisions, "
        "whose assignments let the assigned organisation report the contact.",
    )
    async def on_records(records: Any) -> None:
        records = records if isinstance(records, (list, tuple)) else [records]
        try:
            if partners := [r for r in records if r.topic == ingress]:
                await _ingress(partners)
            if assignments := [r for r in records if r.topic == decisions]:
                await store.grant_assigned(intake.pool, assigned_in(assignments))
        except Exception as err:
            await batch_failed(intake.consumer, records, err)
            raise
        intake.consumer.succeeded()

    async def _ingress(records: list[Any]) -> None:
        raws: list[object] = []
        sizes: list[int] = []
        for r in records:
            carried = getattr(r, "headers", None) or ()
            # binary mode carries the attributes in headers: they count towards the event's size
            sizes.append(len(r.value or b"") + sum(len(v or b"") for name, v in carried if name[:3].lower() == "ce_"))
            raws.append(event_from_kafka(carried, r.key, r.value))
        give_way = intake.gate.give_way if intake.gate is not None else _a_turn
        results, _ = await accept_events(intake, raws, None, sizes, give_way)
        rejected = [o for o in results if o.status in ("rejected", "conflict")]
        futures = []
        for o in rejected:
            r = records[o.index]
            record = RejectedRecord(
                rejected_at=intake.clock(),
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                id=o.id,
                source=o.source,
                type=o.type,
                problems=[{"path": p.path, "message": p.message} for p in o.problems],
                payload_sha256=hashlib.sha256(r.value or b"").hexdigest(),
                payload_bytes=len(r.value or b""),
            )
            futures.append(
                await broker.publish(
                    record.model_dump_json().encode(),
                    settings.topic(topics.REJECTED),
                    key=r.key,
                    headers=headers | {"content-type": "application/json"},
                    no_confirm=True,
                )
            )
        for f in futures:
            await f
        accepted = sum(1 for o in results if o.status == "accepted")
        log.info("ingress_batch", records=len(records), accepted=accepted, rejected=len(rejected))
