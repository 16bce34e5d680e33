"""The outbox publisher: drains accepted events from PostgreSQL onto their topics.

An event leaves the outbox only after the broker acknowledged it. A crash between the ack
and the delete publishes it again on restart — with the same CloudEvents id, which every
consumer de-duplicates — so nothing accepted is lost and nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

from schemas.kafka import kafka_headers
from services.intake import store
from tsunagu.settings import Settings

log = structlog.get_logger()


class OutboxPublisher:
    def __init__(self, pool: asyncpg.Pool, broker: KafkaBroker, settings: Settings) -> None:
        self._pool = pool
        self._broker = broker
        self._settings = settings
        self._headers = {k: v.decode() for k, v in kafka_headers()}
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.healthy = True

    def wake(self) -> None:
        """Something was just stored: publish now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="intake-outbox")

    async def stop(self) -> None:
        """Publish what is left (best effort), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=15)

    async def drain_once(self) -> int:
        """Publish one round of pending events; returns how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(store.claim_sql(self._settings.outbox_batch))
            if not rows:
                return 0
            futures = [
                await self._broker.publish(
                    r["value"],
                    self._settings.topic(r["topic"]),
                    key=r["key"].encode(),
                    headers=self._headers,
                    no_confirm=True,
                )
                for r in rows
            ]
            await asyncio.gather(*futures)
            await conn.execute(store.DELETE_SQL, [r["seq"] for r in rows])
        self.published += len(rows)
        return len(rows)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                n = await self.drain_once()
                self.healthy = True
                backoff = 0.1
            except Exception as err:  # broker or database away: keep the events, retry
                self.healthy = False
                log.warning("outbox_publish_failed", error=type(err).__name__, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._stopping and n == 0:
                return
            if n < self._settings.outbox_batch:
                self._wake.clear()
                # Poll too: other instances' leftovers and events stored before a restart.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=0.2)
