"""The Kafka door: partners with broker access publish to the ingress topic."""

from __future__ import annotations

import json

import pytest
from aiokafka import AIOKafkaProducer

from tests.support import contact_received, envelope, field_selected, read_topic, values

pytestmark = pytest.mark.integration


async def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for p in payloads:
            await producer.send_and_wait(topic, p, key=b"k")
    finally:
        await producer.stop()


async def test_poison_and_invalid_records_go_to_rejected_with_reasons_and_the_consumer_keeps_going(intake):
    good = [contact_received("npo-a", n, caller="080-7777-0001") for n in range(3)]
    invalid = field_selected("npo-a", 9, field="astrology")
    unregistered = contact_received("npo-x", 1, caller="080-7777-0002")
    routing = envelope("npo-a", "routing.queued", "r-8", "c-8",
                       {"contact_id": "c-8", "field": "loneliness", "queue_position": 1, "priority": 0})
    payloads = [json.dumps(good[0]).encode(), b"\x00\xffnot json at all 080-7777-0003",
                json.dumps(invalid).encode(), json.dumps(unregistered).encode(), json.dumps(routing).encode(),
                json.dumps(good[1]).encode()]
    await produce(intake.bootstrap, intake.topic("intake.ingress"), payloads)
    # after the poison record, later records still flow
    await produce(intake.bootstrap, intake.topic("intake.ingress"), [json.dumps(good[2]).encode()])

    accepted = values(await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=3))
    assert sorted(e["id"] for e in accepted) == sorted(e["id"] for e in good)

    rejected_records = await read_topic(intake.bootstrap, intake.topic("intake.rejected"), expect=4)
    rejected = values(rejected_records)
    assert len(rejected) == 4
    by_offset = {r["offset"]: r for r in rejected}
    assert by_offset[1]["problems"][0]["message"].startswith("malformed JSON")
    assert by_offset[2]["problems"][0]["path"] == "data.field"
    assert "npo-x" in by_offset[3]["problems"][0]["message"]
    assert by_offset[4]["problems"][0]["path"] == "type"
    assert all(r["payload_bytes"] > 0 and len(r["payload_sha256"]) == 64 for r in rejected)
    everything = b"".join(r.value for r in rejected_records).decode()
    assert "7777" not in everything, "a rejected record must not carry the payload"


async def test_ingress_redelivery_is_deduplicated(intake):
    event = json.dumps(contact_received("npo-a", 42)).encode()
    await produce(intake.bootstrap, intake.topic("intake.ingress"), [event, event, event])
    records = await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=3, timeout=5)
    assert len(records) == 1
