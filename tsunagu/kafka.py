"""Broker plumbing shared by every service: the FastStream broker factory and topic creation."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from tsunagu import telemetry
from tsunagu.settings import Settings


def bootstrap_servers(settings: Settings) -> str:
    if settings.kafka_bootstrap_servers:
        return settings.kafka_bootstrap_servers
    return f"127.0.0.1:{settings.broker_port}"


def make_broker(settings: Settings, client_id: str) -> KafkaBroker:
    # logger=None: FastStream's per-message logging costs ~40 % of a hot handler (docs/reference-host.md).
    # linger (5 ms by default) batches producers, which the embedded broker needs (it slows on tiny batches).
    # Middlewares: W3C trace context and per-handler metrics (FastStream's), a span per record (ours).
    tel = telemetry.get()
    broker = KafkaBroker(
        bootstrap_servers(settings),
        client_id=client_id,
        logger=None,
        linger_ms=settings.producer_linger_ms,
        max_batch_size=65536,
        request_timeout_ms=15_000,
        middlewares=tel.broker_middlewares(),
    )
    tel.brokers.add(broker)  # its consumers' lag becomes tsunagu_consumer_lag
    return broker


async def create_topics(bootstrap: str, names: list[str], partitions: int, replication: int = 1,
                        attempts: int = 50) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    for attempt in range(attempts):
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if attempt == attempts - 1:
                await admin.close()
                raise
            await asyncio.sleep(0.2)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(n, partitions, replication) for n in missing])
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        await admin.close()


def make_producer(settings: Settings, client_id: str, *, linger_ms: int | None = None) -> AIOKafkaProducer:
    """A bare producer for hot paths that publish already-encoded records (e.g. an outbox):
    FastStream's per-message publish machinery costs more than the send itself there. ``linger_ms``:
    instead of the settings' ``producer_linger_ms``."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings),
        client_id=client_id,
        linger_ms=settings.producer_linger_ms if linger_ms is None else linger_ms,
        max_batch_size=65536,
        request_timeout_ms=15_000,
        acks="all",
    )


async def assign_all_partitions(consumer: AIOKafkaConsumer, topics: list[str], tries: int = 50) -> list[TopicPartition]:
    """Assign a started, group-less ``consumer`` every partition of ``topics`` — waiting for their
    metadata, which a consumer may not have yet for a topic created a moment ago."""
    tps: list[TopicPartition] = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        for _ in range(tries):
            if parts:
                break
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        tps += [TopicPartition(topic, p) for p in sorted(parts or [])]
    consumer.assign(tps)
    return tps
