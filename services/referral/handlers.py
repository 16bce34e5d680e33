"""referral's moving parts: the consultation consumer, the deadline scanner, and receivers' actions.

- ``on_consultation_events``: a batch of ``consultation.recorded`` / ``referral.requested`` →
  new referrals (or refusals) in ONE transaction with the inbox claim, the event-time watermark
  and the outbox (tsunagu/consume.py's pattern).
- ``Scanner``: every ``TSUNAGU_REFERRAL_SCAN_SECONDS``, escalates what is past its deadline at
  the injected clock's "now". Rows are claimed ``FOR UPDATE SKIP LOCKED`` and the escalation
  event's id is derived from the referral's version, so with several instances (or a crash and
  a restart) each missed deadline escalates exactly once.
- ``act``: a receiver's (or the secretariat's) action from the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

from schemas.codes import ReferralOutcome, ReferralReason
from schemas.events import ConsultationRecorded, ReferralRequested
from services.referral import store
from services.referral.domain import (
    Action,
    Change,
    DeadlinePolicy,
    NewReferral,
    Referral,
    apply_action,
    escalate_until,
    from_consultation,
    from_request,
    open_referral,
)
from tsunagu import topics
from tsunagu.consume import batch_subscriber, decode_records
from tsunagu.inbox import claim_new
from tsunagu.logging import event_fields
from tsunagu.outbox import OutboxPublisher
from tsunagu.settings import Settings

log = structlog.get_logger()

Clock = Callable[[], Awaitable[datetime]]


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Referrals:
    """What the handlers, the scanner and the API share; the pool and outbox come from the lifespan."""

    settings: Settings
    policy: DeadlinePolicy
    pool: asyncpg.Pool | None = None
    outbox: OutboxPublisher | None = None

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


def policy_of(settings: Settings) -> DeadlinePolicy:
    return DeadlinePolicy(
        imminent_minutes=settings.referral_imminent_ack_minutes,
        urgent_hours=settings.referral_urgent_ack_hours,
        standard_business_days=settings.referral_standard_ack_business_days,
    )


# --- consuming consultations -----------------------------------------------------------------------


def requests_in(events: list[Any]) -> list[NewReferral]:
    out: list[NewReferral] = []
    for e in events:
        if isinstance(e.data, ConsultationRecorded):
            new = from_consultation(e.data, e.envelope.time)
            if new is not None:
                out.append(new)
        elif isinstance(e.data, ReferralRequested):
            out.append(from_request(e.data, e.envelope.time))
    return out


async def apply_batch(referrals: Referrals, records: Any) -> int:
    """Open the referrals a batch of consultation records asks for; returns how many were new."""
    assert referrals.pool is not None
    batch = decode_records(records)
    for record, why in batch.invalid:
        # not a canonical event: retrying cannot fix it; ids only, never the payload
        log.warning("record_set_aside", topic=record.topic, partition=record.partition, offset=record.offset,
                    id=why.id, type=why.type, problems=len(why.problems))
    if not batch.events:
        return 0
    async with referrals.pool.acquire() as conn, conn.transaction():
        # sorted: two instances briefly sharing a partition after a rebalance lock rows in one order
        new_keys = await claim_new(conn, store.SCHEMA, sorted(batch.keys()))
        fresh = [e for e in batch.events if (e.envelope.source, e.envelope.id) in new_keys]
        await store.advance_watermark(conn, max(e.envelope.time for e in batch.events))
        asked = requests_in(fresh)
        found = await store.receivers_for(conn, {n.municipality for n in asked if n.municipality})
        opened = sorted(
            (open_referral(n, found.get(n.municipality or "", []), referrals.policy) for n in asked),
            key=lambda pair: pair[0].referral_id,
        )
        inserted = await store.insert_new(conn, opened)
        await store.record_changes(conn, inserted)
    if inserted:
        referrals.wake_outbox()
        log.info("referrals_opened", count=len(inserted), refused=sum(1 for r, _ in inserted if r.chain == ()))
        for ref, change in inserted:
            log.info("referral_opened", **event_fields(change.type, ref.contact_id, ref.referral_id))
    return len(inserted)


def register_consumer(broker: KafkaBroker, referrals: Referrals) -> None:
    settings = referrals.settings

    @broker.subscriber(
        settings.topic(topics.CONSULTATION_EVENTS),
        **batch_subscriber(settings.group("referral"), max_records=500),
        title="consultation.events",
        description="consultation.recorded with referral_needed and referral.requested open referrals.",
    )
    async def on_consultation_events(records: Any) -> None:
        await apply_batch(referrals, records)


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
