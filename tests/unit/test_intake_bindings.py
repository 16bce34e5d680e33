"""intake's CloudEvents bindings as plain function calls: what the official SDK sends, read back.

The messages are made by the official ``cloudevents`` SDK (its HTTP and Kafka conversions), so a
partner using it is read as the binding specifications say; tests/integration/test_intake_bindings.py
sends the same over the real HTTP door and broker.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from cloudevents.core.bindings import http as core_http
from cloudevents.core.bindings import kafka as core_kafka
from cloudevents.core.v1.event import CloudEvent as CoreEvent
from cloudevents.v1 import conversion
from cloudevents.v1 import kafka as sdk_kafka
from cloudevents.v1.http import CloudEvent

from schemas import decode_value
from services.intake.bindings import (
    Unsupported,
    event_from_http_binary,
    event_from_kafka,
    http_header_value,
    http_mode,
)
from services.intake.domain import Framed, Rules, Unparsed, at_the_door, sort_events
from tests.support import T0, contact_received
from tsunagu.speaker import Speaker

RULES = Rules(caller_secret=b"s" * 32, max_event_bytes=4096)


def sort(raws: list[object]):
    return sort_events(raws, RULES, T0, caller=Speaker("npo-a", frozenset(), True), speakers={})


def sdk_event(n: int = 1, **extensions: str) -> CloudEvent:
    """A contact.received as a partner builds it with the SDK: the attributes, then the data."""
    raw = contact_received("npo-a", n, caller="080-7777-0001")
    data = raw.pop("data")
    return CloudEvent(raw | extensions, data)


def core_event(raw: dict, **extra: str) -> CoreEvent:
    """The same with the SDK's newer core API (time as a datetime, the data apart)."""
    attributes = {k: v for k, v in raw.items() if k != "data"} | extra
    attributes["time"] = datetime.fromisoformat(attributes["time"])
    return CoreEvent(attributes, raw.get("data"))


def raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Header pairs as the HTTP server receives them (what ``request.headers.raw`` holds)."""
    return [(k.lower().encode("latin-1"), v.encode("utf-8")) for k, v in headers.items()]


# --- content modes -------------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "specversion", "mode"), [
    ("application/cloudevents+json", False, "structured"),
    ("application/cloudevents+json; charset=utf-8", False, "structured"),
    ("Application/CloudEvents+JSON;charset=UTF-8", True, "structured"),  # the format wins over ce-* headers
    ("application/cloudevents-batch+json", False, "batch"),
    ('application/cloudevents-batch+json; charset="utf-8"', False, "batch"),
    ("application/json", True, "binary"),
    ("application/json; charset=utf-8", True, "binary"),
    ("text/plain", True, "binary"),  # binary mode still: the event is refused for its data, not the request
    (None, True, "binary"),
])
def test_the_content_mode_is_told_by_the_media_type_and_ce_specversion(content_type, specversion, mode):
    assert http_mode(content_type, specversion) == mode


@pytest.mark.parametrize("content_type", [
    "application/json", None, "application/cloudevents+avro", "application/cloudevents+json; charset=latin-1",
])
def test_anything_else_is_unsupported_naming_the_three_modes(content_type):
    refusal = http_mode(content_type, False)
    assert isinstance(refusal, Unsupported)
    if content_type in ("application/json", None):
        assert all(mode in refusal.message for mode in ("structured", "batch", "binary"))


# --- HTTP header values (HTTP binding 3.1.3.2) ---------------------------------------------------


def test_header_values_are_percent_decoded_once_as_utf8():
    assert http_header_value(b"Euro%20%E2%82%AC%20%F0%9F%98%80") == "Euro \u20ac \U0001f600"
    assert http_header_value(b"%2525") == "%25"  # one round only
    assert http_header_value(b"a%2fb") == "a/b"  # lower-case hex, and unnecessary encoding, accepted


def test_a_double_quoted_header_value_is_unescaped_before_percent_decoding():
    assert http_header_value(b'"say \\"hi\\" %20"') == 'say "hi"  '


def test_percent_encoded_bytes_that_are_not_utf8_are_refused():
    assert http_header_value(b"%C0%A0") is None  # the spec's example: an overlong space


# --- HTTP binary mode, as the SDK sends it -------------------------------------------------------


def test_the_sdks_binary_request_reads_as_the_same_event_as_its_structured_one():
    event = sdk_event(datacontenttype="application/json")
    headers, body = conversion.to_binary(event)
    _, structured = conversion.to_structured(event)
    read = event_from_http_binary(raw_headers(headers), body)
    assert read == json.loads(structured)


def test_the_core_sdks_percent_encoded_binary_request_is_decoded():
    raw = contact_received("npo-a", 1, caller="080-7777-0001")
    data = raw["data"]
    message = core_http.to_binary_event(core_event(raw, datacontenttype="application/json; charset=utf-8",
                                                   comment="Euro \u20ac"))
    assert message.headers["ce-comment"] == "Euro%20%E2%82%AC"
    read = event_from_http_binary(raw_headers(message.headers), message.body)
    assert isinstance(read, dict)
    assert read["comment"] == "Euro \u20ac" and read["data"] == data
    assert read["datacontenttype"] == "application/json; charset=utf-8"


def test_a_binary_event_whose_data_is_not_json_is_refused_on_its_own_naming_its_id():
    headers, _ = conversion.to_binary(sdk_event())
    read = event_from_http_binary(raw_headers(headers | {"content-type": "text/plain"}), b"080-7777-0001")
    assert isinstance(read, Framed)
    [outcome] = sort([read]).refused
    assert outcome.status == "rejected" and outcome.id == "ev-npo-a-1-received"
    assert [p.path for p in outcome.problems] == ["datacontenttype"]
    assert "JSON" in outcome.problems[0].message and "7777" not in outcome.problems[0].message


def test_a_binary_body_that_is_not_json_is_that_events_problem():
    headers, _ = conversion.to_binary(sdk_event())
    read = event_from_http_binary(raw_headers(headers | {"content-type": "application/json"}), b"{nope")
    assert isinstance(read, Framed) and [p.path for p in read.problems] == ["data"]
    assert read.problems[0].message.startswith("malformed JSON")


def test_ce_datacontenttype_beside_content_type_is_refused():
    headers, body = conversion.to_binary(sdk_event())
    read = event_from_http_binary(raw_headers(headers | {"ce-datacontenttype": "application/json"}), body)
    assert isinstance(read, Framed) and [p.path for p in read.problems] == ["datacontenttype"]


def test_a_binary_request_without_content_type_carries_json_data():
    headers, body = conversion.to_binary(sdk_event())  # the SDK sends no Content-Type without datacontenttype
    assert "content-type" not in headers
    read = event_from_http_binary(raw_headers(headers), body)
    assert isinstance(read, dict) and "datacontenttype" not in read
    assert [c.id for c in sort([read]).canonical] == ["ev-npo-a-1-received"]


# --- extensions and datacontenttype at the door --------------------------------------------------


def test_an_unknown_extension_is_ignored_named_and_never_published():
    raw = contact_received("npo-a", 1, caller="080-7777-0001") | {"myext": "anything", "traceparent":
                                                                 "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    sorted_ = sort([raw])
    [canonical] = sorted_.canonical
    published = decode_value(canonical.value)
    assert "myext" not in published and published["traceparent"].startswith("00-0af76519")
    assert sorted_.ignored == {0: ("myext",)}


@pytest.mark.parametrize("name", ["myExt", "my_ext", "my-ext", "a" * 21, "", "09012345678"])
def test_a_name_that_is_no_cloudevents_attribute_name_is_still_refused(name):
    event, ignored, problems = at_the_door(contact_received("npo-a", 1) | {name: "x"})
    assert ignored == () and len(problems) == 1
    assert "09012345678" not in problems[0].path + problems[0].message
    assert name not in event


def test_twenty_characters_are_a_valid_name():
    _, ignored, problems = at_the_door(contact_received("npo-a", 1) | {"a" * 20: "x"})
    assert ignored == ("a" * 20,) and problems == ()


def test_data_base64_is_refused_saying_tsunagus_data_is_json():
    _, _, [problem] = at_the_door(contact_received("npo-a", 1) | {"data_base64": "e30="})
    assert problem.path == "data_base64" and "JSON" in problem.message


@pytest.mark.parametrize("declared", ["application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
                                      "application/vnd.tsunagu+json"])
def test_a_json_datacontenttype_with_parameters_is_published_as_plain_application_json(declared):
    [canonical] = sort([contact_received("npo-a", 1, caller="080-7777-0001") | {"datacontenttype": declared}]).canonical
    assert decode_value(canonical.value)["datacontenttype"] == "application/json"


@pytest.mark.parametrize("declared", ["text/plain", "application/json; charset=iso-8859-1", "application/xml"])
def test_a_datacontenttype_that_is_not_json_is_refused(declared):
    [outcome] = sort([contact_received("npo-a", 1) | {"datacontenttype": declared}]).refused
    assert [p.path for p in outcome.problems] == ["datacontenttype"] and outcome.id == "ev-npo-a-1-received"


def test_a_refused_event_keeps_the_contracts_own_problems_beside_the_doors():
    raw = contact_received("npo-a", 1) | {"Bad": "x"}
    raw["data"]["channel"] = "pigeon"
    [outcome] = sort([raw]).refused
    assert [p.path for p in outcome.problems] == ["Bad", "data.channel"]


# --- Kafka ----------------------------------------------------------------------------------------


def test_the_sdks_binary_record_reads_with_the_record_key_as_partitionkey():
    message = sdk_kafka.to_binary(sdk_event(datacontenttype="application/json", partitionkey="c-npo-a-1"))
    assert message.key == "c-npo-a-1" and "ce_partitionkey" not in message.headers
    read = event_from_kafka(list(message.headers.items()), message.key.encode(), message.value)
    assert isinstance(read, dict)
    assert read["partitionkey"] == "c-npo-a-1" and read["datacontenttype"] == "application/json"
    assert [c.id for c in sort([read]).canonical] == ["ev-npo-a-1-received"]


def test_a_ce_partitionkey_header_wins_over_the_record_key():
    # the core API keeps the attribute in a header too, as the binding's key mapping says it must
    message = core_kafka.to_binary_event(core_event(contact_received("npo-a", 1), partitionkey="from-header",
                                                    datacontenttype="application/json"))
    assert message.headers["ce_partitionkey"] == b"from-header"
    read = event_from_kafka(list(message.headers.items()), b"from-key", message.value)
    assert isinstance(read, dict) and read["partitionkey"] == "from-header"


def test_kafka_header_values_are_not_percent_decoded():
    headers = [("ce_specversion", b"1.0"), ("ce_comment", b"50%25"), ("content-type", b"application/json")]
    read = event_from_kafka(headers, None, b"{}")
    assert isinstance(read, dict) and read["comment"] == "50%25"


def test_the_sdks_structured_record_reads_as_today():
    message = sdk_kafka.to_structured(sdk_event())
    read = event_from_kafka(list(message.headers.items()), None, message.value)
    assert isinstance(read, dict) and read["id"] == "ev-npo-a-1-received"


@pytest.mark.parametrize("content_type", [b"application/cloudevents-batch+json", b"application/cloudevents+avro"])
def test_another_cloudevents_format_on_kafka_is_unparsed_with_the_reason(content_type):
    read = event_from_kafka([("content-type", content_type)], None, b"[]")
    assert isinstance(read, Unparsed) and "binary mode" in read.message


def test_a_binary_record_with_bytes_that_are_not_utf8_is_refused_not_crashed():
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"\xff\xfe"), ("content-type", b"application/json")]
    read = event_from_kafka(headers, b"\xff", b"{}")
    assert isinstance(read, Framed)
    assert sorted(p.path for p in read.problems) == ["id", "partitionkey"]


def test_a_binary_record_without_a_value_has_no_data():
    read = event_from_kafka([("ce_specversion", b"1.0"), ("content-type", b"application/json")], None, None)
    assert isinstance(read, Framed) and [p.path for p in read.problems] == ["data"]
