"""intake's rules as plain function calls: pseudonymisation, authorisation, per-event outcomes."""

from __future__ import annotations

import json

import pytest

from schemas import Channel, Problem
from services.intake.domain import (
    CallerIdInvalid,
    Outcome,
    Rules,
    Unparsed,
    caller_key,
    normalise_caller,
    normalise_phone,
    outcomes,
    sort_events,
)
from tests.support import T0, contact_received, envelope, field_selected
from tsunagu.speaker import Speaker

RULES = Rules(caller_secret=b"s" * 32, max_event_bytes=4096)
NOW = T0  # the test events are of the trial's week: a back-fill key replays them


def sort(raws, org, sizes=None, *, now=NOW, backfill=True, acts_for=()):
    caller = Speaker(org, frozenset(acts_for), backfill) if org is not None else None
    return sort_events(raws, RULES, now, caller=caller, speakers={}, sizes=sizes)


@pytest.mark.parametrize("written", ["090-1234-5678", "09012345678", "+81 90 1234 5678", "(090)1234-5678",
                                     "+81-90-1234-5678", "090 1234 5678"])
def test_a_phone_number_in_any_written_form_becomes_the_same_e164(written):
    assert normalise_phone(written) == "+819012345678"


def test_landline_and_international_numbers_normalise_through_phonenumbers():
    assert normalise_phone("03-1234-5678") == "+81312345678"
    assert normalise_phone("+1 650 253 0000") == "+16502530000"


def test_something_that_is_not_a_phone_number_is_refused_without_echoing_it():
    with pytest.raises(CallerIdInvalid) as err:
        normalise_phone("hello")
    assert "hello" not in str(err.value)


def test_caller_key_is_stable_per_secret_and_unreadable_without_it():
    a = caller_key(b"one" * 11, "+819012345678")
    assert a == caller_key(b"one" * 11, "+819012345678")
    assert a != caller_key(b"two" * 11, "+819012345678")
    assert len(a) == 64 and int(a, 16) >= 0
    assert "9012345678" not in a


def test_a_chat_account_never_collides_with_a_phone_number():
    assert normalise_caller(Channel.chat, "+819012345678") != normalise_caller(Channel.phone, "+819012345678")


def test_accepted_contact_carries_a_caller_key_and_no_raw_number():
    raw = contact_received("npo-a", 1, caller="090-1234-5678", region="131016")
    sorted_ = sort([raw], "npo-a")
    assert not sorted_.refused and not sorted_.foreign
    [c] = sorted_.canonical
    text = c.value.decode()
    assert "1234" not in text and "caller_id" not in text
    event = json.loads(text)
    assert event["data"]["caller_key"] == caller_key(RULES.caller_secret, "+819012345678")
    assert event["data"]["prefecture"] == "13" and event["data"]["municipality"] == "131016"
    assert event["partitionkey"] == c.key == "c-npo-a-1"
    assert c.topic == "contact.events"


def test_the_same_caller_gets_the_same_key_whatever_the_format():
    a = sort([contact_received("npo-a", 1, caller="090-1234-5678")], "npo-a").canonical[0]
    b = sort([contact_received("npo-a", 2, caller="+81 90 1234 5678")], "npo-a").canonical[0]
    assert json.loads(a.value)["data"]["caller_key"] == json.loads(b.value)["data"]["caller_key"]


def test_withheld_number_is_accepted_without_a_caller_key():
    raw = contact_received("npo-a", 1)
    raw["data"]["caller_id"] = None
    [c] = sort([raw], "npo-a").canonical
    assert "caller_key" not in json.loads(c.value)["data"]


def test_event_naming_another_organisations_source_is_foreign():
    sorted_ = sort([contact_received("npo-b", 1)], "npo-a")
    [o] = sorted_.foreign
    assert o.problems[0].path == "source" and "npo-b" in o.problems[0].message


def test_partners_cannot_publish_routing_decisions():
    raw = envelope("npo-a", "routing.queued", "r1", "c1", {"contact_id": "c1", "field": "loneliness",
                                                         "queue_position": 1, "priority": 0})
    [o] = sort([raw], "npo-a").refused
    assert o.status == "rejected" and o.problems[0].path == "type" and "routing" in o.problems[0].message


def test_the_same_event_twice_in_one_request_is_a_duplicate_or_refused_as_the_first_copy_is():
    raw = contact_received("npo-a", 1)
    sorted_ = sort([raw, dict(raw)], "npo-a")
    assert len(sorted_.canonical) == 1 and sorted_.copies == {1: 0}
    assert [o.status for o in outcomes(sorted_, {(raw["source"], raw["id"])})] == ["accepted", "duplicate"]
    assert [o.status for o in outcomes(sorted_, set())] == ["duplicate", "duplicate"]  # stored by an earlier request
    refused = Outcome(0, "rejected", raw["id"], raw["source"], raw["type"], (Problem("data.contact_id", "not yours"),))
    [_, copy] = outcomes(sorted_, set(), {0: refused})
    assert copy.status == "rejected" and copy.problems == refused.problems


def test_outcomes_come_back_in_request_order_with_store_duplicates_marked():
    raws = [contact_received("npo-a", 1), {"nope": 1}, field_selected("npo-a", 1)]
    sorted_ = sort(raws, "npo-a")
    stored = {(sorted_.canonical[0].source, sorted_.canonical[0].id)}
    result = outcomes(sorted_, stored)
    assert [o.index for o in result] == [0, 1, 2]
    assert [o.status for o in result] == ["accepted", "rejected", "duplicate"]


def test_record_that_was_not_json_is_rejected_with_where_not_what():
    [o] = sort([Unparsed("malformed JSON at position 3")], None).refused
    assert o.problems[0].message == "malformed JSON at position 3"


def test_oversize_event_is_rejected():
    [o] = sort([contact_received("npo-a", 1)], "npo-a", sizes=[5000]).refused
    assert "larger than 4096 bytes" in o.problems[0].message


def test_unusable_phone_number_is_rejected_without_echoing_it():
    raw = contact_received("npo-a", 1, caller="call-me-maybe")
    [o] = sort([raw], "npo-a").refused
    assert o.problems[0].path == "data.caller_id"
    assert "call-me-maybe" not in repr(o)


def test_invalid_event_problems_never_contain_the_caller_number():
    raw = contact_received("npo-a", 1, caller="090-9876-5432")
    raw["data"]["channel"] = "fax"
    raw["time"] = "2022-07-07T10:00:00"
    [o] = sort([raw], "npo-a").refused
    assert {p.path for p in o.problems} >= {"time", "data.channel"}
    assert "9876" not in repr(o)
