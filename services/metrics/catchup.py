"""metrics' catch-up (rebuild) mode: replay a backlog into facts only, then derive the rollups once.

A live batch upserts the facts and moves the rollups and histograms by each changed contact's
old/new difference (store.py) — most of a batch's PostgreSQL time. Replaying a year into an empty
schema that way moves the same day rows millions of times. In catch-up (migration 005:
``fold_mode``), a batch only claims its events in the inbox and upserts the facts; once the group has
applied everything the topics hold, one transaction derives every rollup from the facts
(``store.rebuild_rollups``) and sets the mode to live. Figures are the same either way: the rollups
are a function of the facts, which are order-independent.

Caught up is decided from offsets, never from time: every partition of the consumed topics, the
group's applied offset against the broker's end offset, on consecutive checks (domain.CatchUpRule).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import structlog
from aiokafka import TopicPartition

from services.metrics import store
from services.metrics.domain import CatchUpRule, behind

log = structlog.get_logger()

S = store.S
# how long a catch-up batch waits for the mode while a derive holds it before it is redelivered —
# short against the consumer's max poll interval (5 min), so the group keeps it meanwhile
MODE_WAIT = "5s"
CHECK_EVERY_S = 0.5  # how often the watcher looks at the offsets when no batch woke it
RETRY_AFTER_S = 30
REBUILDING = ("rebuilding: metrics is replaying the topics into its facts and will derive its figures once it "
              "has caught up; partial figures are not served — retry later")


class DeriveInProgress(Exception):
    """The rollups are being derived (by this process or another): the batch is redelivered after it."""


async def is_live(conn: Any) -> bool:
    return await conn.fetchval(f"SELECT mode = 'live' FROM {S}.fold_mode") is True


async def live_for_batch(conn: asyncpg.Connection) -> bool:
    """Inside a batch's transaction: the mode, held (FOR SHARE) until the batch commits so that a
    derive cannot run between reading it and committing facts folded by it."""
    await conn.execute(f"SET LOCAL lock_timeout = '{MODE_WAIT}'")
    try:
        mode = await conn.fetchval(f"SELECT mode FROM {S}.fold_mode FOR SHARE")
    except asyncpg.LockNotAvailableError:
        raise DeriveInProgress from None
    await conn.execute("SET LOCAL lock_timeout TO DEFAULT")
    return mode == "live"


async def apply_facts_only(conn: asyncpg.Connection, rows: store.FactRows) -> None:
    """Catch-up: combine a batch's facts with the stored ones, leaving the rollups for the derive."""
    if rows.contacts is not None:
        await conn.execute(store.CONTACTS_UPSERT, *rows.contacts)
    if rows.consultations is not None:
        await conn.execute(store.CONSULTATIONS_UPSERT, *rows.consultations)
    if rows.referrals is not None:
        await conn.execute(store.REFERRALS_UPSERT, *rows.referrals)


async def derive_and_go_live(pool: asyncpg.Pool) -> bool:
    """Derive every rollup from the facts and switch to live, in one transaction (a kill rolls both
    back: still catch-up, rollups stale). Returns False when the schema already was live."""
    async with pool.acquire() as conn, conn.transaction():
        # the mode first, then the facts: the same order as a catch-up batch, so no deadlock
        if await conn.fetchval(f"SELECT mode FROM {S}.fold_mode FOR UPDATE") == "live":
            return False
        await store.rebuild_rollups(conn)
        await conn.execute(f"UPDATE {S}.fold_mode SET mode = 'live'")
    return True


def partitions_of(consumer: Any, topics: list[str]) -> list[TopicPartition]:
    """Every partition of ``topics``; none until the consumer's metadata knows them all."""
    known = {t: consumer.partitions_for_topic(t) for t in topics}
    if not all(known.values()):
        return []
    return [TopicPartition(t, p) for t in topics for p in sorted(known[t])]


async def offsets(consumer: Any, topics: list[str], applied: dict[TopicPartition, int],
                  ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(end offsets, applied offsets) of every partition of ``topics``: applied is what this process
    applied, or the group's committed offset (other instances' partitions), or the partition's start
    when nothing was ever committed. Empty until the consumer holds an assignment."""
    tps = partitions_of(consumer, topics)
    if not tps or not consumer.assignment():
        return {}, {}
    ends = await consumer.end_offsets(tps)
    committed = await consumer._coordinator.fetch_committed_offsets(tps)
    done: dict[TopicPartition, int] = {}
    for tp in tps:
        c = committed.get(tp)
        done[tp] = max(applied.get(tp, -1), c.offset if c is not None else -1)
    never = [tp for tp, n in done.items() if n < 0]
    if never:
        done |= await consumer.beginning_offsets(never)
    return ends, done


class CatchUp:
    """Watches a catching-up consumer; once it has caught up, derives the rollups and goes live.

    The handler reports each applied batch (``applied_records``) and wakes the watcher, which checks
    the offsets after every batch and every ``CHECK_EVERY_S`` otherwise (the last batch of a backlog
    is followed by no other). The derive runs here, never in the handler: a year's derive takes
    minutes, longer than a consumer may go without polling."""

    def __init__(self, metrics: Any, subscriber: Any, topics: list[str]) -> None:
        self.metrics = metrics  # handlers.Metrics: its pool, and its ``live`` flag, set here when live
        self.subscriber = subscriber
        self.topics = topics
        self.rule = CatchUpRule()
        self.applied: dict[TopicPartition, int] = {}
        self.behind: int | None = None  # records left at the last check
        self.deriving = False
        self._wake = asyncio.Event()

    def applied_records(self, records: list[Any]) -> None:
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if r.offset + 1 > self.applied.get(tp, -1):
                self.applied[tp] = r.offset + 1
        self._wake.set()

    async def check(self) -> bool:
        """One look at the offsets; True when the rule says caught up."""
        consumer = getattr(self.subscriber, "consumer", None)
        if consumer is None:
            return False
        ends, done = await offsets(consumer, self.topics, self.applied)
        self.behind = behind(ends, done) if ends else None
        return self.rule.observe(ends, done)

    async def run(self) -> None:
        while not self.metrics.live:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CHECK_EVERY_S)
            self._wake.clear()
            try:
                if await is_live(self.metrics.pool):  # another instance derived
                    self.metrics.live = True
                elif await self.check():
                    self.deriving = True
                    log.info("metrics_caught_up", deriving="rollups")
                    await derive_and_go_live(self.metrics.pool)
                    self.metrics.live = True
                    log.info("metrics_live")
            except Exception as err:  # a broker or database away: the next round checks again
                log.warning("catch_up_check_failed", error=type(err).__name__)
                self.rule.streak = 0
            finally:
                self.deriving = False
