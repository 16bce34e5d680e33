"""A referral_id claimed twice: the second, different request is refused onto the rejected topic
(reason ``conflict``, the differing fields' names), logged by ids and counted — never dropped
silently — and the first referral stays as it was. The same request again stays a silent duplicate.
Through the real referral process, broker and PostgreSQL."""

from __future__ import annotations

import json

import httpx
import pytest

from schemas.rejected import RejectedRecord
from tests.integration.referral_support import publish, referral, requested, wait_for  # noqa: F401
from tests.support import T0, read_topic, values

pytestmark = pytest.mark.integration

POLICE_CONTACT = "c-npo-b-police-7"


def police_request(referral_id: str, event_id: str) -> dict:
    """Another partner's imminent-risk request that happens to reuse ``referral_id``."""
    data = {"referral_id": referral_id, "contact_id": POLICE_CONTACT, "organisation_id": "npo-b",
            "municipality": "131016", "urgency": "imminent", "need": "police",
            "legal_basis": {"kind": "vital_interest"}}
    return {"specversion": "1.0", "id": event_id, "source": "/partners/npo-b/cases",
            "type": "jp.tsunagu.referral.requested.v1", "time": T0.isoformat(), "subject": POLICE_CONTACT,
            "data": data}



async def rejected_records(referral, expect: int) -> list[dict]:  # noqa: F811
    return values(await read_topic(referral.bootstrap, referral.topic("intake.rejected"), expect=expect,
                                   timeout=30 if expect else 3))


async def test_a_second_different_request_under_a_taken_referral_id_is_rejected_as_a_conflict(referral):  # noqa: F811
    topic = referral.topic("consultation.events")
    first = requested("ref-clash-1")
    await publish(referral.bootstrap, topic, [first])
    secretariat = referral.client("secretariat")
    async with secretariat:
        before = (await wait_for(secretariat, "/v1/referrals/ref-clash-1", lambda r: r.status_code == 200)).json()

        resent = {**first, "id": "ev-ref-clash-1-requested-again"}  # the same request, sent once more
        await publish(referral.bootstrap, topic, [
            first,                                              # re-delivered (at-least-once)
            resent,                                             # re-sent under a new event id
            police_request("ref-clash-1", "ev-npo-b-police-7"),  # another partner, another case
        ])
        [record] = await rejected_records(referral, expect=1)
        after = (await secretariat.get("/v1/referrals/ref-clash-1")).json()

    RejectedRecord.model_validate(record)
    assert (record["id"], record["source"], record["type"]) == (
        "ev-npo-b-police-7", "/partners/npo-b/cases", "jp.tsunagu.referral.requested.v1")
    assert record["topic"] == topic and record["offset"] is not None
    differing = {"contact_id", "organisation_id", "urgency", "need", "legal_basis"}  # not municipality
    head, *fields = record["problems"]
    assert head["path"] == "data.referral_id" and head["message"].startswith("conflict:")
    assert {p["path"] for p in fields} == {f"data.{f}" for f in differing}
    assert all(p["message"].startswith("conflict:") for p in fields)
    assert POLICE_CONTACT not in json.dumps(record)  # names and ids of fields, never their values

    # the first referral is unchanged: same contact, requester, urgency, receiver, version
    assert after == before
    assert (after["contact_id"], after["requested_by"], after["urgency"], after["version"]) == (
        "c-ref-clash-1", "npo-a", "standard", 1)
    events = [e for e in values(await read_topic(referral.bootstrap, referral.topic("referral.events"), expect=1))
              if e["subject"] == "ref-clash-1"]
    assert [e["type"] for e in events] == ["jp.tsunagu.referral.created.v1"]

    # logged by ids and field names only, and counted with a bounded label
    log = referral.processes[0].log_path.read_text()
    [line] = [json.loads(x) for x in log.splitlines() if "referral_request_conflict" in x]
    assert line["level"] == "warning" and line["referral_id"] == "ref-clash-1" and line["id"] == "ev-npo-b-police-7"
    assert set(line["fields"]) == differing and line["held_by"] == "npo-a"
    assert POLICE_CONTACT not in json.dumps(line)
    async with httpx.AsyncClient(base_url=referral.url, timeout=10) as ops:
        scrape = (await ops.get("/metrics")).text
    counted = [line for line in scrape.splitlines()
               if line.startswith("tsunagu_referral_requests_rejected_total{") and 'reason="conflict"' in line]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) == 1.0, scrape[:3000]


async def test_an_identical_redelivery_is_a_silent_duplicate(referral):  # noqa: F811
    topic = referral.topic("consultation.events")
    consent = {"kind": "consent", "consent": {"given": True, "scope": ["self_reliance_centre"],
                                              "recorded_by": "staff-1", "recorded_at": "2022-07-07T10:00:00+09:00"}}
    first = requested("ref-same-1", need="self_reliance_centre", urgency="urgent", basis=consent)
    await publish(referral.bootstrap, topic, [first])
    secretariat = referral.client("secretariat")
    async with secretariat:
        await wait_for(secretariat, "/v1/referrals/ref-same-1", lambda r: r.status_code == 200)
        # the same request under new event ids, its time and the consent's time in another offset
        again = json.loads(json.dumps(first))
        again["id"] = "ev-ref-same-1-again"
        again["time"] = again["data"]["legal_basis"]["consent"]["recorded_at"] = "2022-07-07T01:00:00+00:00"
        later = requested("ref-same-2")  # a marker: once it is open, the re-sends were consumed
        await publish(referral.bootstrap, topic, [first, again, later])
        await wait_for(secretariat, "/v1/referrals/ref-same-2", lambda r: r.status_code == 200)
        detail = (await secretariat.get("/v1/referrals/ref-same-1")).json()
    assert detail["version"] == 1 and [h["type"] for h in detail["history"]] == ["referral.created"]
    assert await rejected_records(referral, expect=0) == []
    assert "referral_request_conflict" not in referral.processes[0].log_path.read_text()
