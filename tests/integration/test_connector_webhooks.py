"""The webhook connectors end to end: the receiver runs in-process, signed callbacks are posted to it
as Twilio and LINE would, and it forwards to the real intake (own process, real broker and
PostgreSQL). The events land on the canonical topic, a second delivery of everything stores nothing
new, and no caller number or LINE user id reaches any topic."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from tests.support import read_topic, values
from tsunagu.topics import ALL
from tsunagu_connectors import line, twilio
from tsunagu_connectors.webhooks import State, intake_sender

pytestmark = pytest.mark.integration

SAMPLES = Path(twilio.__file__).parent / "samples"
TOKEN = "twilio-auth-token-for-tests"
SECRET = "line-channel-secret-for-tests"


async def everything_on_every_topic(intake, contact_records: list) -> bytes:
    """Every record's key, headers and value on every topic, as one blob: the contact topic's records as
    read (after waiting for them), and whatever the others hold."""
    records = list(contact_records)
    for short in ALL:
        if short != "contact.events":
            records += await read_topic(intake.bootstrap, intake.topic(short), expect=0, timeout=0.5)
    return b"".join((r.key or b"") + b"".join(v for _, v in r.headers or []) + r.value for r in records)


async def post_twilio(client: httpx.AsyncClient, path: Path, signature: str | None = None) -> httpx.Response:
    body = path.read_bytes()
    params = parse_qsl(body.decode(), keep_blank_values=True)
    signed = signature or twilio.signature(TOKEN, "https://hooks.npo-a.example/twilio/taskrouter", params)
    return await client.post("/twilio/taskrouter", content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signed})


async def post_line(client: httpx.AsyncClient, path: Path, signature: str | None = None) -> httpx.Response:
    body = path.read_bytes()
    return await client.post("/line/webhook", content=body, headers={
        "Content-Type": "application/json", "X-Line-Signature": signature or line.signature(SECRET, body)})


def receiver_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver.test", timeout=60)


async def test_twilio_callbacks_arrive_once_on_the_contact_topic_and_no_caller_number_leaks(intake, tmp_path):
    config = twilio.load_config(SAMPLES / "twilio" / "mapping.yaml")
    # a back-fill key: the samples are dated 2022
    send = intake_sender(intake.url, intake.keys["npo-a"])
    app = twilio.create_app(config, "npo-a", TOKEN, send, State(tmp_path / "twilio.sqlite3"))
    callbacks = sorted((SAMPLES / "twilio").glob("*.form"))
    async with receiver_client(app) as client:
        forged = await post_twilio(client, callbacks[0], signature="0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        assert forged.status_code == 403
        first = [await post_twilio(client, path) for path in callbacks]
        assert [a.status_code for a in first] == [200] * len(callbacks), [a.text for a in first]
        assert sum(a.json()["accepted"] for a in first) == 6
        again = [await post_twilio(client, path) for path in callbacks]
        assert [a.status_code for a in again] == [200] * len(callbacks)
        assert sum(a.json()["accepted"] for a in again) == 0 and sum(a.json()["duplicate"] for a in again) == 6

    records = await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=7, timeout=5)
    published = values(records)
    assert len(published) == 6  # nothing of the second delivery, nothing of the forged one
    kinds = sorted(e["type"].split(".")[3] for e in published)
    assert kinds == ["abandoned", "answered", "ended", "field_selected", "received", "received"]
    assert all(e["source"] == "/partners/npo-a/twilio" for e in published)
    received = [e["data"] for e in published if e["type"].endswith("contact.received.v1")]
    assert sorted(d.get("caller_key") is not None for d in received) == [False, True]  # one withheld
    blob = await everything_on_every_topic(intake, records)
    assert b"9012345678" not in blob and b"caller_id" not in blob and b"WT0000" not in blob


async def test_line_webhooks_open_contacts_once_and_no_user_id_or_text_leaks(intake, tmp_path):
    config = line.load_config(SAMPLES / "line" / "mapping.yaml")
    state = State(tmp_path / "line.sqlite3")
    app = line.create_app(config, "npo-a", SECRET, intake_sender(intake.url, intake.keys["npo-a"]), state)
    bodies = sorted((SAMPLES / "line").glob("*.json"))
    async with receiver_client(app) as client:
        assert (await post_line(client, bodies[1], signature="bm90IHRoZSBzaWduYXR1cmU=")).status_code == 403
        first = [await post_line(client, path) for path in bodies]
        assert [a.status_code for a in first] == [200] * len(bodies), [a.text for a in first]
        # 01 opens a contact; 02 resends its opening message (duplicate); 04 opens a second one
        assert [a.json()["accepted"] for a in first] == [0, 2, 0, 0, 2, 0]
        assert first[2].json()["duplicate"] == 2
    # the receiver restarts with its state file: LINE's redeliveries are duplicates, no new contact
    restarted = line.create_app(config, "npo-a", SECRET, intake_sender(intake.url, intake.keys["npo-a"]),
                                State(tmp_path / "line.sqlite3"))
    async with receiver_client(restarted) as client:
        again = [await post_line(client, path) for path in bodies[:3]]
        assert [a.status_code for a in again] == [200] * 3
        assert sum(a.json()["accepted"] for a in again) == 0

    records = await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=5, timeout=5)
    published = values(records)
    assert len(published) == 4
    received = [e for e in published if e["type"].endswith("contact.received.v1")]
    assert len({e["subject"] for e in received}) == 2
    assert all(e["data"]["channel"] == "chat" and e["data"].get("caller_key") is None for e in received)
    blob = await everything_on_every_topic(intake, records)
    assert b"U4af4980629" not in blob and "話を聞いて".encode() not in blob
