"""Consumer lag: per consumer group, topic and partition this process reads, the records not yet
consumed — the partition's end offset minus the offset the group committed (what the handler has
processed; docs/reference-host.md, quirk 3: measure from what consumers processed). Not the fetch position: a consumer
fetches a whole backlog into memory long before it has handled it. Both are asked of the broker, so a
consumer that was stopped shows its backlog at the first look after it resumes, before its next fetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

Lag = dict[tuple[str, str, int], int]  # (group, topic, partition) -> records


async def consumer_lag(brokers: Iterable[Any]) -> Lag:
    """The lag of every partition the consumers of ``brokers`` (FastStream Kafka brokers) hold."""
    lag: Lag = {}
    for broker in list(brokers):
        for sub in getattr(broker, "subscribers", []):
            consumer = getattr(sub, "consumer", None)
            group = getattr(sub, "group_id", None)
            if consumer is None or not group:
                continue
            tps = list(consumer.assignment())
            if not tps:
                continue
            try:
                ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout=2.0)
            except Exception:  # noqa: BLE001 - a rebalance or a broker away: next round
                continue
            for tp in tps:
                try:
                    done = await asyncio.wait_for(consumer.committed(tp), timeout=1.0)
                    if done is None:  # nothing committed yet: what it has fetched so far
                        done = await asyncio.wait_for(consumer.position(tp), timeout=1.0)
                except Exception:  # noqa: BLE001 - a rebalance moved it; next round
                    continue
                if tp in ends:
                    lag[(group, tp.topic, tp.partition)] = max(ends[tp] - done, 0)
    return lag
