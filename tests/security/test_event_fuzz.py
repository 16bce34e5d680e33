"""Arbitrary bytes and JSON against event parsing and against intake's Kafka door.

Whatever arrives: parsing answers a value or a per-event EventInvalid, never another exception;
problem messages never repeat a caller identifier; and through the real ingress consumer, every
record is either accepted (stored, published) or lands on the rejected topic with a reason and
without its payload — and a rejected one changes nothing.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import EventInvalid, decode_json, validate_event
from schemas.rejected import RejectedRecord
from services.intake.domain import Rules, Unparsed, sort_events
from tests.security.conftest import ORG, size
from tests.support import T0, contact_received, envelope, field_selected, read_topic
from tsunagu.speaker import Speaker

CALLER = "090-1357-2468"
CALLER_DIGITS = ("13572468", "1357-2468", "+819013572468")

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


def valid_events(org: str = ORG) -> list[dict]:
    consultation = envelope(org, "consultation.recorded", "e-consult", "c-1", {
        "contact_id": "c-1", "organisation_id": org, "categories": ["loneliness"], "age_band": "age30s",
        "risk": "medium", "referral_needed": False, "municipality": "131016"}, system="cases")
    return [contact_received(org, 1, caller=CALLER), contact_received(org, 2, caller=CALLER, channel="chat"),
            field_selected(org, 1), consultation]


@st.composite
def mutated_events(draw, org: str = ORG) -> dict:
    """A valid partner event with a few of its fields (never id or source) deleted, replaced or added."""
    event = copy.deepcopy(draw(st.sampled_from(valid_events(org))))
    for _ in range(draw(st.integers(1, 3))):
        target = event["data"] if draw(st.booleans()) and isinstance(event.get("data"), dict) else event
        keys = [k for k in target if k not in ("id", "source")]
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "add" or not keys:
            # sometimes a very long name: a problem's path must still fit a rejected record
            target[draw(st.text(min_size=1, max_size=10) | st.text(min_size=500, max_size=700))] = draw(json_values)
        elif action == "delete":
            del target[draw(st.sampled_from(keys))]
        else:
            target[draw(st.sampled_from(keys))] = draw(json_values)
    event["id"], event["source"] = str(event.get("id")), str(event.get("source"))
    return event


def no_caller_in(text: str) -> bool:
    return not any(d in text for d in CALLER_DIGITS)


# --- pure: the parsing every door shares ----------------------------------------------------------------------

MANY = size(ci=400, full=20_000)


@settings(max_examples=MANY, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_decode_to_json_or_to_a_per_event_error(raw):
    try:
        decode_json(raw)
    except EventInvalid as err:
        assert err.problems and err.problems[0].message.startswith("malformed JSON")


@settings(max_examples=MANY, deadline=None)
@given(json_values | mutated_events())
@pytest.mark.parametrize("form", ["ingress", "canonical"])
def test_any_json_validates_or_gets_problems_that_never_repeat_the_caller(form, raw):
    try:
        validate_event(raw, form=form)
    except EventInvalid as err:
        assert err.problems
        assert all(no_caller_in(f"{p.path} {p.message}") for p in err.problems)
        # what the rejected topic would carry must be a valid record
        RejectedRecord(rejected_at="2022-07-07T10:00:00+09:00", id=err.id, source=err.source, type=err.type,
                       problems=[{"path": p.path, "message": p.message} for p in err.problems],
                       payload_sha256="0" * 64, payload_bytes=1)


RULES = Rules(caller_secret=b"fuzz-secret-0123456789abcdef0123456789", max_event_bytes=2048)


@settings(max_examples=size(ci=200, full=5000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values | mutated_events() | st.builds(Unparsed, st.text(max_size=20))
                | st.sampled_from(valid_events()), max_size=12))
def test_sorting_any_request_gives_each_event_exactly_one_outcome_and_never_publishes_a_refused_one(raws):
    sorted_ = sort_events(raws, RULES, T0, caller=Speaker(ORG, backfill=True),
                          sizes=[len(json.dumps(r, default=str)) for r in raws])
    canonical = [c.index for c in sorted_.canonical]
    refused = [o.index for o in sorted_.refused + sorted_.foreign]
    assert sorted(canonical + refused + list(sorted_.copies)) == list(range(len(raws)))
    assert set(sorted_.copies.values()) <= set(canonical)  # a repeat fares as its first copy
    for c in sorted_.canonical:
        assert no_caller_in(c.value.decode())  # the raw caller identifier never leaves intake
    for o in sorted_.refused:
        assert all(no_caller_in(p.message) for p in o.problems)


# --- through the real ingress consumer ------------------------------------------------------------------------

ingress_payloads = st.lists(
    st.binary(min_size=0, max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | mutated_events().map(lambda e: json.dumps(e).encode())
    | st.sampled_from(valid_events()).map(lambda e: json.dumps(e).encode()),
    min_size=1, max_size=15,
)


def with_fresh_ids(payloads: list[bytes], run: str) -> list[bytes]:
    """Every decodable event gets an id of its own, so that no record is a duplicate of another."""
    out = []
    for i, p in enumerate(payloads):
        try:
            value = json.loads(p)
        except ValueError:
            out.append(p)
            continue
        if isinstance(value, dict) and "id" in value:
            value["id"] = f"fz-{run}-{i}"
            p = json.dumps(value).encode()
        out.append(p)
    return out


async def inbox_ids(conn: asyncpg.Connection, run: str) -> set[str]:
    return {r["id"] for r in await conn.fetch("SELECT id FROM intake.inbox WHERE id LIKE $1", f"fz-{run}-%")}


@settings(max_examples=size(ci=4, full=60), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(payloads=ingress_payloads)
async def test_whatever_reaches_the_ingress_topic_is_accepted_or_rejected_with_a_reason_and_nothing_else(
        secure_stack, payloads):
    run = uuid.uuid4().hex[:10]
    payloads = with_fresh_ids(payloads, run)
    sentinel = contact_received(ORG, 1)
    sentinel["id"] = f"fz-{run}-sentinel"
    ingress = secure_stack.topic("intake.ingress")
    conn = await asyncpg.connect(secure_stack.settings.database_url)
    producer = AIOKafkaProducer(bootstrap_servers=secure_stack.bootstrap)
    await producer.start()
    try:
        sent = [await producer.send_and_wait(ingress, p, key=b"fuzz") for p in payloads]
        await producer.send_and_wait(ingress, json.dumps(sentinel).encode(), key=b"fuzz")
        for _ in range(300):
            if sentinel["id"] in await inbox_ids(conn, run):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the consumer did not get past the fuzzed records")
        accepted = await inbox_ids(conn, run) - {sentinel["id"]}
        offsets = {(m.partition, m.offset): p for m, p in zip(sent, payloads, strict=True)}
        accepted_offsets = {o for o, p in offsets.items() if _id_of(p) in accepted}
        expect_rejected = set(offsets) - accepted_offsets

        rejected: dict[tuple[int, int], dict] = {}
        for _ in range(30):
            records = await read_topic(secure_stack.bootstrap, secure_stack.topic("intake.rejected"),
                                       expect=1, timeout=2)
            for r in records:
                record = json.loads(r.value)
                # referral refuses conflicting requests onto the same topic, from its own topic's offsets
                if record["topic"] == ingress and (record["partition"], record["offset"]) in offsets:
                    assert no_caller_in(r.value.decode()), "a rejected record must not carry the payload"
                    rejected.setdefault((record["partition"], record["offset"]), record)
            if set(rejected) >= expect_rejected:
                break
        # every record: exactly one of accepted or rejected
        assert set(rejected) == expect_rejected
        for offset, record in rejected.items():
            assert record["problems"] and all(p["message"] for p in record["problems"])
            assert record["payload_sha256"] == hashlib.sha256(offsets[offset]).hexdigest()
            assert record["payload_bytes"] == len(offsets[offset])
        # a rejected record changed nothing: only accepted events (and the sentinel) reach the canonical topics
        published: set[str] = set()
        for _ in range(30):
            for short in ("contact.events", "consultation.events"):
                records = await read_topic(secure_stack.bootstrap, secure_stack.topic(short), expect=1, timeout=1)
                published |= {i for i in (json.loads(r.value).get("id") for r in records)
                              if i and i.startswith(f"fz-{run}-")}
            if sentinel["id"] in published and published >= accepted:
                break
        assert published == accepted | {sentinel["id"]}
    finally:
        await producer.stop()
        await conn.close()


def _id_of(payload: bytes) -> str | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value.get("id") if isinstance(value, dict) else None
