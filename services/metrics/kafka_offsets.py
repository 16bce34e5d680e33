"""Where the consumer group stands on the topics, read from Kafka: every partition's end offset and
the offset the group has applied up to."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition


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
