"""metrics' consumer on FastStream's in-memory broker: what it cannot count is set aside onto the
rejected topic, named by the consumer that set it aside, and never reaches the store (tests/fakes.py).
tests/integration/test_metrics_defences.py has the same on the real broker and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from services.metrics.app import SPEC
from services.metrics.handlers import SET_ASIDE_BY, Metrics, register_consumer, rejected_publisher
from services.metrics.telemetry import OpsTelemetry
from tests.fakes import FakePool, catch, fake_settings, in_memory
from tsunagu import topics

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def test_a_record_that_is_not_a_canonical_event_is_set_aside_onto_the_rejected_topic():
    settings = fake_settings(SPEC.settings)
    metrics = Metrics(settings=settings, telemetry=OpsTelemetry(), pool=FakePool(), clock=lambda: NOW)
    broker = SPEC.make_broker(settings)
    metrics.publish_aside = rejected_publisher(broker, settings)
    register_consumer(SPEC, broker, metrics)
    rejected = catch(broker, settings.topic(topics.REJECTED))
    source = settings.topic(topics.CONTACT_EVENTS)

    async with in_memory(broker) as br:
        await br.publish(b'{"specversion": "1.0"}', source, key=b"c-1")

    [record] = rejected
    body = json.loads(record.value)
    assert body["topic"] == source and body["rejected_at"].startswith("2026-01-05T09:00")
    assert record.key == b"c-1"
    assert dict(record.headers)[SET_ASIDE_BY] == b"metrics"
    assert metrics.set_aside == 1 and metrics.consumed == 0
    assert metrics.consumer.verdict().ok
