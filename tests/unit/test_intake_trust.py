"""intake's trust boundary as plain function calls: bounded event time, who may name which
organisation, ids that must not carry phone numbers, and who owns a contact or a referral id."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas import validate_event
from schemas.envelope import looks_like_phone
from services.intake.domain import Rules, sort_events
from services.intake.ownership import NOT_YET, NOT_YOURS, ContactClaim, ReferralClaim, judge
from tests.support import T0, contact_received, envelope, field_selected
from tsunagu.speaker import Speaker

RULES = Rules(caller_secret=b"s" * 32, max_skew=timedelta(minutes=5), horizon=timedelta(days=7))


def sort(raws, org="npo-a", *, now=T0, backfill=False, acts_for=()):
    return sort_events(raws, RULES, now, caller=Speaker(org, frozenset(acts_for), backfill), speakers={})


def answered(org, n, desk_org, *, at=T0, system="telephony"):
    cid = f"c-{org}-{n}"
    return envelope(org, "contact.answered", f"ev-{org}-{n}-answered", cid,
                    {"contact_id": cid, "desk_id": "desk-1", "organisation_id": desk_org, "wait_seconds": 3.0},
                    at=at, system=system)


@pytest.mark.parametrize("time", ["2100-01-01T00:00:00+00:00", "0001-01-01T00:00:00+00:00",
                                  "0001-01-01T00:00:00+09:00", "1999-12-31T23:59:59+00:00"])
def test_a_time_far_ahead_or_before_any_event_is_refused_even_with_a_backfill_key(time):
    raw = contact_received("npo-a", 1)
    raw["time"] = time
    [o] = sort([raw], backfill=True).refused
    assert o.status == "rejected" and o.problems[0].path == "time"


def test_a_little_clock_skew_passes_and_more_does_not():
    ok = contact_received("npo-a", 1, at=T0 + timedelta(minutes=4))
    ahead = contact_received("npo-a", 2, at=T0 + timedelta(minutes=6))
    sorted_ = sort([ok, ahead])
    assert [c.index for c in sorted_.canonical] == [0]
    assert "ahead of intake's clock" in sorted_.refused[0].problems[0].message


def test_an_old_event_needs_a_backfill_key():
    old = contact_received("npo-a", 1, at=T0 - timedelta(days=8))
    late = contact_received("npo-a", 2, at=T0 - timedelta(days=6))  # an upload after an outage
    refused = sort([old, late]).refused
    assert [o.index for o in refused] == [0] and "back-fill" in refused[0].problems[0].message
    assert not sort([old, late], backfill=True).refused


def test_a_partner_may_name_only_its_own_organisation_or_those_it_acts_for():
    foreign = answered("npo-a", 1, "npo-c")
    [o] = sort([foreign]).refused
    assert o.problems[0].path == "data.organisation_id"
    assert not sort([foreign], acts_for=["npo-c"]).refused


def test_the_same_id_twice_in_a_request_with_other_content_is_a_conflict_naming_what_differs():
    a = contact_received("npo-a", 1, region="13")
    b = contact_received("npo-a", 1, region="27")
    [o] = sort([a, b]).refused
    assert o.status == "conflict" and "data.prefecture" in o.problems[0].message
    assert "27" not in o.problems[0].message
    assert sort([a, dict(a)]).copies == {1: 0}


@pytest.mark.parametrize("attribute", ["id", "source", "subject", "dataschema", "tracestate", "partitionkey"])
@pytest.mark.parametrize("number", ["090-1234-5678", "09012345678", "+81 90 1234 5678", "0312345678"])
def test_a_phone_number_cannot_ride_in_an_envelope_attribute(attribute, number):
    raw = contact_received("npo-a", 1)
    value = {"id": f"ev-{number}", "source": f"/partners/npo-a/{number}", "subject": f"c-{number}",
             "dataschema": f"https://example.org/{number}", "tracestate": f"vendor={number}",
             "partitionkey": f"k-{number}"}[attribute]
    raw[attribute] = value
    [o] = sort([raw]).refused
    assert attribute in {p.path for p in o.problems}
    assert number not in repr(o)


@pytest.mark.parametrize("text", ["a\u0000b", "a\ud800b"])
def test_nul_and_lone_surrogates_are_refused_per_event(text):
    bad = contact_received("npo-a", 1)
    bad["id"] = text
    good = contact_received("npo-a", 2)
    sorted_ = sort([bad, good], backfill=True)
    assert [c.index for c in sorted_.canonical] == [1]
    assert sorted_.refused[0].problems[0].path == "id"


def test_ordinary_ids_are_not_taken_for_phone_numbers():
    import uuid

    for text in [str(uuid.uuid4()) for _ in range(20000)] + ["c-npo-a-17", "ev-123456789", "2022-07-07T10:00",
                                                              "1657155600000", "01HF8Y3K2M9X7Q4ZJ6T0V5W8NR"]:
        assert not looks_like_phone(text), text


def _canonical(raws, org="npo-a", acts_for=()):
    return sort(raws, org, backfill=True, acts_for=acts_for).canonical


def test_a_contact_belongs_to_the_first_organisation_that_reports_it():
    first = _canonical([contact_received("npo-a", 1)])
    verdict = judge(first, {}, {})
    assert verdict.new_contacts == {"c-npo-a-1": "npo-a"}
    again = _canonical([contact_received("npo-a", 1) | {"source": "/partners/npo-b/telephony"}], "npo-b")
    v2 = judge(again, {"c-npo-a-1": ContactClaim("npo-a")}, {})
    assert not v2.allowed and v2.settled[0].status == "conflict"


def test_another_organisation_may_report_a_contact_only_once_the_owner_named_it_as_answering():
    claims = {"c-tel-1": ContactClaim("tel")}
    cid = "c-tel-1"
    record = envelope("npo-b", "contact.ended", "ev-b-ended", cid, {"contact_id": cid, "talk_seconds": 60.0})
    v = judge(_canonical([record], "npo-b"), claims, {})
    assert v.settled[0].status == "rejected" and v.settled[0].problems[0].path == "data.contact_id"
    named = answered("tel", 1, "npo-b")
    v = judge(_canonical([named, record | {"source": "/partners/npo-b/telephony"}], "tel", acts_for=["npo-b"])
              [:1] + _canonical([record], "npo-b"), claims, {})
    assert not v.settled and v.new_grants == {(cid, "npo-b")}
    field = field_selected("npo-b", 1) | {"subject": cid}
    field["data"] = field["data"] | {"contact_id": cid}
    v = judge(_canonical([field], "npo-b"), {cid: ContactClaim("tel", {"npo-b"})}, {})
    assert v.settled[0].status == "rejected"  # the field is the owner's platform's to report


def _requested(org, referral_id, cid, urgency="standard", n=1):
    return envelope(org, "referral.requested", f"ev-{org}-{referral_id}-{n}", cid, {
        "referral_id": referral_id, "contact_id": cid, "organisation_id": org, "need": "municipality",
        "urgency": urgency, "municipality": "131016",
        "legal_basis": {"kind": "support_meeting", "reference": "meeting-42"},
    }, system="cases")


def test_a_referral_id_belongs_to_its_first_requester_and_other_content_is_a_conflict():
    claims = {"c-npo-a-1": ContactClaim("npo-a"), "c-npo-b-1": ContactClaim("npo-b")}
    mine = _canonical([_requested("npo-a", "ref-1", "c-npo-a-1")])
    assert judge(mine, {}, {}).settled[0].problems[0].path == "data.contact_id"  # its contact not reported yet
    v = judge(mine, claims, {})
    assert set(v.new_referrals) == {"ref-1"}
    stored = {"ref-1": v.new_referrals["ref-1"]}
    theirs = _canonical([_requested("npo-b", "ref-1", "c-npo-b-1", "imminent")], "npo-b")
    assert judge(theirs, claims, stored).settled[0].status == "conflict"
    changed = _canonical([_requested("npo-a", "ref-1", "c-npo-a-1", "urgent", n=2)])
    [o] = judge(changed, claims, stored).settled.values()
    assert o.status == "conflict" and "data.urgency" in o.problems[0].message
    same = _canonical([_requested("npo-a", "ref-1", "c-npo-a-1", n=3)])
    assert judge(same, claims, stored).settled[0].status == "duplicate"
    assert isinstance(stored["ref-1"], ReferralClaim)


def test_validate_event_still_accepts_ordinary_envelopes():
    assert validate_event(contact_received("npo-a", 1), form="ingress").envelope.id == "ev-npo-a-1-received"


def test_rejection_reasons_counted_are_names_of_the_contract_never_the_clients_words():
    from prometheus_client import generate_latest

    from schemas import Problem
    from services.intake.domain import Outcome
    from services.intake.handlers import count_rejected
    from tsunagu import telemetry

    tel = telemetry.build("intake")
    telemetry.use(tel)
    try:
        count_rejected([Outcome(0, "rejected", problems=(Problem("my_own_attribute_0901234", "unknown"),)),
                        Outcome(1, "rejected", problems=(Problem("data.caller_id", "not a phone"),)),
                        Outcome(2, "conflict", problems=(Problem("data.contact_id", "taken"),))], "http")
        lines = [line for line in generate_latest(tel.registry).decode().splitlines()
                 if line.startswith("tsunagu_intake_rejected_total{")]
    finally:
        telemetry.use(None)
        tel.shutdown()
    reasons = {line.split('reason="')[1].split('"')[0] for line in lines}
    assert reasons == {"other", "data.caller_id", "conflict"}


async def test_a_batch_sorted_in_turns_comes_out_as_sorted_at_once():
    from services.intake.handlers import sorted_in_turns

    raws = [contact_received("npo-a", n) for n in range(40)] + [contact_received("npo-a", 3)]
    raws[7]["time"] = "2100-01-01T00:00:00+00:00"
    at_once = sort(raws, backfill=True)
    caller = Speaker("npo-a", frozenset(), True)
    in_turns = await sorted_in_turns(raws, RULES, T0, 4, caller=caller, speakers={})
    assert [c.index for c in in_turns.canonical] == [c.index for c in at_once.canonical]
    assert in_turns.refused == at_once.refused and in_turns.copies == at_once.copies == {40: 3}


# --- a chat platform's triage and a desk's transfer -----------------------------------------------


def triaged(org, cid, risk="high", *, n=1, system="chat"):
    return envelope(org, "contact.triaged", f"ev-{org}-{cid}-triaged-{n}", cid,
                    {"contact_id": cid, "risk": risk, "instrument": "k6"}, system=system)


def transferred(org, cid, *, n=1, from_desk="desk-1", to_desk="desk-2", system="chat"):
    return envelope(org, "contact.transferred", f"ev-{org}-{cid}-transferred-{n}", cid,
                    {"contact_id": cid, "from_desk_id": from_desk, "to_desk_id": to_desk, "to_channel": "phone"},
                    system=system)


def test_the_owner_platform_may_triage_and_transfer_its_contact():
    cid = "c-chat-1"
    v = judge(_canonical([triaged("chat", cid), transferred("chat", cid)], "chat"), {cid: ContactClaim("chat")}, {})
    assert not v.settled and [c.short for c in v.allowed] == ["contact.triaged", "contact.transferred"]


def test_a_contact_reported_earlier_in_the_same_request_may_be_triaged_there():
    received = contact_received("chat", 1, channel="chat")
    cid = received["data"]["contact_id"]
    v = judge(_canonical([received, triaged("chat", cid)], "chat"), {}, {})
    assert not v.settled and len(v.allowed) == 2 and v.new_contacts == {cid: "chat"}


def test_the_organisation_holding_the_contact_may_transfer_it_but_never_triage_it():
    cid = "c-chat-1"
    claims = {cid: ContactClaim("chat", {"npo-b"})}  # the owner's answer or routing's assignment named npo-b
    v = judge(_canonical([transferred("npo-b", cid), triaged("npo-b", cid)], "npo-b"), claims, {})
    assert [c.short for c in v.allowed] == ["contact.transferred"]
    [refused] = v.settled.values()
    assert refused.index == 1 and refused.status == "rejected"
    assert refused.problems[0].path == "data.contact_id" and refused.problems[0].message == NOT_YOURS
    assert not v.new_grants and not v.new_contacts


def test_the_owner_naming_a_desk_organisation_in_its_answer_lets_that_organisation_transfer_in_the_same_request():
    cid = "c-tel-1"
    named = answered("tel", 1, "npo-b")
    v = judge(_canonical([named], "tel", acts_for=["npo-b"]) + _canonical([transferred("npo-b", cid)], "npo-b"),
              {cid: ContactClaim("tel")}, {})
    assert not v.settled and v.new_grants == {(cid, "npo-b")}


@pytest.mark.parametrize("make", [triaged, transferred])
def test_an_organisation_with_no_part_in_the_contact_may_neither_triage_nor_transfer_it(make):
    cid = "c-chat-1"
    claims = {cid: ContactClaim("chat", {"npo-b"})}
    v = judge(_canonical([make("npo-c", cid)], "npo-c"), claims, {})
    assert not v.allowed and v.settled[0].status == "rejected" and v.settled[0].problems[0].message == NOT_YOURS


@pytest.mark.parametrize("make", [triaged, transferred])
def test_a_triage_or_transfer_before_its_contact_is_known_is_refused_to_be_sent_again(make):
    v = judge(_canonical([make("chat", "c-chat-9")], "chat"), {}, {})
    assert not v.allowed and not v.new_contacts  # neither claims the contact
    [o] = v.settled.values()
    assert o.status == "rejected" and o.problems[0].path == "data.contact_id" and o.problems[0].message == NOT_YET


def test_a_triage_instrument_or_a_transfers_desk_cannot_carry_a_phone_number():
    cid = "c-chat-1"
    phone_instrument = triaged("chat", cid) | {"data": {"contact_id": cid, "risk": "high",
                                                         "instrument": "09012345678"}}
    phone_desk = transferred("chat", cid, n=2, to_desk="0312345678")
    refused = sort([phone_instrument, phone_desk], "chat", backfill=True).refused
    assert [o.problems[0].path for o in refused] == ["data.instrument", "data.to_desk_id"]
    assert "09012345678" not in repr(refused) and "0312345678" not in repr(refused)
