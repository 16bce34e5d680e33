"""referral's moving parts: the consultation consumer, the deadline scanner, and receivers' actions.

- ``on_consultation_events``: a batch of ``consultation.recorded`` / ``referral.requested`` →
  new referrals (or refusals) in ONE transaction with the inbox claim, the event-time watermark
  and the outbox (tsunagu/consume.py's pattern); a referral.requested whose referral_id holds a
  different referral is refused onto the rejected topic (reason ``conflict``), never dropped.
- ``Scanner``: every ``TSUNAGU_REFERRAL_SCAN_SECONDS``, escalates what is past its deadline at
  the injected clock's "now". Rows are claimed ``FOR UPDATE SKIP LOCKED`` and the escalation
  event's id is derived from the referral's version, so with several instances (or a crash and
  a restart) each missed deadline escalates exactly once.
- ``act``: a receiver's (or the secretariat's) action from the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

from schemas import ValidatedEvent
from schemas.codes import ReferralOutcome, ReferralReason
from schemas.events import ConsultationRecorded, ReferralRequested
from schemas.rejected import RejectedProblem, RejectedRecord
from services.referral import store
from services.referral.domain import (
    Action,
    Change,
    DeadlinePolicy,
    NewReferral,
    Referral,
    apply_action,
    differing_fields,
    escalate_until,
    from_consultation,
    from_request,
    open_referral,
)
from services.referral.settings import ReferralSettings
from tsunagu import telemetry, topics
from tsunagu.consume import decode_records
from tsunagu.health import ConsumerHealth, batch_failed
from tsunagu.inbox import claim_new
from tsunagu.logging import event_fields
from tsunagu.outbox import OutboxPublisher, Outgoing, enqueue
from tsunagu.service import ServiceSpec
from tsunagu.telemetry import traceparent_about

log = structlog.get_logger()

Clock = Callable[[], Awaitable[datetime]]
CONFLICT = "conflict"  # the rejected record's reason when a referral_id holds another referral


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Referrals:
    """What the handlers, the scanner and the API share; the pool and outbox come from the lifespan."""

    settings: ReferralSettings
    policy: DeadlinePolicy
    pool: asyncpg.Pool | None = None
    outbox: OutboxPublisher | None = None
    consumer: ConsumerHealth = field(default_factory=ConsumerHealth)  # batches failing: not ready

    async def now(self) -> datetime:
        """'Now' for receivers' actions: the wall clock, or the latest event time consumed."""
        return await self.deadline_now() or wall_clock()

    async def deadline_now(self) -> datetime | None:
        """'Now' for deadlines; None on event time before any event was consumed. Never the wall
        clock then: a scan that read it just before the first batch committed would find that
        batch's referrals years overdue."""
        if self.settings.referral_clock == "event_time":
            assert self.pool is not None
            return await store.watermark(self.pool)
        return wall_clock()

    def wake_outbox(self) -> None:
        if self.outbox is not None:
            self.outbox.wake()


def policy_of(settings: ReferralSettings) -> DeadlinePolicy:
    return DeadlinePolicy(
        imminent_minutes=settings.referral_imminent_ack_minutes,
        urgent_hours=settings.referral_urgent_ack_hours,
        standard_business_days=settings.referral_standard_ack_business_days,
    )


# --- consuming consultations -----------------------------------------------------------------------


@dataclass(frozen=True)
class Asked:
    """A referral an event asks for, with the event and the record it came in."""

    new: NewReferral
    event: ValidatedEvent
    record: Any
    explicit: bool  # a referral.requested (whose id the requester chose), not a consultation record


@dataclass(frozen=True)
class Conflict:
    """A referral.requested naming a referral_id that already holds a different referral."""

    asked: Asked
    held_by: str  # the organisation that requested the stored referral
    fields: list[str]  # names of the differing fields (domain.REQUEST_FIELDS), never values


def asked_in(events: list[tuple[ValidatedEvent, Any]]) -> list[Asked]:
    out: list[Asked] = []
    for e, record in events:
        if isinstance(e.data, ConsultationRecorded):
            new = from_consultation(e.data, e.envelope.time)
            if new is not None:
                out.append(Asked(new, e, record, explicit=False))
        elif isinstance(e.data, ReferralRequested):
            out.append(Asked(from_request(e.data, e.envelope.time), e, record, explicit=True))
    return out


async def conflicts_in(conn: asyncpg.Connection, asked: list[Asked]) -> list[Conflict]:
    """The explicit requests whose referral_id holds a referral with different content — compared with
    the row as stored after this batch's inserts, so a request that opened its referral (or an
    identical re-delivery) differs in nothing, and a second, different request in the same batch or
    from another instance at the same moment is found like one from long ago."""
    explicit = [a for a in asked if a.explicit]
    if not explicit:
        return []
    stored = await store.stored_requests(conn, (a.new.referral_id for a in explicit))
    out = []
    for a in explicit:
        if a.new.referral_id not in stored:  # cannot be after the insert; nothing to compare with then
            continue
        ref, need_recorded = stored[a.new.referral_id]
        fields = differing_fields(ref, a.new, need_recorded=need_recorded)
        if fields:
            out.append(Conflict(a, ref.organisation_id, fields))
    return out


def rejected_outgoing(conflict: Conflict, at: datetime) -> Outgoing:
    """What the rejected topic gets for a conflicting request: where it came from, the reason
    (``conflict``) and the names of the differing fields; never the payload or a value."""
    e, r = conflict.asked.event, conflict.asked.record
    value: bytes = r.value or b""
    names = ", ".join(conflict.fields)
    record = RejectedRecord(
        rejected_at=at,
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        id=e.envelope.id,
        source=e.envelope.source,
        type=e.envelope.type,
        problems=[
            RejectedProblem(path="data.referral_id",
                            message=f"{CONFLICT}: referral refused the request: the referral_id already holds a "
                                    f"referral that differs in {names}"),
            *(RejectedProblem(path=f"data.{name}",
                              message=f"{CONFLICT}: differs from the referral already stored under this referral_id")
              for name in conflict.fields),
        ],
        payload_sha256=hashlib.sha256(value).hexdigest(),
        payload_bytes=len(value),
    )
    key = r.key.decode("utf-8", "replace") if r.key else conflict.asked.new.contact_id
    return Outgoing(topics.REJECTED, key, record.model_dump_json().encode(),
                    traceparent_about(conflict.asked.new.contact_id, key))


async def apply_batch(referrals: Referrals, records: Any) -> int:
    """Open the referrals a batch of consultation records asks for; returns how many were new.

    A referral.requested whose referral_id already holds a referral with different content (another
    contact, requester, urgency, …) changes nothing and is reported: a warning (ids and field names),
    a record on the rejected topic (reason ``conflict``, the differing fields) and
    ``tsunagu_referral_requests_rejected_total{reason="conflict"}``. The same request again is a
    duplicate, silently."""
    assert referrals.pool is not None
    records = list(records) if isinstance(records, (list, tuple)) else [records]
    batch = decode_records(records)
    for record, why in batch.invalid:
        # not a canonical event: retrying cannot fix it; ids only, never the payload
        log.warning("record_set_aside", topic=record.topic, partition=record.partition, offset=record.offset,
                    id=why.id, type=why.type, problems=len(why.problems))
    if not batch.events:
        return 0
    set_aside = {id(r) for r, _ in batch.invalid}
    valid = [r for r in records if id(r) not in set_aside]  # the events' records, in the same order
    async with referrals.pool.acquire() as conn, conn.transaction():
        # sorted: two instances briefly sharing a partition after a rebalance lock rows in one order
        new_keys = await claim_new(conn, store.SCHEMA, sorted(batch.keys()))
        fresh = [(e, r) for e, r in zip(batch.events, valid, strict=True)
                 if (e.envelope.source, e.envelope.id) in new_keys]
        await store.advance_watermark(conn, max(e.envelope.time for e in batch.events))
        asked = asked_in(fresh)
        found = await store.receivers_for(conn, {a.new.municipality for a in asked if a.new.municipality})
        opened = sorted(
            (open_referral(a.new, found.get(a.new.municipality or "", []), referrals.policy) for a in asked),
            key=lambda pair: pair[0].referral_id,
        )
        inserted = await store.insert_new(conn, opened)
        await store.record_changes(conn, inserted)
        conflicts = await conflicts_in(conn, asked)
        now = wall_clock()
        await enqueue(conn, store.SCHEMA, [rejected_outgoing(c, now) for c in conflicts])
    if inserted or conflicts:
        referrals.wake_outbox()
    if inserted:
        log.info("referrals_opened", count=len(inserted), refused=sum(1 for r, _ in inserted if r.chain == ()))
        for ref, change in inserted:
            log.info("referral_opened", **event_fields(change.type, ref.contact_id, ref.referral_id))
    if conflicts:
        telemetry.get().counter(
            "tsunagu_referral_requests_rejected",
            "referral.requested events referral refused, by reason (conflict: the referral_id holds another "
            "referral)", unit="{event}",
        ).add(len(conflicts), {"reason": CONFLICT})
        for c in conflicts:
            e, r = c.asked.event, c.asked.record
            # ids and field names only: never a value of the request (it may be personal data)
            log.warning("referral_request_conflict", referral_id=c.asked.new.referral_id, id=e.envelope.id,
                        source=e.envelope.source, organisation_id=c.asked.new.organisation_id, held_by=c.held_by,
                        fields=c.fields, topic=r.topic, partition=r.partition, offset=r.offset)
    return len(inserted)


def register_consumer(spec: ServiceSpec, broker: KafkaBroker, referrals: Referrals) -> None:
    @spec.subscriber(
        broker, referrals.settings, max_records=500,
        title="consultation.events",
        description="consultation.recorded with referral_needed and referral.requested open referrals.",
    )
    async def on_consultation_events(records: Any) -> None:
        try:
            await apply_batch(referrals, records)
        except Exception as err:
            await batch_failed(referrals.consumer, records, err)
            raise
        referrals.consumer.succeeded()


# --- missed deadlines --------------------------------------------------------------------------------


async def escalate_due(referrals: Referrals, now: datetime, limit: int = 500) -> list[Change]:
    """Escalate every referral past its deadline at ``now``; returns the escalation events."""
    assert referrals.pool is not None
    done: list[Change] = []
    while True:
        async with referrals.pool.acquire() as conn, conn.transaction():
            overdue = await store.due(conn, now, limit)
            changes: list[tuple[Referral, Change]] = []
            final: list[Referral] = []
            for ref in overdue:
                steps = escalate_until(ref, now, referrals.policy)
                if steps:
                    final.append(steps[-1][0])
                    changes += steps
            await store.update(conn, *final)
            await store.record_changes(conn, changes)
        done += [c for _, c in changes]
        if len(overdue) < limit:
            break
    if done:
        referrals.wake_outbox()
        log.info("referrals_escalated", count=len(done))
        for change in done:
            log.info("referral_escalated", **event_fields(change.type, change.data.contact_id, change.data.referral_id))
    return done


class Scanner:
    def __init__(self, referrals: Referrals) -> None:
        self._referrals = referrals
        self._task: asyncio.Task[None] | None = None
        self.healthy = True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deadline-scanner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        interval = self._referrals.settings.referral_scan_seconds
        while True:
            try:
                now = await self._referrals.deadline_now()
                if now is not None:
                    await escalate_due(self._referrals, now)
                self.healthy = True
            except Exception as err:  # the database away: try again next round
                self.healthy = False
                log.warning("deadline_scan_failed", error=type(err).__name__)
            await asyncio.sleep(interval)


# --- receivers' actions --------------------------------------------------------------------------------


async def act(
    referrals: Referrals,
    conn: asyncpg.Connection,
    ref: Referral,
    action: Action,
    actor: str,
    *,
    reason: ReferralReason | None = None,
    outcome: ReferralOutcome | None = None,
) -> Referral:
    """Apply an action to a referral locked in ``conn``'s transaction (raises IllegalTransition)."""
    # never before the referral's last change: an action cannot precede what it answers
    at = max(await referrals.now(), ref.updated_at or datetime.min.replace(tzinfo=UTC))
    new, change = apply_action(ref, action, at, actor, referrals.policy, reason=reason, outcome=outcome)
    await store.update(conn, new)
    await store.record_changes(conn, [(new, change)])
    return new
