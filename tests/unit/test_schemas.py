"""The event contract: what partners may send, what intake refuses, and how it says why."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    EVENT_TYPES,
    TOPICS,
    CloudEvent,
    EventInvalid,
    ValidatedEvent,
    decode_value,
    encode_value,
    kafka_headers,
    kafka_key,
    partner_org,
    rejected_record,
    validate_event,
    validate_event_json,
)
from schemas.codes import ALL_CODE_LISTS, FieldCode, label
from schemas.generate import ASYNCAPI_FILE, ROOT, asyncapi, stale_files

PHONE = "+81-90-1234-5678"
WHEN = "2022-07-07T10:00:00+09:00"
CONSENT = {
    "given": True,
    "scope": ["municipality", "self_reliance_centre"],
    "recorded_by": "staff-7",
    "recorded_at": WHEN,
}
REFERRAL_CHANGE = {
    "referral_id": "ref-1",
    "contact_id": "c-1",
    "receiver_id": "city-131016",
    "receiver_type": "municipality",
    "urgency": "urgent",
    "deadline": "2022-07-08T10:00:00+09:00",
    "reason": None,
    "outcome": None,
}

GOOD_DATA: dict[str, dict[str, Any]] = {
    "contact.received": {
        "contact_id": "c-1",
        "channel": "phone",
        "caller_key": "a" * 64,
        "prefecture": "13",
        "municipality": "131016",
    },
    "contact.field_selected": {"contact_id": "c-1", "field": "loneliness", "menu_position": 9},
    "contact.answered": {
        "contact_id": "c-1",
        "desk_id": "d-1",
        "organisation_id": "npo-1",
        "wait_seconds": 12.5,
    },
    "contact.abandoned": {"contact_id": "c-1", "stage": "queue", "wait_seconds": 40},
    "contact.ended": {"contact_id": "c-1", "talk_seconds": 600.0, "desk_id": "d-1"},
    "contact.triaged": {"contact_id": "c-1", "risk": "high", "instrument": "line-screen-v1"},
    "contact.transferred": {"contact_id": "c-1", "from_desk_id": "d-1", "to_field": "suicidal", "to_channel": "phone"},
    "routing.assigned": {
        "contact_id": "c-1",
        "desk_id": "d-1",
        "organisation_id": "npo-1",
        "field": "suicidal",
        "reason": "free_line",
        "queue_position": None,
    },
    "routing.queued": {"contact_id": "c-1", "field": "hardship", "queue_position": 3, "priority": 0},
    "routing.overflowed": {"contact_id": "c-1", "field": "hardship", "waited_seconds": 90.0, "tier": 2},
    "routing.withdrawn": {"contact_id": "c-1", "desk_id": "d-1", "organisation_id": "npo-1", "field": "hardship",
                          "reason": "ring_timeout", "ring_seconds": 20.0},
    # a platform's heartbeat is keyed by the platform; the helper's subject "c-1" names one here
    "platform.heartbeat": {"platform_id": "c-1"},
    "consultation.recorded": {
        "contact_id": "c-1",
        "organisation_id": "npo-1",
        "desk_id": "d-1",
        "field": "loneliness",
        "categories": ["mental_health", "no_place_to_talk"],
        "age_band": "age50s",
        "risk": "medium",
        "referral_needed": True,
        "municipality": "131016",
        "consent": CONSENT,
        "talk_seconds": 1200.0,
    },
    "referral.requested": {
        "referral_id": "ref-1",
        "contact_id": "c-1",
        "organisation_id": "npo-1",
        "municipality": "131016",
        "need": "self_reliance_centre",
        "urgency": "standard",
        "legal_basis": {"kind": "consent", "consent": CONSENT},
    },
    **{
        f"referral.{step}": REFERRAL_CHANGE
        for step in (
            "created",
            "received",
            "accepted",
            "rejected",
            "in_progress",
            "completed",
            "failed",
            "cancelled",
            "escalated",
        )
    },
}


def event(short: str = "contact.field_selected", **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD_DATA[short])
    key = data["referral_id"] if EVENT_TYPES[f"jp.tsunagu.{short}.v1"].key_field == "referral_id" else "c-1"
    raw = {
        "specversion": "1.0",
        "id": "evt-0001",
        "source": "/partners/npo-1/telephony",
        "type": f"jp.tsunagu.{short}.v1",
        "time": WHEN,
        "subject": key,
        "data": data,
    }
    raw.update(changes)
    return raw


def ingress_contact(**data_changes: Any) -> dict[str, Any]:
    data = {"contact_id": "c-1", "channel": "phone", "caller_id": PHONE, "region": "131016"}
    data.update(data_changes)
    return event("contact.received", data=data)


def problems_of(raw: object, form: str = "canonical") -> dict[str, str]:
    with pytest.raises(EventInvalid) as caught:
        validate_event(raw, form=form)  # type: ignore[arg-type]
    return {p.path: p.message for p in caught.value.problems}


# --- good events ---------------------------------------------------------------------------


def test_every_event_type_has_a_good_example_here():
    assert {t.short for t in EVENT_TYPES.values()} == set(GOOD_DATA)


@pytest.mark.parametrize("short", sorted(GOOD_DATA))
def test_a_good_event_of_every_type_validates(short):
    validated = validate_event(event(short))
    assert isinstance(validated, ValidatedEvent)
    assert validated.event_type.short == short
    assert validated.key == validated.envelope.subject


def test_partners_send_contact_received_with_the_raw_caller_id_and_one_region_code():
    validated = validate_event(ingress_contact(), form="ingress")
    assert validated.data.caller_id == PHONE
    assert validated.data.region == "131016"


def test_a_prefecture_alone_is_a_valid_region():
    assert validate_event(ingress_contact(region="13"), form="ingress").data.region == "13"


def test_the_canonical_contact_received_has_no_caller_id():
    assert "data.caller_id" in problems_of(ingress_contact())


def test_json_bytes_validate_like_the_decoded_object():
    validated = validate_event_json(json.dumps(ingress_contact()).encode(), form="ingress")
    assert validated.key == "c-1"


# --- the envelope ----------------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["specversion", "id", "source", "type", "time", "subject", "data"])
def test_a_missing_required_attribute_is_named(attribute):
    raw = event()
    del raw[attribute]
    assert problems_of(raw)[attribute] == "required attribute is missing"


def test_time_without_offset_is_rejected_with_a_clear_message():
    problems = problems_of(event(time="2022-07-07T10:00:00"))
    assert problems == {"time": "time must carry a UTC offset, e.g. 2022-07-07T10:00:00+09:00"}


def test_time_as_a_unix_timestamp_is_rejected():
    assert "RFC 3339" in problems_of(event(time=1657155600))["time"]


def test_an_extra_attribute_is_rejected_by_name():
    assert problems_of(event(caller="someone")) == {"caller": "unknown attribute 'caller' is not allowed"}


def test_the_extensions_tsunagu_uses_are_accepted():
    raw = event(
        partitionkey="c-1",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        tracestate="vendor=1",
        dataschema="https://example.org/schema.json",
    )
    assert validate_event(raw).envelope.traceparent.startswith("00-")


def test_an_unknown_type_lists_the_known_types():
    message = problems_of(event(type="jp.tsunagu.contact.teleported.v1"))["type"]
    assert message.startswith("unknown event type")
    assert "jp.tsunagu.contact.received.v1" in message


def test_a_type_outside_the_naming_pattern_is_rejected_once():
    problems = problems_of(event(type="com.example.thing"))
    assert list(problems) == ["type"]


def test_subject_must_equal_the_key_field():
    assert problems_of(event(subject="c-2")) == {"subject": "subject must equal data.contact_id"}


def test_a_referral_step_is_subject_to_its_referral_id():
    assert problems_of(event("referral.accepted", subject="c-1")) == {
        "subject": "subject must equal data.referral_id"
    }


def test_envelope_and_data_problems_are_reported_together():
    raw = event(
        time="2022-07-07T10:00:00", data={"contact_id": "c-1", "field": "astrology", "menu_position": 1}
    )
    assert set(problems_of(raw)) == {"time", "data.field"}


def test_the_error_carries_id_source_and_type_for_the_response():
    with pytest.raises(EventInvalid) as caught:
        validate_event(event(subject="c-2"))
    assert (caught.value.id, caught.value.source, caught.value.type) == (
        "evt-0001",
        "/partners/npo-1/telephony",
        "jp.tsunagu.contact.field_selected.v1",
    )
    assert "subject must equal data.contact_id" in str(caught.value)


def test_something_that_is_not_an_object_is_not_an_event():
    assert problems_of([1, 2]) == {"": "an event must be a JSON object"}


def test_malformed_json_says_where_without_quoting_it():
    with pytest.raises(EventInvalid) as caught:
        validate_event_json(b'{"caller_id": "' + PHONE.encode() + b'"')
    (problem,) = caught.value.problems
    assert problem.path == "" and problem.message.startswith("malformed JSON:")
    assert "line 1" in problem.message and PHONE not in problem.message


def test_nan_is_not_json():
    with pytest.raises(EventInvalid):
        validate_event_json(b'{"wait_seconds": NaN}')


def test_partner_org_is_read_from_the_source():
    assert partner_org("/partners/npo-1/telephony") == "npo-1"
    assert partner_org("/tsunagu/routing") is None


# --- the data ------------------------------------------------------------------------------


def test_an_unknown_field_code_lists_the_allowed_codes():
    raw = event(data={"contact_id": "c-1", "field": "astrology", "menu_position": 1})
    message = problems_of(raw)["data.field"]
    assert all(code.value in message for code in FieldCode)


def test_free_text_in_data_is_rejected():
    raw = event("consultation.recorded")
    raw["data"]["notes"] = "話を聞いてほしいと言っていた"
    assert problems_of(raw) == {"data.notes": "unknown field 'notes' is not allowed"}


def test_a_reason_must_be_a_code_not_a_sentence():
    raw = event("referral.rejected")
    raw["data"]["reason"] = "no staff this week"
    assert "data.reason" in problems_of(raw)


def test_a_menu_position_sent_as_text_is_rejected():
    raw = event(data={"contact_id": "c-1", "field": "suicidal", "menu_position": "3"})
    assert "data.menu_position" in problems_of(raw)


def test_a_negative_wait_is_rejected():
    raw = event("contact.answered")
    raw["data"]["wait_seconds"] = -1
    assert "data.wait_seconds" in problems_of(raw)


def test_a_repeated_category_is_rejected_with_its_position_in_the_path():
    raw = event("consultation.recorded")
    raw["data"]["categories"] = ["work", "dreams"]
    assert "data.categories.1" in problems_of(raw)
    raw["data"]["categories"] = ["work", "work"]
    assert problems_of(raw) == {"data.categories": "items must not repeat"}


def test_consent_as_legal_basis_needs_consent_given():
    raw = event("referral.requested")
    raw["data"]["legal_basis"] = {"kind": "consent", "consent": {**CONSENT, "given": False}}
    assert problems_of(raw) == {"data.legal_basis": "kind consent requires consent with given true"}


def test_a_support_meeting_as_legal_basis_needs_its_reference():
    raw = event("referral.requested")
    raw["data"]["legal_basis"] = {"kind": "support_meeting"}
    assert "data.legal_basis" in problems_of(raw)
    raw["data"]["legal_basis"]["reference"] = "meeting-2022-07-08"
    validate_event(raw)


def test_a_canonical_municipality_must_lie_in_its_prefecture():
    raw = event("contact.received")
    raw["data"]["prefecture"] = "14"
    assert "data" in problems_of(raw)


# --- privacy -------------------------------------------------------------------------------


def test_problems_never_contain_the_phone_number_that_was_sent():
    raw = ingress_contact(channel="fax", region=PHONE, unexpected=PHONE)
    raw["id"] = PHONE + " x"
    raw["subject"] = PHONE
    raw["time"] = PHONE
    raw[PHONE] = PHONE
    with pytest.raises(EventInvalid) as caught:
        validate_event(raw, form="ingress")
    assert len(caught.value.problems) >= 4
    assert all(PHONE not in p.message and PHONE not in p.path for p in caught.value.problems)
    assert "<unrecognised key>" in {p.path for p in caught.value.problems}
    assert caught.value.id is None  # an id with whitespace is not echoed back either


def test_a_caller_id_in_the_wrong_type_is_not_echoed():
    with pytest.raises(EventInvalid) as caught:
        validate_event(ingress_contact(caller_id=[PHONE], contact_id=PHONE + "!"), form="ingress")
    assert PHONE not in str(caught.value)


# --- registry rules ------------------------------------------------------------------------


def test_partners_may_publish_contact_events_consultations_and_referral_requests_only():
    by_producer = {t.short: t.producer for t in EVENT_TYPES.values()}
    partner = {s for s, p in by_producer.items() if p == "partner"}
    assert partner == {
        "contact.received",
        "contact.field_selected",
        "contact.answered",
        "contact.abandoned",
        "contact.ended",
        "contact.triaged",
        "contact.transferred",
        "platform.heartbeat",
        "consultation.recorded",
        "referral.requested",
    }
    assert {s for s, p in by_producer.items() if p == "routing"} == {
        "routing.assigned",
        "routing.queued",
        "routing.overflowed",
        "routing.withdrawn",
    }
    assert all(
        p == "referral" for s, p in by_producer.items() if s.startswith("referral.") and s not in partner
    )


def test_each_type_flows_on_its_topic_with_its_key():
    for t in EVENT_TYPES.values():
        entity = t.short.split(".")[0]
        expected_topic = {
            "contact": "contact.events",
            "platform": "contact.events",
            "routing": "routing.decisions",
            "consultation": "consultation.events",
        }.get(entity, "consultation.events" if t.short == "referral.requested" else "referral.events")
        assert t.topic == expected_topic, t.short
        expected_key = "referral_id" if t.topic == "referral.events" else "contact_id"
        expected_key = "platform_id" if t.short == "platform.heartbeat" else expected_key
        assert t.key_field == expected_key, t.short
        assert t.label_ja and t.label_en
        assert (t.ingress_model is t.data_model) == (t.short != "contact.received")


# --- codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code_list", ALL_CODE_LISTS, ids=lambda c: c.__name__)
def test_every_code_has_a_japanese_and_an_english_label(code_list):
    assert set(code_list.LABELS) == set(code_list)
    for code in code_list:
        ja, en = code_list.LABELS[code]
        assert ja.strip() and en.strip()
        assert label(code) == {"code": code.value, "ja": ja, "en": en}


def test_field_labels_are_those_of_the_trial():
    assert FieldCode.LABELS[FieldCode.suicidal] == ("死にたいほどつらい方", "feeling like wanting to die")
    assert FieldCode.LABELS[FieldCode.loneliness] == ("孤独・孤立でお悩みの方", "loneliness and isolation")


def test_labels_appear_in_the_json_schema():
    schema = json.loads((ROOT / "jsonschema" / "jp.tsunagu.contact.field_selected.v1.json").read_text())
    assert schema["$defs"]["FieldCode"]["x-labels"]["suicidal"]["ja"] == "死にたいほどつらい方"


# --- kafka ---------------------------------------------------------------------------------


def test_the_kafka_value_is_the_whole_event_and_decodes_back():
    validated = validate_event(event("consultation.recorded"))
    value = encode_value(validated.envelope)
    assert b'"specversion":"1.0"' in value
    assert "partitionkey" not in decode_value(value)  # absent attributes stay absent
    again = validate_event(decode_value(value))
    assert again.envelope == validated.envelope


def test_the_kafka_key_is_the_partition_key_else_the_subject():
    plain = CloudEvent.model_validate(event())
    assert kafka_key(plain) == b"c-1"
    assert kafka_key(CloudEvent.model_validate(event(partitionkey="desk-9"))) == b"desk-9"
    assert kafka_headers() == [("content-type", b"application/cloudevents+json; charset=utf-8")]


def test_japanese_text_is_written_as_utf8_not_escaped():
    assert "東京".encode() in encode_value({"subject": "東京", "data": {}})


# --- generated documents -------------------------------------------------------------------


def test_generated_documents_are_up_to_date():
    stale = stale_files()
    assert not stale, f"run `python -m schemas.generate`; stale: {stale}"


def test_asyncapi_has_a_channel_for_every_topic():
    doc = yaml.safe_load((ROOT / ASYNCAPI_FILE).read_text(encoding="utf-8"))
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in doc["channels"].values()}
    expected = {f"tsunagu.{t}" for t in TOPICS} | {"tsunagu.intake.ingress", "tsunagu.intake.rejected"}
    assert addresses == expected
    assert doc == asyncapi()


def test_asyncapi_carries_every_event_type():
    names = {m["name"] for m in asyncapi()["components"]["messages"].values()}
    assert set(EVENT_TYPES) <= names


# --- robustness ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
envelope_keys = st.sampled_from(
    ["specversion", "id", "source", "type", "time", "subject", "data", "partitionkey", "traceparent"]
)
event_like = st.dictionaries(envelope_keys | st.text(max_size=8), json_values, max_size=9)
almost_events = st.builds(
    lambda short, overrides: {**event(short), **overrides},
    st.sampled_from(sorted(GOOD_DATA)),
    st.dictionaries(envelope_keys, json_values, max_size=3),
)
almost_data = st.builds(
    lambda short, overrides: event(short, data={**GOOD_DATA[short], **overrides}),
    st.sampled_from(sorted(GOOD_DATA)),
    st.dictionaries(
        st.sampled_from(sorted({k for d in GOOD_DATA.values() for k in d})), json_values, max_size=3
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(json_values, event_like, almost_events, almost_data), st.sampled_from(["ingress", "canonical"])
)
def test_validation_never_raises_anything_but_event_invalid(raw, form):
    try:
        validated = validate_event(raw, form=form)
    except EventInvalid as exc:
        assert exc.problems
        assert all(isinstance(p.message, str) and p.message for p in exc.problems)
    else:
        assert validated.key == validated.envelope.subject


def test_a_model_and_its_dict_encode_to_the_same_bytes():
    validated = validate_event(event("referral.requested", partitionkey="c-1"))
    assert encode_value(validated.envelope) == encode_value(json.loads(encode_value(validated.envelope)))


def test_a_rejected_record_keeps_the_reasons_but_not_the_payload():
    payload = json.dumps(ingress_contact(channel="fax")).encode()
    with pytest.raises(EventInvalid) as caught:
        validate_event_json(payload, form="ingress")
    record = rejected_record(
        payload, caught.value, rejected_at=datetime(2022, 7, 7, 1, tzinfo=UTC), topic="tsunagu.intake.ingress"
    )
    text = record.model_dump_json()
    assert PHONE not in text
    assert record.payload_bytes == len(payload) and len(record.payload_sha256) == 64
    assert [p.path for p in record.problems] == ["data.channel"]
    assert record.type == "jp.tsunagu.contact.received.v1"
