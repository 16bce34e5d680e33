"""The published contract is exactly as strict as intake: what intake refuses, the JSON Schemas refuse
(checked with Python's jsonschema and with ajv in strict mode), what intake takes they take, and every rule
only code can check is one schemas/README.md lists."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from schemas import EVENT_TYPES, Channel, EventInvalid, validate_event
from schemas.generate import ANNOTATION_KEYWORDS, ASYNCAPI_FILE, ROOT, SCHEMA_FORMAT, schema_file
from services.intake.domain import CallerIdInvalid, normalise_caller

REPO = ROOT.parent
CONTRACT = REPO / "tests" / "contract"
SCHEMA_DIR = ROOT / "jsonschema"
WHEN = "2022-07-07T10:00:00+09:00"
CONSENT = {"given": True, "scope": ["municipality"], "recorded_by": "staff-7", "recorded_at": WHEN}
CHANGE = {"referral_id": "ref-1", "contact_id": "c-1", "receiver_type": "municipality", "deadline": WHEN}

GOOD: dict[str, dict[str, Any]] = {
    "contact.received": {"contact_id": "c-1", "channel": "phone", "caller_key": "a" * 64, "prefecture": "13",
                         "municipality": "131016"},
    "contact.field_selected": {"contact_id": "c-1", "field": "loneliness", "menu_position": 9},
    "contact.answered": {"contact_id": "c-1", "desk_id": "d-1", "organisation_id": "npo-1", "wait_seconds": 12.5},
    "contact.abandoned": {"contact_id": "c-1", "stage": "queue", "wait_seconds": 40},
    "contact.ended": {"contact_id": "c-1", "talk_seconds": 600.0, "desk_id": None},
    "contact.triaged": {"contact_id": "c-1", "risk": "high", "instrument": "line-screen-v1"},
    "contact.transferred": {"contact_id": "c-1", "from_desk_id": "d-1", "to_field": "suicidal", "to_channel": "phone"},
    "platform.heartbeat": {"platform_id": "c-1"},
    "routing.assigned": {"contact_id": "c-1", "desk_id": "d-1", "organisation_id": "npo-1", "field": "suicidal",
                         "reason": "free_line", "queue_position": None},
    "routing.queued": {"contact_id": "c-1", "field": "hardship", "queue_position": 3, "priority": 0},
    "routing.overflowed": {"contact_id": "c-1", "field": "hardship", "waited_seconds": 90.0, "tier": 2},
    "routing.withdrawn": {"contact_id": "c-1", "desk_id": "d-1", "organisation_id": "npo-1", "field": "hardship",
                          "reason": "ring_timeout", "ring_seconds": 20.0},
    "consultation.recorded": {"contact_id": "c-1", "organisation_id": "npo-1", "categories": ["work", "school"],
                              "age_band": "age50s", "risk": "medium", "referral_needed": True,
                              "municipality": "131016", "consent": CONSENT, "talk_seconds": 1200.0},
    "referral.requested": {"referral_id": "ref-1", "contact_id": "c-1", "organisation_id": "npo-1",
                           "municipality": "131016", "urgency": "standard",
                           "legal_basis": {"kind": "consent", "consent": CONSENT}},
    **{t.short: CHANGE for t in EVENT_TYPES.values() if t.short.startswith("referral.") and t.producer == "referral"},
}
GOOD_INGRESS_CONTACT = {"contact_id": "c-1", "channel": "phone", "caller_id": "090-1234-5678", "region": "131016"}


def event(short: str, form: str = "canonical", **attributes: Any) -> dict[str, Any]:
    etype = EVENT_TYPES[f"jp.tsunagu.{short}.v1"]
    data = GOOD_INGRESS_CONTACT if form == "ingress" and short == "contact.received" else GOOD[short]
    raw: dict[str, Any] = {
        "specversion": "1.0", "id": "evt-0001", "source": "/partners/npo-1/telephony", "type": etype.type,
        "time": WHEN, "subject": data[etype.key_field], "data": copy.deepcopy(data),
    }
    raw.update(attributes)
    return raw


def with_data(short: str, form: str = "canonical", **changes: Any) -> dict[str, Any]:
    raw = event(short, form)
    raw["data"].update(changes)
    return raw


def without(raw: dict[str, Any], *path: str) -> dict[str, Any]:
    target = raw
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return raw


def nested(raw: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    target = raw
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return raw


# --- what intake refuses: (name, short type, form, the event) --------------------------------------

Case = tuple[str, str, str, dict[str, Any]]
_RC, _FS, _CR, _RR = "contact.received", "contact.field_selected", "consultation.recorded", "referral.requested"

REFUSED: list[Case] = [
    # contact.received as partners send it
    ("region 99", _RC, "ingress", with_data(_RC, "ingress", region="99")),
    ("region 00", _RC, "ingress", with_data(_RC, "ingress", region="00")),
    ("region of one digit", _RC, "ingress", with_data(_RC, "ingress", region="1")),
    ("region of five digits", _RC, "ingress", with_data(_RC, "ingress", region="13101")),
    ("region in prefecture 48", _RC, "ingress", with_data(_RC, "ingress", region="481234")),
    ("region in letters", _RC, "ingress", with_data(_RC, "ingress", region="tokyo")),
    ("region as a number", _RC, "ingress", with_data(_RC, "ingress", region=13)),
    ("caller_id abc on the phone", _RC, "ingress", with_data(_RC, "ingress", caller_id="abc")),
    ("caller_id of two digits on the phone", _RC, "ingress", with_data(_RC, "ingress", caller_id="12")),
    ("caller_id of spaces in a chat", _RC, "ingress", with_data(_RC, "ingress", channel="chat", caller_id="   ")),
    ("caller_id of ideographic spaces on SNS", _RC, "ingress",
     with_data(_RC, "ingress", channel="sns", caller_id="\u3000\u3000")),
    ("empty caller_id", _RC, "ingress", with_data(_RC, "ingress", caller_id="")),
    ("caller_id too long", _RC, "ingress", with_data(_RC, "ingress", channel="chat", caller_id="u" * 65)),
    ("channel fax", _RC, "ingress", with_data(_RC, "ingress", channel="fax")),
    ("a name beside the caller", _RC, "ingress", with_data(_RC, "ingress", name="someone")),
    ("canonical fields sent on the way in", _RC, "ingress", with_data(_RC, "ingress", prefecture="13")),
    # contact.received as intake publishes it
    ("prefecture other than the municipality's", _RC, "canonical", with_data(_RC, prefecture="14")),
    ("municipality without prefecture", _RC, "canonical", with_data(_RC, prefecture=None)),
    ("municipality in prefecture 48", _RC, "canonical", with_data(_RC, prefecture="48", municipality="481234")),
    ("a prefecture's own row as municipality", _RC, "canonical", with_data(_RC, municipality="130001")),
    ("caller_key not 64 hex", _RC, "canonical", with_data(_RC, caller_key="A" * 64)),
    ("raw caller_id published", _RC, "canonical", with_data(_RC, caller_id="09012345678")),
    # codes and numbers
    ("a bad field code", _FS, "canonical", with_data(_FS, field="astrology")),
    ("menu position 10", _FS, "canonical", with_data(_FS, menu_position=10)),
    ("menu position as text", _FS, "canonical", with_data(_FS, menu_position="3")),
    ("menu position true", _FS, "canonical", with_data(_FS, menu_position=True)),
    ("menu position 2.5", _FS, "canonical", with_data(_FS, menu_position=2.5)),
    ("negative wait", "contact.answered", "canonical", with_data("contact.answered", wait_seconds=-1)),
    ("wait as text", "contact.answered", "canonical", with_data("contact.answered", wait_seconds="12")),
    ("wait true", "contact.abandoned", "canonical", with_data("contact.abandoned", wait_seconds=True)),
    ("abandoned while talking", "contact.abandoned", "canonical", with_data("contact.abandoned", stage="talk")),
    ("desk id with a space", "contact.answered", "canonical", with_data("contact.answered", desk_id="d 1")),
    ("empty contact id", "contact.ended", "canonical", with_data("contact.ended", contact_id="", desk_id="d")),
    ("contact id of 101 characters", "contact.ended", "canonical",
     with_data("contact.ended", contact_id="c" * 101)),
    ("a transfer to nowhere", "contact.transferred", "canonical",
     with_data("contact.transferred", to_field=None, to_channel=None)),
    ("a triage in words", "contact.triaged", "canonical", with_data("contact.triaged", risk="seems very upset")),
    ("a withdrawal for no known reason", "routing.withdrawn", "canonical",
     with_data("routing.withdrawn", reason="bored")),
    ("seat 0", "routing.assigned", "canonical", with_data("routing.assigned", seat=0)),
    ("queue position 0", "routing.queued", "canonical", with_data("routing.queued", queue_position=0)),
    ("tier 1", "routing.overflowed", "canonical", with_data("routing.overflowed", tier=1)),
    ("an unknown routing reason", "routing.assigned", "canonical", with_data("routing.assigned", reason="luck")),
    ("no categories", _CR, "canonical", with_data(_CR, categories=[])),
    ("a category twice", _CR, "canonical", with_data(_CR, categories=["work", "work"])),
    ("an unknown category", _CR, "canonical", with_data(_CR, categories=["dreams"])),
    ("an unknown age band", _CR, "canonical", with_data(_CR, age_band="teen")),
    ("referral_needed as text", _CR, "canonical", with_data(_CR, referral_needed="yes")),
    ("municipality 99", _CR, "canonical", with_data(_CR, municipality="99")),
    ("municipality of prefecture 00", _CR, "canonical", with_data(_CR, municipality="001234")),
    ("notes in a consultation", _CR, "canonical", with_data(_CR, notes="話を聞いてほしい")),
    ("consent scope twice", _CR, "canonical",
     with_data(_CR, consent={**CONSENT, "scope": ["municipality", "municipality"]})),
    ("consent recorded without offset", _CR, "canonical",
     with_data(_CR, consent={**CONSENT, "recorded_at": "2022-07-07T10:00:00"})),
    ("consent as legal basis without consent", _RR, "canonical",
     with_data(_RR, legal_basis={"kind": "consent"})),
    ("consent as legal basis not given", _RR, "canonical",
     with_data(_RR, legal_basis={"kind": "consent", "consent": {**CONSENT, "given": False}})),
    ("consent as legal basis, null", _RR, "canonical",
     with_data(_RR, legal_basis={"kind": "consent", "consent": None})),
    ("support meeting without reference", _RR, "canonical",
     with_data(_RR, legal_basis={"kind": "support_meeting"})),
    ("law with a null reference", _RR, "canonical", with_data(_RR, legal_basis={"kind": "law", "reference": None})),
    ("an unknown urgency", _RR, "canonical", with_data(_RR, urgency="asap")),
    ("a reason in words", "referral.rejected", "canonical",
     with_data("referral.rejected", reason="no staff this week")),
    ("escalations -1", "referral.escalated", "canonical", with_data("referral.escalated", escalations=-1)),
    ("deadline without offset", "referral.created", "canonical",
     with_data("referral.created", deadline="2022-07-08T10:00:00")),
    # the envelope
    ("specversion 0.3", _FS, "canonical", event(_FS, specversion="0.3")),
    ("id with a space", _FS, "canonical", event(_FS, id="evt 1")),
    ("empty id", _FS, "canonical", event(_FS, id="")),
    ("id of 201 characters", _FS, "canonical", event(_FS, id="e" * 201)),
    ("id with a control character", _FS, "canonical", event(_FS, id="evt\x07")),
    ("source with a space", _FS, "canonical", event(_FS, source="/partners/npo 1/x")),
    ("another type's data", _FS, "canonical", event(_FS, type="jp.tsunagu.contact.ended.v1")),
    ("time in words", _FS, "canonical", event(_FS, time="yesterday")),
    ("time without offset", _FS, "canonical", event(_FS, time="2022-07-07T10:00:00")),
    ("time as a Unix timestamp", _FS, "canonical", event(_FS, time=1657155600)),
    ("time on the 30th of February", _FS, "canonical", event(_FS, time="2022-02-30T10:00:00+09:00")),
    ("subject with a space", _FS, "canonical", event(_FS, subject="c 1")),
    ("partitionkey with a space", _FS, "canonical", event(_FS, partitionkey="c 1")),
    ("dataschema with a space", _FS, "canonical", event(_FS, dataschema="https://example.org/a b")),
    ("traceparent malformed", _FS, "canonical", event(_FS, traceparent="00-zz")),
    ("tracestate with a control character", _FS, "canonical", event(_FS, tracestate="a=\x01")),
    ("datacontenttype text", _FS, "canonical", event(_FS, datacontenttype="text/plain")),
    ("an extension on a canonical event", _FS, "canonical", event(_FS, comexampleext="1")),
    ("no data", _FS, "canonical", without(event(_FS), "data")),
    ("no time", _FS, "canonical", without(event(_FS), "time")),
    ("data not an object", _FS, "canonical", event(_FS, data=[1])),
    ("a missing data field", _FS, "canonical", without(event(_FS), "data", "field")),
    ("a nested unknown field", _RR, "canonical", nested(event(_RR), "x", "data", "legal_basis", "note")),
]

# What intake refuses at its door before the contract's validation, said by the ingress schemas too.
REFUSED_AT_THE_DOOR: list[tuple[str, str, dict[str, Any]]] = [
    ("an extension in capitals", _FS, event(_FS, comExampleExt="1")),
    ("an extension with an underscore", _FS, event(_FS, com_example="1")),
    ("an extension of 21 characters", _FS, event(_FS, **{"a" * 21: "1"})),
    ("data_base64", _FS, event(_FS, data_base64="AAAA")),
    ("datacontenttype text", _FS, event(_FS, datacontenttype="text/plain")),
    ("a JSON datacontenttype in Latin-1", _FS, event(_FS, datacontenttype="application/json; charset=latin-1")),
    ("a source outside /partners/", _FS, event(_FS, source="/tsunagu/routing")),
    ("a source that is only /partners/", _FS, event(_FS, source="/partners/")),
    ("a charset without a value", _FS, event(_FS, datacontenttype="application/json;charset")),
    ("a charset that ends in Latin-1", _FS, event(_FS, datacontenttype="application/json;charset=utf-8;charset=l1")),
    ("a +json type with more after it", _FS, event(_FS, datacontenttype="application/ld+json x")),
]
ACCEPTED_AT_THE_DOOR: list[tuple[str, str, dict[str, Any]]] = [
    ("an extension", _FS, event(_FS, comexampleext="anything")),
    ("an extension of 20 characters holding a number", _FS, event(_FS, **{"a1" * 10: 7})),
    ("an extension holding a boolean", "contact.received", event("contact.received", "ingress", sampled=True)),
    ("a JSON datacontenttype with a charset", _FS, event(_FS, datacontenttype="application/json; charset=UTF-8")),
    ("a +json datacontenttype", _FS, event(_FS, datacontenttype="application/cloudevents+json")),
    ("a JSON datacontenttype in capitals, quoted charset", _FS,
     event(_FS, datacontenttype=' APPLICATION/JSON ;\ncharset = "UTF8" ')),
    ("a charset that ends in UTF-8", _FS, event(_FS, datacontenttype="application/json;charset=l1;charset=utf-8")),
]

# Refused by intake in code, taken by the schemas: each is a rule schemas/README.md lists (the words given).
CODE_ONLY: list[tuple[str, str, str, dict[str, Any], str]] = [
    ("a phone number in the id", _FS, "canonical", event(_FS, id="call-090-1234-5678"), "phone number"),
    ("a phone number in a data id", "contact.ended", "canonical",
     with_data("contact.ended", desk_id="desk-090.1234.5678"), "phone number"),
    ("a wrong check digit", _CR, "canonical", with_data(_CR, municipality="131017"), "check digit"),
    ("a municipality not in the list", _CR, "canonical", with_data(_CR, municipality="139998"),
     "official list"),
    ("a region with a wrong check digit", _RC, "ingress", with_data(_RC, "ingress", region="131017"),
     "check digit"),
    ("subject other than the key", _FS, "canonical", event(_FS, subject="c-2"), "subject"),
    ("a whole number written 3.0", _FS, "canonical", with_data(_FS, menu_position=3.0), "3.0"),
    ("a phone caller_id libphonenumber cannot read", _RC, "ingress",
     with_data(_RC, "ingress", caller_id="123"), "libphonenumber"),
]


# --- the validators -------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    # jsonschema checks date-time only with the optional rfc3339-validator package, which the project
    # does not install: RFC 3339's date-time, its leap second aside, is checked here.
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


@cache
def schema_validator(short: str, form: str) -> Draft202012Validator:
    etype = EVENT_TYPES[f"jp.tsunagu.{short}.v1"]
    schema = json.loads((SCHEMA_DIR / schema_file(etype, form)).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


def schema_takes(short: str, form: str, raw: dict[str, Any]) -> bool:
    return schema_validator(short, form).is_valid(raw)


def intake_takes(raw: dict[str, Any], form: str) -> bool:
    """The contract's validation, and for a partner's contact.received intake's reading of the caller."""
    try:
        validated = validate_event(raw, form=form)  # type: ignore[arg-type]
        caller_id = getattr(validated.data, "caller_id", None)
        if form == "ingress" and caller_id is not None:
            normalise_caller(validated.data.channel, caller_id)  # type: ignore[attr-defined]
    except (EventInvalid, CallerIdInvalid):
        return False
    return True


def ingress_forms() -> list[tuple[str, str]]:
    return [(t.short, "ingress") for t in EVENT_TYPES.values() if t.producer == "partner"]


def all_forms() -> list[tuple[str, str]]:
    return [(t.short, "canonical") for t in EVENT_TYPES.values()] + ingress_forms()


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("short", "form"), all_forms())
def test_a_good_event_of_every_type_passes_intake_and_its_schema(short, form):
    raw = event(short, form)
    assert intake_takes(raw, form)
    assert schema_takes(short, form, raw)


@pytest.mark.parametrize(("name", "short", "form", "raw"), REFUSED, ids=[c[0] for c in REFUSED])
def test_what_intake_refuses_the_published_schema_refuses(name, short, form, raw):
    assert not intake_takes(raw, form), f"intake takes {name}: the case is wrong"
    assert not schema_takes(short, form, raw), f"the published schema takes {name}"


OPEN_ON_THE_WAY_IN = {"an extension on a canonical event"}
PARTNER_CASES = [c for c in REFUSED if c[2] == "canonical" and c[1] != _RC and c[0] not in OPEN_ON_THE_WAY_IN
                 and EVENT_TYPES[f"jp.tsunagu.{c[1]}.v1"].producer == "partner"]


@pytest.mark.parametrize(("name", "short", "form", "raw"), PARTNER_CASES, ids=[c[0] for c in PARTNER_CASES])
def test_an_ingress_schema_refuses_what_its_canonical_schema_refuses_but_extensions(name, short, form, raw):
    # Partners validate against the ingress schemas: but for contact.received's data and the open
    # envelope they are the canonical ones, so the data and attribute rules hold there too.
    assert not schema_takes(short, "ingress", raw), f"the ingress schema takes {name}"


@pytest.mark.parametrize(("name", "short", "raw"), REFUSED_AT_THE_DOOR, ids=[c[0] for c in REFUSED_AT_THE_DOOR])
def test_what_intake_refuses_at_its_door_the_ingress_schema_refuses(name, short, raw):
    assert not schema_takes(short, "ingress", raw)


@pytest.mark.parametrize(("name", "short", "raw"), ACCEPTED_AT_THE_DOOR, ids=[c[0] for c in ACCEPTED_AT_THE_DOOR])
def test_extensions_are_allowed_on_the_way_in_and_nowhere_else(name, short, raw):
    assert schema_takes(short, "ingress", raw)
    assert not schema_takes(short, "canonical", raw)


@pytest.mark.parametrize(("name", "short", "form", "raw", "words"), CODE_ONLY, ids=[c[0] for c in CODE_ONLY])
def test_what_only_code_checks_is_listed_in_the_contract_docs(name, short, form, raw, words):
    assert not intake_takes(raw, form), f"intake takes {name}: the case is wrong"
    assert schema_takes(short, form, raw), f"the schema now says it: move {name!r} out of the code-only list"
    assert words in cannot_say_section(), f"schemas/README.md does not list {name!r}"


def cannot_say_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## What the schemas cannot say / スキーマで表せない検査")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


_PHONE_CHARS = st.sampled_from(list("0123456789０１２３４５６７８９٠١٢+-() .abcxyzABC#*\u3000"))


@settings(max_examples=400, deadline=None)
@given(st.text(_PHONE_CHARS, min_size=1, max_size=20), st.sampled_from(list(Channel)))
@example("0120-ABC-DEF", Channel.phone)
@example("+683 1234", Channel.phone)
@example("+6832223", Channel.phone)
@example(" x ", Channel.chat)
def test_a_caller_id_intake_can_read_is_never_refused_by_the_schema(caller_id, channel):
    raw = with_data(_RC, "ingress", channel=channel.value, caller_id=caller_id)
    assert intake_takes(raw, "ingress") <= schema_takes(_RC, "ingress", raw)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"\A[0-9]{1,7}\Z") | st.sampled_from(["01", "47", "130001", "011002", "473821"]))
def test_a_region_intake_takes_the_schema_takes(region):
    raw = with_data(_RC, "ingress", region=region)
    assert intake_takes(raw, "ingress") <= schema_takes(_RC, "ingress", raw)


_MEDIA_TOKENS = st.sampled_from(["application/json", "a/b+json", "text/plain", "+JSON", ";", " ", "\t", "\n",
                                  "\u3000", "=", '"', "charset", "CharSet", "utf-8", "UTF8", "latin-1", "q=1", "/"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_MEDIA_TOKENS, min_size=1, max_size=7).map("".join))
def test_the_ingress_schema_reads_a_datacontenttype_as_intake_does(declared):
    from services.intake.domain import is_json_media  # intake's door (CloudEvents extensions and media types)

    raw = event(_FS, datacontenttype=declared)
    assert schema_takes(_FS, "ingress", raw) == is_json_media(declared)


def test_the_asyncapi_document_names_the_dialect_of_its_schemas():
    doc = yaml.safe_load((ROOT / ASYNCAPI_FILE).read_text(encoding="utf-8"))
    assert doc["asyncapi"] == "3.0.0"
    for name, message in doc["components"]["messages"].items():
        payload = message["payload"]
        assert payload["schemaFormat"] == SCHEMA_FORMAT == "application/schema+json;version=2020-12", name
        target = ROOT / payload["schema"]["$ref"]
        assert json.loads(target.read_text(encoding="utf-8"))["$schema"].endswith("/draft/2020-12/schema")


def test_the_ingress_channel_carries_only_ingress_schemas_and_the_others_only_canonical_ones():
    doc = yaml.safe_load((ROOT / ASYNCAPI_FILE).read_text(encoding="utf-8"))

    def refs(channel: str) -> set[str]:
        messages = doc["components"]["messages"]
        return {messages[m]["payload"]["schema"]["$ref"] for m in doc["channels"][channel]["messages"]}

    assert refs("intakeIngress") == {f"./jsonschema/{schema_file(t, 'ingress')}" for t in EVENT_TYPES.values()
                                     if t.producer == "partner"}
    assert all(r.endswith(".ingress.json") for r in refs("intakeIngress"))
    assert not any(r.endswith(".ingress.json") for c in doc["channels"] if c != "intakeIngress" for r in refs(c))


def test_the_canonical_envelope_is_closed():
    for t in EVENT_TYPES.values():
        schema = json.loads((SCHEMA_DIR / schema_file(t)).read_text(encoding="utf-8"))
        assert schema["additionalProperties"] is False and "patternProperties" not in schema, t.type


def test_the_annotations_ajv_must_be_told_of_are_the_ones_the_schemas_use():
    used = set()
    for path in SCHEMA_DIR.glob("*.json"):
        used |= set(re.findall(r'"(x-[a-z-]+)":', path.read_text(encoding="utf-8")))
    assert used == set(ANNOTATION_KEYWORDS)
    assert all(f'"{k}"' in (CONTRACT / "validate.mjs").read_text(encoding="utf-8") for k in ANNOTATION_KEYWORDS)


# --- ajv, strict ----------------------------------------------------------------------------------


def ajv_cases() -> list[dict[str, Any]]:
    """Every good event (valid), everything intake refuses that a schema can say (invalid), and what
    only code checks (valid to a schema): the same verdicts the Python validator must give."""
    file = {(t.short, form): schema_file(t, form) for t in EVENT_TYPES.values() for form in ("canonical", "ingress")}
    cases = [{"name": f"good {s} ({f})", "schema": file[s, f], "event": event(s, f), "valid": True}
             for s, f in all_forms()]
    cases += [{"name": n, "schema": file[s, f], "event": r, "valid": False} for n, s, f, r in REFUSED]
    cases += [{"name": n, "schema": file[s, "ingress"], "event": r, "valid": False} for n, s, r in REFUSED_AT_THE_DOOR]
    cases += [{"name": n, "schema": file[s, "ingress"], "event": r, "valid": True} for n, s, r in ACCEPTED_AT_THE_DOOR]
    cases += [{"name": n, "schema": file[s, f], "event": r, "valid": True} for n, s, f, r, _ in CODE_ONLY]
    return cases


def test_ajv_in_strict_mode_compiles_every_schema_and_agrees_on_every_case(tmp_path: Path):
    node = shutil.which("node")
    assert node is not None, "node (20 or later) is needed for the contract check: install Node.js"
    assert (CONTRACT / "node_modules" / "ajv").is_dir() and (CONTRACT / "node_modules" / "ajv-formats").is_dir(), (
        "tests/contract has no node_modules: run make contract-deps (cd tests/contract && npm ci)"
    )
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(ajv_cases(), ensure_ascii=False), encoding="utf-8")
    done = subprocess.run([node, str(CONTRACT / "validate.mjs"), str(cases)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, f"ajv (strict) disagrees:\n{done.stderr}{done.stdout}"
    assert f"{len(list(SCHEMA_DIR.glob('*.json')))} schemas compiled" in done.stdout
