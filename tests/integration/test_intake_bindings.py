"""A partner's engineer with the official CloudEvents SDK: every binding intake speaks, for real.

The requests and records are the SDK's own (``cloudevents.v1.conversion`` / ``cloudevents.v1.kafka`` and
the newer ``cloudevents.core.bindings``), sent over real HTTP to the intake process and to the real
broker with aiokafka and with librdkafka (``confluent_kafka``); what intake published is read back from
the canonical and the rejected topics.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings import http as core_http
from cloudevents.core.bindings import kafka as core_kafka
from cloudevents.core.v1.event import CloudEvent as CoreEvent
from cloudevents.v1 import conversion
from cloudevents.v1 import kafka as sdk_kafka
from cloudevents.v1.http import CloudEvent
from confluent_kafka import Producer

from tests.support import contact_received, field_selected, read_topic, values

pytestmark = pytest.mark.integration

BATCH = "application/cloudevents-batch+json; charset=utf-8"


def sdk_event(raw: dict, **extensions: str) -> CloudEvent:
    """An event as a partner builds it with the SDK: the attributes (extensions too), then the data."""
    return CloudEvent({k: v for k, v in raw.items() if k != "data"} | extensions, raw["data"])


def core_event(raw: dict, **extensions: str) -> CoreEvent:
    attributes = {k: v for k, v in raw.items() if k != "data"} | extensions
    attributes["time"] = datetime.fromisoformat(attributes["time"])
    return CoreEvent(attributes, raw["data"])


async def send(intake, org: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    """POST as the SDK framed it, with the partner's key."""
    async with httpx.AsyncClient(base_url=intake.url, timeout=30) as client:
        return await client.post("/v1/events", headers=headers | {"Authorization": f"Bearer {intake.keys[org]}"},
                                 content=body)


async def published(intake, expect: int) -> dict[str, dict]:
    """The canonical contact events by id, once ``expect`` arrived."""
    return {e["id"]: e for e in values(await read_topic(intake.bootstrap, intake.topic("contact.events"),
                                                        expect=expect))}


async def test_the_sdks_structured_binary_and_batch_requests_are_all_accepted(intake):
    structured, binary, percent, *batch = [contact_received("npo-a", n, caller=f"080-6666-{n:04d}")
                                           for n in range(5)]
    headers, body = conversion.to_structured(sdk_event(structured))
    headers["content-type"] = "application/cloudevents+json; charset=utf-8"
    answers = [await send(intake, "npo-a", headers, body)]
    # binary mode, the HTTP binding's default: attributes in ce-* headers, the data as the body
    headers, body = conversion.to_binary(sdk_event(binary, datacontenttype="application/json; charset=utf-8"))
    answers.append(await send(intake, "npo-a", headers, body))
    # the core API percent-encodes header values as the binding says (3.1.3.2)
    message = core_http.to_binary_event(core_event(percent, datacontenttype="application/json", note="Euro \u20ac"))
    assert message.headers["ce-note"] == "Euro%20%E2%82%AC"
    answers.append(await send(intake, "npo-a", message.headers, message.body))
    # a batch: the SDK's events in the JSON batch format
    batch_body = "[" + ",".join(conversion.to_json(sdk_event(e)).decode() for e in batch) + "]"
    answers.append(await send(intake, "npo-a", {"content-type": BATCH}, batch_body.encode()))

    assert [a.status_code for a in answers] == [202, 202, 202, 200], [a.text for a in answers]
    assert answers[3].json()["accepted"] == 2
    assert answers[2].json()["results"][0]["ignored"] == ["note"]
    events = await published(intake, expect=5)
    assert sorted(events) == sorted(e["id"] for e in (structured, binary, percent, *batch))
    assert all(e.get("datacontenttype", "application/json") == "application/json" for e in events.values())
    assert events[binary["id"]]["data"]["contact_id"] == binary["data"]["contact_id"]
    assert all("caller_id" not in e["data"] and "note" not in e for e in events.values())


async def test_an_unknown_extension_is_named_as_ignored_and_never_reaches_the_canonical_topic(intake):
    single = contact_received("npo-a", 1) | {"myext": "080-1234-0000 was here", "partitionkey": "c-npo-a-1"}
    batch = [contact_received("npo-a", 2) | {"crmref": "x1", "myext": "y"}, field_selected("npo-a", 2)]
    headers, body = conversion.to_structured(sdk_event(single))
    one = await send(intake, "npo-a", headers, body)
    many = await send(intake, "npo-a", {"content-type": BATCH}, json.dumps(batch).encode())

    assert one.status_code == 202 and one.json()["results"][0]["ignored"] == ["myext"]
    assert [r["ignored"] for r in many.json()["results"]] == [["crmref", "myext"], []]
    records = await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=3)
    assert len(records) == 3
    everything = b"".join(r.value for r in records).decode()
    assert "myext" not in everything and "crmref" not in everything and "1234-0000" not in everything


async def test_a_name_that_is_no_cloudevents_attribute_name_is_still_rejected(intake):
    batch = [contact_received("npo-a", 1) | {"myExt": "x"}, contact_received("npo-a", 2) | {"a" * 21: "x"}]
    response = await send(intake, "npo-a", {"content-type": BATCH}, json.dumps(batch).encode())
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "rejected"]
    assert results[0]["problems"][0]["path"] == "myExt"
    assert all("attribute name" in r["problems"][0]["message"] for r in results)


async def test_an_empty_batch_is_answered_with_no_results(intake):
    response = await send(intake, "npo-a", {"content-type": BATCH}, b"[]")
    assert response.status_code == 200
    assert response.json() == {"accepted": 0, "duplicate": 0, "rejected": 0, "conflict": 0, "results": []}


async def test_a_binary_event_whose_data_is_not_json_is_refused_with_the_reason(intake):
    raw = contact_received("npo-a", 1)
    headers, _ = conversion.to_binary(sdk_event(raw, datacontenttype="text/plain"))
    response = await send(intake, "npo-a", headers, b"caller 080-7777-0001")
    assert response.status_code == 422
    [result] = response.json()["results"]
    assert result["id"] == raw["id"] and [p["path"] for p in result["problems"]] == ["datacontenttype"]
    assert "JSON" in result["problems"][0]["message"] and "7777" not in response.text
    records = await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=1, timeout=3)
    assert records == []


async def test_a_request_in_no_content_mode_is_415_naming_the_three(intake):
    response = await send(intake, "npo-a", {"content-type": "application/json"},
                          json.dumps(contact_received("npo-a", 1)).encode())
    assert response.status_code == 415
    message = response.json()["message"]
    assert all(mode in message for mode in ("structured", "batch", "binary"))


# --- the Kafka door -------------------------------------------------------------------------------


def kafka_records(n0: int) -> dict[str, sdk_kafka.KafkaMessage | core_kafka.KafkaMessage]:
    """A binary and a structured record of the SDK, and a binary one of its core API (which keeps
    ``partitionkey`` in a ``ce_partitionkey`` header too); each event with an extension intake ignores."""
    binary = contact_received("npo-a", n0, caller="080-5555-0001")
    structured = contact_received("npo-a", n0 + 1, caller="080-5555-0002")
    core = contact_received("npo-a", n0 + 2, caller="080-5555-0003")
    return {
        core["id"]: core_kafka.to_binary_event(core_event(core, datacontenttype="application/json",
                                                          partitionkey=core["subject"], crmref="kafka-ext")),
        binary["id"]: sdk_kafka.to_binary(sdk_event(binary, datacontenttype="application/json; charset=utf-8",
                                                    partitionkey=binary["subject"], crmref="kafka-ext")),
        structured["id"]: sdk_kafka.to_structured(sdk_event(structured, partitionkey=structured["subject"],
                                                            crmref="kafka-ext")),
    }


def as_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


async def produce_aiokafka(bootstrap: str, topic: str, messages: list) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for m in messages:
            await producer.send_and_wait(topic, as_bytes(m.value), key=as_bytes(m.key),
                                         headers=list(m.headers.items()))
    finally:
        await producer.stop()


def produce_librdkafka(bootstrap: str, topic: str, messages: list) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for m in messages:
        producer.produce(topic, value=as_bytes(m.value), key=as_bytes(m.key), headers=list(m.headers.items()))
    assert producer.flush(30) == 0, "librdkafka did not deliver every record"


async def test_the_kafka_door_reads_the_sdks_binary_and_structured_records_from_aiokafka_and_librdkafka(intake):
    by_aiokafka, by_librdkafka = kafka_records(10), kafka_records(20)
    topic = intake.topic("intake.ingress")
    await produce_aiokafka(intake.bootstrap, topic, list(by_aiokafka.values()))
    await asyncio.to_thread(produce_librdkafka, intake.bootstrap, topic, list(by_librdkafka.values()))

    events = await published(intake, expect=6)
    assert sorted(events) == sorted([*by_aiokafka, *by_librdkafka])
    assert all("crmref" not in e and "partitionkey" in e for e in events.values())
    assert all(len(e["data"]["caller_key"]) == 64 and "caller_id" not in e["data"] for e in events.values())
    assert await read_topic(intake.bootstrap, intake.topic("intake.rejected"), expect=1, timeout=3) == []


async def test_a_bad_binary_record_goes_to_the_rejected_topic_with_its_reason(intake):
    event = contact_received("npo-a", 30, caller="080-4444-0001")
    not_json = sdk_kafka.to_binary(sdk_event(event, datacontenttype="text/plain"),
                                   data_marshaller=lambda data: "caller 080-4444-0001")
    other_format = sdk_kafka.KafkaMessage({"content-type": b"application/cloudevents+avro"}, None, b"\x00\x01")
    good = kafka_records(31)
    topic = intake.topic("intake.ingress")
    await asyncio.to_thread(produce_librdkafka, intake.bootstrap, topic, [not_json, other_format])
    await produce_aiokafka(intake.bootstrap, topic, list(good.values()))  # the consumer goes on

    events = await published(intake, expect=3)
    assert sorted(events) == sorted(good)
    rejected = await read_topic(intake.bootstrap, intake.topic("intake.rejected"), expect=2)
    reasons = {r["id"]: r["problems"] for r in values(rejected)}
    assert [p["path"] for p in reasons[event["id"]]] == ["datacontenttype"]
    assert "event format" in reasons[None][0]["message"]
    assert b"4444" not in b"".join(r.value for r in rejected)
