"""metrics' catch-up (rebuild) mode: replay a backlog into facts only, then derive the rollups once.

A live batch upserts the facts and moves the rollups and histograms by each changed contact's
old/new difference (store.rollups) — most of a batch's PostgreSQL time. Replaying a year into an empty
schema that way moves the same day rows millions of times. In catch-up (migration 005:
``fold_mode``), a batch only claims its events in the inbox and upserts the facts; once the group has
applied everything the topics hold, one transaction derives every rollup from the facts
(store.rebuild) and sets the mode to live. Figures are the same either way: the rollups are a function
of the facts, which are order-independent.

This module is the watcher that drives it: the rule that says caught up (domain.catch_up), the offsets
it reads (kafka_offsets) and the mode it switches (store.fold_mode) each live in their own room.
Caught up is decided from offsets, never from time: every partition of the consumed topics, the
group's applied offset against the broker's end offset, on consecutive checks.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aiokafka import TopicPartition

from services.metrics.domain.catch_up import CatchUpRule, behind
from services.metrics.kafka_offsets import offsets
from services.metrics.store.fold_mode import derive_and_go_live, is_live

log = structlog.get_logger()

CHECK_EVERY_S = 0.5  # how often the watcher looks at the offsets when no batch woke it
RETRY_AFTER_S = 30
REBUILDING = ("rebuilding: metrics is replaying the topics into its facts and will derive its figures once it "
              "has caught up; partial figures are not served — retry later")


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
