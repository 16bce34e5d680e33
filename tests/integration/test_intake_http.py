"""intake over real HTTP, a real broker and a real PostgreSQL."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import contact_received, envelope, field_selected, read_topic, values

pytestmark = pytest.mark.integration

SINGLE = "application/cloudevents+json"


async def post(intake, org, body, content_type="application/cloudevents-batch+json", raw: bytes | None = None):
    async with httpx.AsyncClient(base_url=intake.url, timeout=30) as client:
        return await client.post("/v1/events", headers=intake.headers(org, content_type),
                                 content=raw if raw is not None else json.dumps(body))


async def test_a_batch_is_answered_per_event_and_arrives_pseudonymised_on_the_canonical_topic(intake):
    events = [contact_received("npo-a", n, caller=f"090-5555-{n:04d}") for n in range(20)]
    events += [field_selected("npo-a", n) for n in range(20)]
    response = await post(intake, "npo-a", events)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (40, 0, 0)

    records = await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=40)
    published = values(records)
    assert sorted(e["id"] for e in published) == sorted(e["id"] for e in events)
    assert all(r.key.decode() == json.loads(r.value)["subject"] for r in records)
    assert all(dict(r.headers)["content-type"].startswith(b"application/cloudevents+json") for r in records)
    raw_text = b"".join(r.value for r in records).decode()
    assert "5555" not in raw_text and "caller_id" not in raw_text
    received = [e for e in published if e["type"].endswith("contact.received.v1")]
    assert all(len(e["data"]["caller_key"]) == 64 for e in received)


async def test_a_resent_event_is_a_duplicate_and_not_published_again(intake):
    event = contact_received("npo-a", 1)
    first = await post(intake, "npo-a", event, SINGLE)
    second = await post(intake, "npo-a", event, SINGLE)
    assert first.status_code == 202 and first.json()["results"][0]["status"] == "accepted"
    assert second.status_code == 200 and second.json()["results"][0]["status"] == "duplicate"
    records = await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=2, timeout=3)
    assert len(records) == 1


async def test_duplicates_are_recognised_across_a_restart(intake):
    event = contact_received("npo-a", 7)
    assert (await post(intake, "npo-a", event, SINGLE)).status_code == 202
    intake.process.stop()
    intake.process.start()
    again = await post(intake, "npo-a", event, SINGLE)
    assert again.status_code == 200 and again.json()["results"][0]["status"] == "duplicate"


async def test_bad_events_are_rejected_with_path_and_reason_and_good_ones_kept(intake):
    bad_time = contact_received("npo-a", 2)
    bad_time["time"] = "2022-07-07T10:00:00"
    unknown_type = contact_received("npo-a", 3)
    unknown_type["type"] = "jp.tsunagu.contact.teleported.v1"
    missing = contact_received("npo-a", 4)
    del missing["subject"]
    bad_field = field_selected("npo-a", 5, field="astrology")
    bad_digit = contact_received("npo-a", 6, region="131017")
    events = [contact_received("npo-a", 1), bad_time, unknown_type, missing, bad_field, bad_digit]
    response = await post(intake, "npo-a", events)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted"] + ["rejected"] * 5
    paths = [{p["path"] for p in r["problems"]} for r in results[1:]]
    assert "time" in paths[0]
    assert "type" in paths[1]
    assert "subject" in paths[2]
    assert "data.field" in paths[3]
    assert "data.region" in paths[4]
    assert "check digit" in json.dumps(results[5])


async def test_a_single_invalid_event_answers_422(intake):
    event = field_selected("npo-a", 1, field="astrology")
    response = await post(intake, "npo-a", event, SINGLE)
    assert response.status_code == 422
    assert response.json()["results"][0]["problems"][0]["path"] == "data.field"


async def test_malformed_json_is_400(intake):
    response = await post(intake, "npo-a", None, SINGLE, raw=b'{"specversion": "1.0",')
    assert response.status_code == 400 and response.json()["error"] == "malformed_json"


async def test_another_partners_source_is_403_and_stores_nothing(intake):
    events = [contact_received("npo-a", 1), contact_received("npo-b", 2)]
    response = await post(intake, "npo-a", events)
    assert response.status_code == 403
    assert response.json()["results"][0]["source"] == "/partners/npo-b/telephony"
    again = await post(intake, "npo-a", [contact_received("npo-a", 1)])
    assert again.json()["accepted"] == 1  # the first attempt stored nothing


async def test_no_key_or_a_wrong_key_is_401(intake):
    async with httpx.AsyncClient(base_url=intake.url) as client:
        none = await client.post("/v1/events", json=contact_received("npo-a", 1),
                                 headers={"Content-Type": SINGLE})
        wrong = await client.post("/v1/events", json=contact_received("npo-a", 1),
                                  headers={"Content-Type": SINGLE, "Authorization": "Bearer tsg_nope"})
    assert none.status_code == 401 and wrong.status_code == 401
    assert none.headers["www-authenticate"] == "Bearer"


async def test_a_secretariat_key_cannot_publish(intake):
    response = await post(intake, "secretariat", contact_received("npo-a", 1), SINGLE)
    assert response.status_code == 403


async def test_other_content_types_are_415(intake):
    response = await post(intake, "npo-a", contact_received("npo-a", 1), "application/json")
    assert response.status_code == 415


async def test_an_oversize_batch_is_413(intake):
    events = [field_selected("npo-a", n) for n in range(intake.settings.max_batch_events + 1)]
    response = await post(intake, "npo-a", events)
    assert response.status_code == 413 and response.json()["error"] == "batch_too_large"


async def test_an_oversize_body_is_413(intake):
    response = await post(intake, "npo-a", None, raw=b"[" + b" " * (intake.settings.max_body_bytes + 1) + b"]")
    assert response.status_code == 413


async def test_the_openapi_document_is_served(intake):
    async with httpx.AsyncClient(base_url=intake.url) as client:
        doc = (await client.get("/openapi.json")).json()
    operation = doc["paths"]["/v1/events"]["post"]
    assert {"401", "403", "409", "413", "415", "422"} <= set(operation["responses"])
    assert "application/cloudevents-batch+json" in operation["requestBody"]["content"]


async def test_a_consultation_record_goes_to_the_consultation_topic_keyed_by_contact(intake):
    record = envelope("npo-a", "consultation.recorded", "rec-1", "c-npo-a-1", {
        "contact_id": "c-npo-a-1", "organisation_id": "npo-a", "field": "loneliness",
        "categories": ["no_place_to_talk", "loneliness"], "age_band": "age60s", "risk": "low",
        "referral_needed": False, "municipality": "131016",
    }, system="casebook")
    # the contact it records was reported first (a consultation of an unreported contact is refused)
    assert (await post(intake, "npo-a", contact_received("npo-a", 1), SINGLE)).status_code == 202
    response = await post(intake, "npo-a", record, SINGLE)
    assert response.status_code == 202, response.text
    [published] = await read_topic(intake.bootstrap, intake.topic("consultation.events"), expect=1)
    assert published.key == b"c-npo-a-1"
    assert json.loads(published.value)["data"]["categories"] == ["no_place_to_talk", "loneliness"]


async def test_free_text_in_a_consultation_record_is_refused(intake):
    record = envelope("npo-a", "consultation.recorded", "rec-2", "c-npo-a-2", {
        "contact_id": "c-npo-a-2", "organisation_id": "npo-a", "categories": ["other"], "age_band": "unknown",
        "risk": "none", "referral_needed": False, "notes": "話した内容の記録",
    }, system="casebook")
    response = await post(intake, "npo-a", record, SINGLE)
    assert response.status_code == 422
    assert "話した内容" not in response.text


async def test_a_platform_heartbeat_is_published_to_every_partition_once(intake):
    """Routing fires a timer only when every partition has been read past it (its watermark)."""
    beat = envelope("npo-a", "platform.heartbeat", "hb-1", "npo-a-tel", {"platform_id": "npo-a-tel"})
    assert (await post(intake, "npo-a", beat, SINGLE)).status_code == 202
    assert (await post(intake, "npo-a", beat, SINGLE)).json()["results"][0]["status"] == "duplicate"
    partitions = intake.settings.partitions
    records = await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=partitions + 1, timeout=5)
    assert sorted(r.partition for r in records) == list(range(partitions))
    assert {json.loads(r.value)["id"] for r in records} == {"hb-1"}
    assert {r.key for r in records} == {b"npo-a-tel"}
