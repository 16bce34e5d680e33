"""A consultation becomes a referral that its receiver acknowledges, accepts and completes — through
the real broker and HTTP — and nobody else can see it."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from schemas import validate_event
from tests.integration.referral_support import consultation, publish, referral, requested, wait_for  # noqa: F401
from tests.support import T0, read_topic, values

pytestmark = pytest.mark.integration


async def referral_events(referral, expect: int) -> list[dict]:  # noqa: F811
    return values(await read_topic(referral.bootstrap, referral.topic("referral.events"), expect=expect))



async def test_consultation_to_referral_to_acknowledge_accept_complete(referral):  # noqa: F811
    everyone = ["municipality", "self_reliance_centre", "police"]
    await publish(referral.bootstrap, referral.topic("consultation.events"), [
        b"{not an event",                                                     # set aside, never stops it
        consultation(1, consent=everyone),                                    # → Chiyoda's office
        consultation(2, consent=None),                                        # no legal basis → rejected
        consultation(3, referral_needed=False, consent=everyone),             # nothing to do
        consultation(4, consent=everyone, municipality="011002"),             # → Sapporo's office
        consultation(1, consent=everyone),                                    # delivered twice: still one
        requested("ref-req-1", need="self_reliance_centre"),                  # → Chiyoda's centre
        requested("ref-req-2", basis={"kind": "vital_interest"}),             # vital interest, not imminent
    ])
    office, other, secretariat = referral.client("muni-131016"), referral.client("srsc-131016"), \
        referral.client("secretariat")
    async with office, other, secretariat:
        listed = await wait_for(office, "/v1/referrals?status=requested",
                                lambda r: r.status_code == 200 and r.json()["referrals"])
        [mine] = listed.json()["referrals"]
        rid = mine["referral_id"]
        assert mine["contact_id"] == "c-npo-a-1" and mine["receiver"]["id"] == "muni-131016"
        assert mine["deadline"] is not None and mine["legal_basis"]["kind"] == "consent"
        assert mine["allowed_actions"] == ["acknowledge"]

        # one receiver can never read another's referrals
        assert (await other.get(f"/v1/referrals/{rid}")).status_code == 404
        assert [r["referral_id"] for r in (await other.get("/v1/referrals")).json()["referrals"]] == ["ref-req-1"]
        assert (await other.post(f"/v1/referrals/{rid}/acknowledge")).status_code == 404

        centre = (await other.get("/v1/referrals/ref-req-1")).json()
        assert centre["receiver"]["id"] == "srsc-131016" and centre["legal_basis"]["reference"] == "meeting-42"

        illegal = await office.post(f"/v1/referrals/{rid}/accept")
        assert illegal.status_code == 409
        assert illegal.json()["allowed"] == ["acknowledge"] and illegal.json()["status"] == "requested"

        assert (await office.post(f"/v1/referrals/{rid}/acknowledge")).json()["status"] == "received"
        assert (await office.post(f"/v1/referrals/{rid}/accept")).json()["status"] == "accepted"
        assert (await office.post(f"/v1/referrals/{rid}/start")).json()["status"] == "in_progress"
        assert (await office.post(f"/v1/referrals/{rid}/complete", json={})).status_code == 422
        done = await office.post(f"/v1/referrals/{rid}/complete", json={"outcome": "got_help"})
        assert done.json()["status"] == "completed" and done.json()["allowed_actions"] == []
        detail = (await office.get(f"/v1/referrals/{rid}")).json()
        assert [h["type"] for h in detail["history"]] == [
            "referral.created", "referral.received", "referral.accepted", "referral.in_progress",
            "referral.completed"]

        everything = (await secretariat.get("/v1/referrals")).json()["referrals"]
        assert {r["status"] for r in everything} == {"completed", "rejected", "requested"}
        refused = {r["reason"] for r in everything if r["status"] == "rejected"}
        assert refused == {"no_legal_basis", "vital_interest_not_imminent"}
        assert all(r["receiver"] is None for r in everything if r["status"] == "rejected")
        # the secretariat cancels; a receiver may not
        sapporo = next(r for r in everything if r["municipality"] == "011002")
        assert (await office.post(f"/v1/referrals/{sapporo['referral_id']}/cancel")).status_code == 403
        cancelled = await secretariat.post(f"/v1/referrals/{sapporo['referral_id']}/cancel",
                                           json={"reason": "withdrawn"})
        assert cancelled.json()["status"] == "cancelled"

    events = await referral_events(referral, expect=10)
    mine_events = [e for e in events if e["subject"] == rid]
    assert [e["type"].split(".")[3] for e in mine_events] == [
        "created", "received", "accepted", "in_progress", "completed"]
    assert all(e["source"] == "/tsunagu/referral" and e["partitionkey"] == rid for e in mine_events)
    assert mine_events[-1]["data"]["outcome"] == "got_help"
    assert len({(e["source"], e["id"]) for e in events}) == len(events) == 10
    assert all(validate_event(e).event_type.key_field == "referral_id" for e in events)  # the contract holds

    conn = await asyncpg.connect(referral.settings.database_url)
    try:
        audit = await conn.fetch("SELECT org_id, role, action, referral_id, basis, outcome FROM referral.audit_log")
    finally:
        await conn.close()
    reads = {(a["org_id"], a["action"], a["basis"]) for a in audit if a["referral_id"] == rid}
    assert ("muni-131016", "read", "addressee") in reads and ("muni-131016", "complete", "addressee") in reads
    assert ("secretariat", "list", "secretariat") in reads
    # the other receiver's attempts are there, as denied: it never saw the referral
    tried = {(a["action"], a["outcome"], a["basis"]) for a in audit
             if a["org_id"] == "srsc-131016" and a["referral_id"] == rid}
    assert tried == {("read", "denied", "none"), ("acknowledge", "denied", "none")}
    assert ("muni-131016", "accept", "refused") in {(a["org_id"], a["action"], a["outcome"]) for a in audit
                                                    if a["referral_id"] == rid}
    assert "record_set_aside" in referral.processes[0].log_path.read_text()  # the poison record, by offset


async def test_an_imminent_referral_not_acknowledged_in_15_minutes_is_escalated(referral):  # noqa: F811
    topic = referral.topic("consultation.events")
    await publish(referral.bootstrap, topic, [consultation(1, risk="imminent")])
    police = referral.client("police-13")
    async with police:
        listed = await wait_for(police, "/v1/referrals", lambda r: r.json()["referrals"])
        rid = listed.json()["referrals"][0]["referral_id"]
        assert listed.json()["referrals"][0]["legal_basis"]["kind"] == "vital_interest"
        # event time moves on: another consultation 16 minutes later
        later = consultation(2, at=T0 + timedelta(minutes=16), referral_needed=False)
        await publish(referral.bootstrap, topic, [later])
        await wait_for(police, f"/v1/referrals/{rid}", lambda r: r.status_code == 404)
    events = await referral_events(referral, expect=2)
    [escalated] = [e for e in events if e["type"] == "jp.tsunagu.referral.escalated.v1"]
    assert escalated["data"]["from_receiver_id"] == "police-13"
    assert escalated["data"]["receiver_id"] == "secretariat"
    assert escalated["time"].startswith("2022-07-07T01:15:00")  # the deadline, 10:15 JST
