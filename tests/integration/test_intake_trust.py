"""intake's trust boundary over real HTTP, a real broker and a real PostgreSQL: a partner's valid
but wrong events are refused one by one, with the reason, and never reach a topic."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.referral_support import publish
from tests.support import T0, contact_received, envelope, field_selected, read_topic, until, values

pytestmark = pytest.mark.integration

SINGLE = "application/cloudevents+json"


async def post(intake, key, body, content_type="application/cloudevents-batch+json"):
    async with httpx.AsyncClient(base_url=intake.url, timeout=30) as client:
        return await client.post("/v1/events", headers=intake.headers(key, content_type), content=json.dumps(body))


def answered(org, cid, desk_org, *, n=1, at=T0 + timedelta(seconds=40)):
    return envelope(org, "contact.answered", f"ev-{org}-{cid}-answered-{n}", cid,
                    {"contact_id": cid, "desk_id": "desk-1", "organisation_id": desk_org, "wait_seconds": 3.0}, at=at)


def ended(org, cid, *, at=T0 + timedelta(minutes=5)):
    return envelope(org, "contact.ended", f"ev-{org}-{cid}-ended", cid, {"contact_id": cid, "talk_seconds": 60.0},
                    at=at, system="cases")


def requested(org, referral_id, cid, urgency="standard", n=1):
    return envelope(org, "referral.requested", f"ev-{org}-{referral_id}-{n}", cid, {
        "referral_id": referral_id, "contact_id": cid, "organisation_id": org, "need": "municipality",
        "urgency": urgency, "municipality": "131016",
        "legal_basis": {"kind": "support_meeting", "reference": "meeting-42"}}, system="cases")


async def test_times_far_ahead_or_before_any_event_are_refused_per_event_and_the_rest_is_stored(intake):
    future = contact_received("npo-a", 1)
    future["time"] = "2100-01-01T00:00:00+00:00"
    year_one = contact_received("npo-a", 2)
    year_one["time"] = "0001-01-01T00:00:00+09:00"
    good = contact_received("npo-a", 3)
    body = (await post(intake, "npo-a", [future, year_one, good])).json()
    assert [r["status"] for r in body["results"]] == ["rejected", "rejected", "accepted"]
    assert all(r["problems"][0]["path"] == "time" for r in body["results"][:2])
    published = values(await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=1, timeout=3))
    assert [e["id"] for e in published] == [good["id"]]


async def test_a_past_period_needs_a_backfill_key_and_live_events_need_none(intake):
    now = datetime.now(UTC).replace(microsecond=0)
    live = contact_received("npo-a", 1, at=now)
    past = contact_received("npo-a", 2)  # the trial's week
    body = (await post(intake, "npo-a-live", [live, past])).json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert "back-fill" in body["results"][1]["problems"][0]["message"]
    assert (await post(intake, "npo-a", past, SINGLE)).status_code == 202


async def test_another_organisation_cannot_answer_end_or_claim_a_contact_it_does_not_own(intake):
    mine = contact_received("npo-a", 1)
    cid = mine["data"]["contact_id"]
    assert (await post(intake, "npo-a", mine, SINGLE)).status_code == 202
    # npo-b, with no part in the contact, answers it (naming itself), ends it, and reports the same id
    hijack = [answered("npo-b", cid, "npo-b"), ended("npo-b", cid),
              contact_received("npo-a", 1) | {"source": "/partners/npo-b/telephony", "id": "ev-b-dup"}]
    body = (await post(intake, "npo-b", hijack)).json()
    assert [r["status"] for r in body["results"]] == ["rejected", "rejected", "conflict"]
    assert {r["problems"][0]["path"] for r in body["results"]} == {"data.contact_id"}
    # naming another organisation in data is refused whoever owns the contact
    foreign = answered("npo-a", cid, "npo-b")
    [r] = (await post(intake, "npo-a", [foreign])).json()["results"]
    assert r["status"] == "rejected" and r["problems"][0]["path"] == "data.organisation_id"
    published = values(await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=1, timeout=3))
    assert [e["id"] for e in published] == [mine["id"]]


async def test_the_owner_platform_names_who_answered_and_that_organisation_may_then_report_the_contact(intake):
    received = contact_received("tel", 1)
    cid = received["data"]["contact_id"]
    early = ended("npo-b", cid)
    assert (await post(intake, "tel", [received, field_selected("tel", 1)])).json()["accepted"] == 2
    assert (await post(intake, "npo-b", early, SINGLE)).status_code == 422  # not named yet
    assert (await post(intake, "tel", answered("tel", cid, "npo-b"), SINGLE)).status_code == 202
    assert (await post(intake, "npo-b", early, SINGLE)).status_code == 202
    assert (await post(intake, "npo-a", ended("npo-a", cid), SINGLE)).status_code == 422


def decision(kind: str, cid: str, n: int, data: dict) -> dict:
    """A decision as routing publishes it on its topic."""
    return {"specversion": "1.0", "id": f"routing-{cid}-{n}", "source": "/tsunagu/routing",
            "type": f"jp.tsunagu.routing.{kind}.v1", "time": (T0 + timedelta(seconds=n)).isoformat(),
            "subject": cid, "data": {"contact_id": cid, **data}}


async def test_the_organisation_routing_assigned_the_contact_to_may_report_it_and_no_other(intake):
    received = contact_received("tel", 2)
    cid = received["data"]["contact_id"]
    assert (await post(intake, "tel", [received, field_selected("tel", 2)])).json()["accepted"] == 2
    report = answered("npo-b", cid, "npo-b")
    refused = await post(intake, "npo-b", report, SINGLE)
    assert refused.status_code == 422 and "routing" in refused.json()["results"][0]["problems"][0]["message"]
    # on routing's topic: a record that is no event, a decision that assigns nobody, then the assignment
    await publish(intake.bootstrap, intake.topic("routing.decisions"), [
        b"not an event",
        decision("queued", cid, 1, {"field": "loneliness", "queue_position": 1, "priority": 0}),
        decision("assigned", cid, 2, {"desk_id": "desk-b-1", "organisation_id": "npo-b", "field": "loneliness",
                                      "reason": "line_freed"}),
    ])

    async def accepted() -> bool:
        return (await post(intake, "npo-b", report, SINGLE)).status_code == 202

    await until(accepted, 30, "npo-b's answer accepted after routing assigned it the contact")
    # the assignment names npo-b only: npo-a still may not report the contact
    assert (await post(intake, "npo-a", ended("npo-a", cid), SINGLE)).status_code == 422
    async with httpx.AsyncClient(base_url=intake.url, timeout=30) as client:
        assert (await client.get("/health/ready")).status_code == 200  # the poison record did not stop it


async def test_a_referral_id_another_organisation_used_first_is_a_conflict_never_a_silent_drop(intake):
    a, b = contact_received("npo-a", 1), contact_received("npo-b", 1)
    assert (await post(intake, "npo-a", [a])).json()["accepted"] == 1
    assert (await post(intake, "npo-b", [b])).json()["accepted"] == 1
    first = requested("npo-a", "ref-shared", a["data"]["contact_id"])
    assert (await post(intake, "npo-a", first, SINGLE)).status_code == 202
    second = requested("npo-b", "ref-shared", b["data"]["contact_id"], urgency="imminent")
    answer = await post(intake, "npo-b", second, SINGLE)
    assert answer.status_code == 409
    assert answer.json()["results"][0]["problems"][0]["path"] == "data.referral_id"
    again = requested("npo-a", "ref-shared", a["data"]["contact_id"], urgency="urgent", n=2)
    changed = (await post(intake, "npo-a", again, SINGLE)).json()["results"][0]
    assert changed["status"] == "conflict" and "data.urgency" in changed["problems"][0]["message"]
    published = values(await read_topic(intake.bootstrap, intake.topic("consultation.events"), expect=1, timeout=3))
    assert [e["id"] for e in published] == [first["id"]]


async def test_the_same_source_and_id_with_other_content_is_a_conflict_naming_what_differs(intake):
    event = contact_received("npo-a", 1, region="13")
    assert (await post(intake, "npo-a", event, SINGLE)).status_code == 202
    assert (await post(intake, "npo-a", event, SINGLE)).status_code == 200  # the same: a duplicate
    other = contact_received("npo-a", 1, region="27")
    answer = await post(intake, "npo-a", other, SINGLE)
    assert answer.status_code == 409
    [r] = answer.json()["results"]
    assert r["status"] == "conflict" and "data.prefecture" in r["problems"][0]["message"]


async def test_nul_ids_and_envelope_phone_numbers_are_refused_per_event_and_never_published(intake):
    nul = contact_received("npo-a", 1) | {"id": "ev\u0000x"}
    phone_id = contact_received("npo-a", 2) | {"id": "ev-090-1234-5678"}
    phone_state = contact_received("npo-a", 3) | {"tracestate": "vendor=09012345678"}
    phone_schema = contact_received("npo-a", 4) | {"dataschema": "https://example.org/0312345678"}
    good = contact_received("npo-a", 5)
    answer = await post(intake, "npo-a", [nul, phone_id, phone_state, phone_schema, good])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["status"] for r in body["results"]] == ["rejected"] * 4 + ["accepted"]
    assert "1234" not in answer.text and "0312345678" not in answer.text
    records = await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=1, timeout=3)
    assert [e["id"] for e in values(records)] == [good["id"]]
    assert b"1234-5678" not in b"".join(r.value for r in records)


def triaged(org, cid, risk="high", *, n=1):
    return envelope(org, "contact.triaged", f"ev-{org}-{cid}-triaged-{n}", cid,
                    {"contact_id": cid, "risk": risk, "instrument": "k6"}, at=T0 + timedelta(seconds=20), system="chat")


def transferred(org, cid, *, n=1):
    return envelope(org, "contact.transferred", f"ev-{org}-{cid}-transferred-{n}", cid,
                    {"contact_id": cid, "from_desk_id": "desk-b-chat", "to_field": "suicidal", "to_channel": "phone"},
                    at=T0 + timedelta(minutes=3), system="chat")


async def test_only_the_owner_triages_and_only_a_desk_routing_gave_the_contact_to_transfers_it(intake):
    received = contact_received("tel", 3, channel="chat", caller="acct-3")
    cid = received["data"]["contact_id"]
    early = await post(intake, "tel", triaged("tel", "c-never-reported"), SINGLE)
    assert early.status_code == 422
    assert "no contact with this id" in early.json()["results"][0]["problems"][0]["message"]
    assert (await post(intake, "tel", [received, triaged("tel", cid)])).json()["accepted"] == 2
    assert (await post(intake, "npo-b", transferred("npo-b", cid), SINGLE)).status_code == 422  # not its contact yet
    await publish(intake.bootstrap, intake.topic("routing.decisions"), [
        decision("assigned", cid, 30, {"desk_id": "desk-b-chat", "organisation_id": "npo-b", "field": "loneliness",
                                       "reason": "free_line", "channel": "chat", "seat": 1, "seat_capacity": 3}),
    ])

    async def transfer_accepted() -> bool:
        return (await post(intake, "npo-b", transferred("npo-b", cid), SINGLE)).status_code == 202

    await until(transfer_accepted, 30, "npo-b's transfer accepted after routing assigned it the contact")
    # the desk's organisation hands the contact on, but the screening is the owner platform's alone
    for refused in [await post(intake, "npo-b", triaged("npo-b", cid, "low"), SINGLE),
                    await post(intake, "npo-a", transferred("npo-a", cid), SINGLE),
                    await post(intake, "npo-a", triaged("npo-a", cid), SINGLE)]:
        assert refused.status_code == 422
        assert refused.json()["results"][0]["problems"][0]["path"] == "data.contact_id"
    published = values(await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=3, timeout=3))
    assert [e["type"] for e in published] == ["jp.tsunagu.contact.received.v1", "jp.tsunagu.contact.triaged.v1",
                                              "jp.tsunagu.contact.transferred.v1"]
    assert published[2]["source"] == "/partners/npo-b/chat"
