"""The LINE Messaging API connector: X-Line-Signature, conversations opened by a person's message and
closed by silence or blocking, what it refuses, and the receiver's answers (intake faked here; the real
one in tests/integration/test_connector_webhooks.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from tsunagu_connectors import line
from tsunagu_connectors.client import IntakeRefused
from tsunagu_connectors.report import SendReport
from tsunagu_connectors.webhooks import State

SAMPLES = Path(line.__file__).parent / "samples" / "line"
CONFIG = line.load_config(SAMPLES / "mapping.yaml")
SECRET = "channel-secret-0123"
USER = "U4af4980629" + "0" * 22
T0 = 1657155600000  # 2022-07-07 10:00 JST


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def body(*events: dict) -> bytes:
    return json.dumps({"destination": "U" + "f" * 32, "events": list(events)}).encode()


def message(event_id: str, minutes: float, user: str = USER, text: str = "つらい", redelivery: bool = False) -> dict:
    return {"type": "message", "mode": "active", "timestamp": T0 + int(minutes * 60_000),
            "webhookEventId": event_id, "deliveryContext": {"isRedelivery": redelivery},
            "source": {"type": "user", "userId": user}, "replyToken": "r", "message": {"type": "text", "id": "1",
                                                                                   "text": text}}


def map_all(bodies: list[bytes], config: line.LineConfig = CONFIG, state: State | None = None) -> list[dict]:
    state = state or State()
    events: list[dict] = []
    for raw in bodies:
        mapped = line.map_webhook(raw, "npo-a", config, state)
        assert not mapped.unmapped, mapped.unmapped
        for keep in mapped.commit:
            keep()
        events += mapped.events
    return events


def short(e: dict) -> str:
    return e["type"].removeprefix("jp.tsunagu.").removesuffix(".v1")


# --- the signature ---------------------------------------------------------------------------------


def test_the_signature_is_base64_hmac_sha256_of_the_raw_body_with_the_channel_secret():
    # computed apart from the code: printf '%s' BODY | openssl dgst -sha256 -hmac SECRET -binary | base64
    raw = b'{"destination":"xxxxxxxxxx","events":[]}'
    assert line.signature(SECRET, raw) == "zkfvM5aGDIzehkaxYPJU3mBpdYXVQa0EZ3W38uDbgXo="
    assert line.signature_valid(SECRET, raw, "zkfvM5aGDIzehkaxYPJU3mBpdYXVQa0EZ3W38uDbgXo=")
    # the raw bytes are signed: the same JSON spelt otherwise is another body
    assert not line.signature_valid(SECRET, b'{"destination": "xxxxxxxxxx", "events": []}',
                                    "zkfvM5aGDIzehkaxYPJU3mBpdYXVQa0EZ3W38uDbgXo=")
    assert not line.signature_valid("another-secret", raw, "zkfvM5aGDIzehkaxYPJU3mBpdYXVQa0EZ3W38uDbgXo=")


# --- mapping ---------------------------------------------------------------------------------------


def test_a_persons_first_message_opens_a_chat_contact_without_a_caller():
    events = map_all([sample("01-message.json")])
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected"]
    received, chosen = events
    assert received["data"] == {"contact_id": received["subject"], "channel": "chat", "caller_id": None}
    assert chosen["data"] == {"contact_id": received["subject"], "field": "loneliness", "menu_position": 0}
    assert received["time"] == "2022-07-07T10:00:00+09:00" and received["source"] == "/partners/npo-a/line"


def test_the_samples_make_two_contacts_for_one_person_and_none_for_follows_groups_or_verification():
    events = map_all([sample(p.name) for p in sorted(SAMPLES.glob("*.json"))])
    received = [e for e in events if short(e) == "contact.received"]
    # the redelivered opening message is sent again with the same id (a duplicate at intake)
    assert len(received) == 3 and received[0] == received[1]
    assert received[2]["subject"] != received[0]["subject"]
    assert received[2]["time"] == "2022-07-07T10:50:00+09:00"


def test_messages_within_the_silence_belong_to_the_open_contact():
    events = map_all([body(message("e1", 0)), body(message("e2", 29)), body(message("e3", 58))])
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected"]


def test_a_message_after_the_silence_opens_a_new_contact():
    events = map_all([body(message("e1", 0)), body(message("e2", 20)), body(message("e3", 50.5))])
    received = [e for e in events if short(e) == "contact.received"]
    assert len(received) == 2 and received[0]["subject"] != received[1]["subject"]
    config = line.config_from({"silence_minutes": 60})
    assert len(map_all([body(message("e1", 0)), body(message("e2", 20)), body(message("e3", 50.5))], config)) == 1


def test_messages_of_one_body_are_taken_in_order_and_people_apart():
    other = "U" + "b" * 32
    events = map_all([body(message("e1", 0), message("e2", 1), message("e3", 2, user=other))])
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected"] * 2
    assert events[0]["subject"] != events[2]["subject"]


def test_blocking_the_account_closes_the_conversation():
    unfollow = {"type": "unfollow", "mode": "active", "timestamp": T0 + 120_000, "webhookEventId": "u1",
                "deliveryContext": {"isRedelivery": False}, "source": {"type": "user", "userId": USER}}
    events = map_all([body(message("e1", 0)), body(unfollow), body(message("e2", 3))])
    received = [e for e in events if short(e) == "contact.received"]
    assert len(received) == 2


def test_a_redelivered_event_has_the_same_ids_and_content():
    state = State()
    first = map_all([body(message("e1", 0))], state=state)
    map_all([body(message("e2", 5))], state=state)
    again = map_all([body(message("e1", 0, redelivery=True))], state=state)
    assert again == first


def test_a_conversation_is_kept_only_once_committed():
    state = State()
    uncommitted = line.map_webhook(body(message("e1", 0)), "npo-a", CONFIG, state)
    retried_as_new = line.map_webhook(body(message("e2", 1)), "npo-a", CONFIG, state)
    assert uncommitted.events and retried_as_new.events  # the first was never stored: the second opens
    assert uncommitted.events[0]["subject"] != retried_as_new.events[0]["subject"]


def test_no_user_id_and_no_message_text_leaves_the_connector():
    state = State()
    events = map_all([body(message("e1", 0, text="死にたい 090-1234-5678"))], state=state)
    text = json.dumps(events, ensure_ascii=False)
    assert USER not in text and "4af4980629" not in text and "死にたい" not in text and "1234-5678" not in text
    stored = state._db.execute("SELECT key, value FROM state").fetchall()
    assert stored and USER not in json.dumps(stored)


def test_ids_differ_between_partners_and_carry_no_line_value():
    a = map_all([body(message("01FZ74A0TDDPYRVKNK77XKC3ZR", 0))])
    b = line.map_webhook(body(message("01FZ74A0TDDPYRVKNK77XKC3ZR", 0)), "npo-b", CONFIG, State()).events
    assert a[0]["id"] != b[0]["id"] and a[0]["subject"] != b[0]["subject"]
    assert "01FZ74" not in a[0]["id"] and a[0]["id"].startswith("line-ev-")


def test_without_a_field_in_the_config_only_the_contact_is_sent():
    events = map_all([body(message("e1", 0))], line.config_from({"channel": "sns", "region": "13"}))
    assert [short(e) for e in events] == ["contact.received"]
    assert events[0]["data"]["channel"] == "sns" and events[0]["data"]["region"] == "13"


@pytest.mark.parametrize("event", [
    {"type": "follow", "timestamp": T0, "webhookEventId": "f1", "source": {"type": "user", "userId": USER}},
    {"type": "postback", "timestamp": T0, "webhookEventId": "p1", "source": {"type": "user", "userId": USER}},
    {**message("g1", 0), "source": {"type": "group", "groupId": "C" + "a" * 32, "userId": USER}},
    {**message("r1", 0), "source": {"type": "room", "roomId": "R" + "a" * 32}},
])
def test_events_that_are_not_a_persons_consultation_are_left_aside(event):
    mapped = line.map_webhook(body(event), "npo-a", CONFIG, State())
    assert (mapped.events, mapped.unmapped, mapped.ignored) == ([], [], 1)


@pytest.mark.parametrize(("raw", "where", "reason"), [
    (b"not json", "body", "the body is not JSON"),
    (b"\xff\xfe", "body", "the body is not JSON"),
    (b'{"destination": "x"}', "body", "the body has no events list"),
    (b"[]", "body", "the body has no events list"),
    (body("message"), "event 0", "not an event object"),
    (body({**message("e1", 0), "webhookEventId": None}), "event 0", "no webhookEventId"),
    (body({**message("e1", 0), "timestamp": "1657155600000"}), "event 0", "no valid timestamp"),
    (body({**message("e1", 0), "timestamp": True}), "event 0", "no valid timestamp"),
    (body({**message("e1", 0), "source": None}), "event 0", "no source"),
    (body({**message("e1", 0), "source": {"type": "user"}}), "event 0", "no source.userId"),
])
def test_a_body_that_cannot_be_mapped_says_where_and_why_without_its_content(raw, where, reason):
    mapped = line.map_webhook(raw, "npo-a", CONFIG, State())
    assert mapped.events == [] and mapped.commit == []
    (unmapped,) = mapped.unmapped
    assert (unmapped.where, unmapped.reason.split(" (")[0]) == (where, reason)
    assert USER not in str(unmapped) and "つらい" not in str(unmapped)


def test_one_unmappable_event_refuses_the_whole_body():
    state = State()
    mapped = line.map_webhook(body(message("e1", 0), {**message("e2", 1), "timestamp": None}), "npo-a", CONFIG, state)
    assert mapped.events == [] and [str(u) for u in mapped.unmapped] == ["event 1: no valid timestamp (milliseconds)"]


@pytest.mark.parametrize(("raw", "message_"), [
    ({"silence_minutes": 0}, "silence_minutes"),
    ({"silence_minutes": "soon"}, "silence_minutes"),
    ({"channel": "fax"}, "channel"),
    ({"field": "astrology"}, "field"),
    ({"menu_position": 10}, "menu_position"),
])
def test_a_config_with_unknown_codes_is_refused_at_start(raw, message_):
    with pytest.raises(ValueError, match=message_):
        line.config_from(raw)


# --- the receiver ----------------------------------------------------------------------------------


class FakeIntake:
    def __init__(self, status: str = "accepted", refuse: bool = False) -> None:
        self.sent: list[list[dict]] = []
        self.status = status
        self.refuse = refuse

    def __call__(self, events: list[dict]) -> SendReport:
        if self.refuse:
            raise IntakeRefused("intake did not take the batch")
        self.sent.append(events)
        report = SendReport()
        report.add([{"id": e["id"], "status": self.status, "problems": []} for e in events])
        return report


def post(client: TestClient, raw: bytes, signature: str | None = "sign"):
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        headers["X-Line-Signature"] = line.signature(SECRET, raw)
    elif signature is not None:
        headers["X-Line-Signature"] = signature
    return client.post("/line/webhook", content=raw, headers=headers)


def receiver(intake: FakeIntake, state: State | None = None) -> TestClient:
    return TestClient(line.create_app(CONFIG, "npo-a", SECRET, intake, state or State()))


def test_a_signed_webhook_is_answered_200_once_intake_stored_its_events():
    intake = FakeIntake()
    answer = post(receiver(intake), sample("01-message.json"))
    assert answer.status_code == 200 and answer.json()["accepted"] == 2
    assert [short(e) for e in intake.sent[0]] == ["contact.received", "contact.field_selected"]


def test_the_consoles_verification_request_is_answered_200_with_nothing_sent():
    intake = FakeIntake()
    assert post(receiver(intake), sample("00-verify.json")).status_code == 200 and intake.sent == []


@pytest.mark.parametrize(("signature", "status"), [(None, 401), ("", 401), ("bm90IGl0", 403)])
def test_an_unsigned_or_wrongly_signed_webhook_is_refused_and_nothing_sent(signature, status):
    intake = FakeIntake()
    assert post(receiver(intake), sample("01-message.json"), signature).status_code == status
    assert intake.sent == []


def test_a_body_changed_after_signing_is_refused():
    intake = FakeIntake()
    good = line.signature(SECRET, sample("01-message.json"))
    forged = sample("01-message.json").replace(b"1657155600000", b"1657155600001")
    assert post(receiver(intake), forged, good).status_code == 403 and intake.sent == []


def test_an_unmappable_body_is_answered_422_and_nothing_sent():
    intake = FakeIntake()
    answer = post(receiver(intake), body({**message("e1", 0), "webhookEventId": ""}))
    assert answer.status_code == 422 and answer.json()["unmapped"] == ["event 0: no webhookEventId"]
    assert intake.sent == []


def test_when_intake_does_not_store_the_conversation_is_not_kept_and_line_retries():
    state = State()
    assert post(receiver(FakeIntake(refuse=True), state), body(message("e1", 0))).status_code == 503
    assert post(receiver(FakeIntake(status="conflict"), state), body(message("e1", 0))).status_code == 502
    assert state.get(line.conversation_key("npo-a", USER)) is None
    assert post(receiver(FakeIntake(), state), body(message("e1", 0))).status_code == 200
    assert state.get(line.conversation_key("npo-a", USER))["opening"] == "e1"


# --- commands --------------------------------------------------------------------------------------


def test_check_prints_the_samples_events():
    files = [str(p) for p in sorted(SAMPLES.glob("*.json"))]
    result = CliRunner().invoke(line.app, ["check", "--config", str(SAMPLES / "mapping.yaml"), "--partner", "npo-a",
                                           *files])
    assert result.exit_code == 0, result.output
    kinds = [short(json.loads(x)) for x in result.output.splitlines()]
    assert kinds == ["contact.received", "contact.field_selected"] * 3
    assert "U4af4980629" not in result.output and "話を聞いて" not in result.output


def test_check_exits_1_naming_the_file_and_event_it_cannot_map(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(body({**message("e1", 0), "source": {"type": "user"}}))
    result = CliRunner().invoke(line.app, ["check", "--config", str(SAMPLES / "mapping.yaml"), "--partner", "npo-a",
                                           str(bad)])
    assert result.exit_code == 1 and "bad.json: event 0: no source.userId" in result.output


# --- send: saved webhook bodies, no signature ------------------------------------------------------


def send_with(intake: FakeIntake, monkeypatch, *files: str):
    """``line send`` with intake faked, the key from the environment."""
    seen: list[tuple[str, str]] = []

    def sender(url: str, key: str) -> FakeIntake:
        seen.append((url, key))
        return intake

    monkeypatch.setattr(line, "intake_sender", sender)
    monkeypatch.setenv("TSUNAGU_API_KEY", "tsg_env_key")
    result = CliRunner().invoke(line.app, ["send", "--config", str(SAMPLES / "mapping.yaml"), "--partner", "npo-a",
                                           "--intake-url", "http://intake.test", *files])
    return result, seen


def test_send_sends_the_saved_bodies_as_the_receiver_would_with_conversations_across_files(monkeypatch):
    intake = FakeIntake()
    files = sorted(SAMPLES.glob("*.json"))
    result, seen = send_with(intake, monkeypatch, *map(str, files))
    assert result.exit_code == 0, result.output
    assert seen == [("http://intake.test", "tsg_env_key")]
    sent = [e for batch in intake.sent for e in batch]
    assert sent == map_all([f.read_bytes() for f in files])  # the receiver's mapping, nothing of its own
    assert len({e["subject"] for e in sent}) == 2  # 01 opens, 02 resends the opening, 04 opens after silence
    assert "U4af4980629" not in result.output and "話を聞いて" not in result.output


def test_send_stops_at_the_first_body_it_cannot_map_and_sends_nothing_after_it(monkeypatch, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(body({**message("e1", 0), "source": {"type": "user"}}))
    intake = FakeIntake()
    result, _ = send_with(intake, monkeypatch, str(bad), str(SAMPLES / "01-message.json"))
    assert result.exit_code == 1 and "bad.json: 422" in result.output and "no source.userId" in result.output
    assert intake.sent == []


def test_send_exits_1_when_intake_cannot_be_reached_and_keeps_no_conversation(monkeypatch):
    result, _ = send_with(FakeIntake(refuse=True), monkeypatch, str(SAMPLES / "01-message.json"))
    assert result.exit_code == 1 and "01-message.json: 503" in result.output


# --- screening answers (postbacks) ----------------------------------------------------------------

TRIAGE = line.config_from({"field": "loneliness", "triage": {"instrument": "k6", "postbacks": {
    "screening=k6&result=low": "low", "screening=k6&result=imminent": "imminent"}}})


def postback(event_id: str, minutes: float, data: str, user: str = USER) -> dict:
    return {"type": "postback", "mode": "active", "timestamp": T0 + int(minutes * 60_000), "webhookEventId": event_id,
            "deliveryContext": {"isRedelivery": False}, "source": {"type": "user", "userId": user},
            "replyToken": "r", "postback": {"data": data}}


def test_a_screening_button_in_the_table_triages_the_persons_open_contact_with_its_risk_code():
    events = map_all([body(message("e1", 0)), body(postback("p1", 2, "screening=k6&result=imminent"))], TRIAGE)
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected", "contact.triaged"]
    triaged = events[2]
    assert triaged["subject"] == events[0]["subject"] and triaged["time"] == "2022-07-07T10:02:00+09:00"
    assert triaged["data"] == {"contact_id": triaged["subject"], "risk": "imminent", "instrument": "k6"}


def test_a_screening_answer_before_any_message_opens_the_contact_it_triages():
    events = map_all([body(postback("p1", 0, "screening=k6&result=low"))], TRIAGE)
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected", "contact.triaged"]
    assert len({e["subject"] for e in events}) == 1


def test_postback_data_missing_from_the_table_is_left_aside_and_never_sent():
    secret = "free=090-1234-5678&note=死にたい"
    mapped = line.map_webhook(body(postback("p1", 0, secret)), "npo-a", TRIAGE, State())
    assert (mapped.events, mapped.unmapped, mapped.ignored) == ([], [], 1)
    events = map_all([body(message("e1", 0), postback("p2", 1, secret))], TRIAGE)
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected"]
    assert "1234" not in json.dumps(events) and "死にたい" not in json.dumps(events, ensure_ascii=False)


def test_without_a_triage_table_no_postback_is_mapped():
    events = map_all([body(message("e1", 0), postback("p1", 1, "screening=k6&result=imminent"))])
    assert "contact.triaged" not in [short(e) for e in events]


def with_console(state: State) -> list[dict]:
    """The with-console sample, in name order: webhook bodies through the receiver's mapping, console
    files through the console's, on one state."""
    from tsunagu_connectors.line_console import map_console

    folder = SAMPLES / "with-console"
    config = line.load_config(folder / "mapping.yaml")
    events: list[dict] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".json", ".jsonl")):
        mapped = (map_console if path.suffix == ".jsonl" else line.map_webhook)(path.read_bytes(), "npo-a", config,
                                                                               state)
        assert not mapped.unmapped, (path.name, mapped.unmapped)
        for keep in mapped.commit:
            keep()
        events += mapped.events
    return events


def test_sending_the_whole_day_again_repeats_events_never_makes_new_ones():
    state = State()
    first = {e["id"]: e for e in with_console(state)}
    again = with_console(state)
    assert again and all(first[e["id"]] == e for e in again)  # duplicates at intake, never a conflict


def test_a_block_older_than_the_persons_new_conversation_closes_nothing():
    state = State()
    unfollow = {"type": "unfollow", "timestamp": T0 + 10 * 60_000, "webhookEventId": "u1",
                "source": {"type": "user", "userId": USER}}
    map_all([body(message("e1", 0)), body(unfollow), body(message("e2", 20))], CONSOLE, state)
    assert map_all([body(unfollow)], CONSOLE, state) == []  # a saved body sent again
    assert map_all([body(message("e3", 25))], CONSOLE, state) == []  # still the conversation opened at 20


def test_every_event_of_the_samples_with_the_console_is_one_the_contract_accepts():
    from schemas import validate_event

    events = with_console(State())
    for e in events:
        validate_event(e, form="ingress")
    kinds = [short(e) for e in events]
    # three conversations: one answered, transferred, answered again and ended; two left unanswered
    assert kinds.count("contact.received") == 3 and kinds.count("contact.abandoned") == 2
    assert kinds.count("contact.triaged") == kinds.count("contact.transferred") == kinds.count("contact.ended") == 1
    assert {e["data"]["channel"] for e in events if short(e) == "contact.received"} == {"sns"}


# --- the receiver when the console reports first responses ------------------------------------------

CONSOLE = line.config_from({"field": "loneliness", "console": True, "desks": {"seat-1": "npo-a-line-1"}})


def answered_by_console(state: State, minutes: float, user: str = USER) -> None:
    """What ``line console`` keeps once the desk's first response is stored (line_console.py)."""
    from tsunagu_connectors.line_console import map_console

    at = f"2022-07-07T{10 + int(minutes) // 60:02d}:{int(minutes) % 60:02d}:00+09:00"
    moment = {"id": f"m-{minutes}", "moment": "answered", "time": at, "user": user, "desk": "seat-1"}
    mapped = map_console(json.dumps(moment).encode(), "npo-a", CONSOLE, state)
    assert not mapped.unmapped, mapped.unmapped
    for keep in mapped.commit:
        keep()


def test_an_unanswered_conversation_left_silent_is_abandoned_when_the_person_writes_again():
    events = map_all([body(message("e1", 0)), body(message("e2", 10)), body(message("e3", 45))], CONSOLE)
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected", "contact.abandoned",
                                          "contact.received", "contact.field_selected"]
    abandoned = events[2]
    assert abandoned["subject"] == events[0]["subject"] and abandoned["time"] == "2022-07-07T10:40:00+09:00"
    assert abandoned["data"]["stage"] == "queue" and abandoned["data"]["wait_seconds"] == 2400.0


def test_an_answered_conversation_stays_open_whatever_the_silence():
    state = State()
    map_all([body(message("e1", 0))], CONSOLE, state)
    answered_by_console(state, 3)
    assert map_all([body(message("e2", 90))], CONSOLE, state) == []


def test_blocking_the_account_ends_an_answered_conversation_and_abandons_an_unanswered_one():
    state = State()
    other = "U" + "b" * 32
    map_all([body(message("e1", 0), message("e2", 1, user=other))], CONSOLE, state)
    answered_by_console(state, 5)
    unfollows = [{"type": "unfollow", "timestamp": T0 + 20 * 60_000, "webhookEventId": f"u-{who}",
                  "source": {"type": "user", "userId": who}} for who in (USER, other)]
    ended, abandoned = map_all([body(*unfollows)], CONSOLE, state)
    assert short(ended) == "contact.ended" and ended["data"]["talk_seconds"] == 900.0
    assert ended["data"]["desk_id"] == "npo-a-line-1"
    assert short(abandoned) == "contact.abandoned" and abandoned["data"]["wait_seconds"] == 1140.0
    # the next message opens a new contact, with nothing more said of the old ones
    assert [short(e) for e in map_all([body(message("e3", 25))], CONSOLE, state)] == [
        "contact.received", "contact.field_selected"]


def test_without_the_console_silence_and_blocking_report_nothing_but_new_contacts():
    unfollow = {"type": "unfollow", "timestamp": T0 + 50 * 60_000, "webhookEventId": "u1",
                "source": {"type": "user", "userId": USER}}
    events = map_all([body(message("e1", 0)), body(message("e2", 45)), body(unfollow)])
    assert "contact.abandoned" not in [short(e) for e in events] and "contact.ended" not in [short(e) for e in events]


@pytest.mark.parametrize(("raw", "message_"), [
    ({"triage": {"postbacks": {"screening=x": "severe"}}}, "triage.postbacks"),
    ({"triage": {"postbacks": ["screening=x"]}}, "triage"),
    ({"triage": {"instrument": "k 6", "postbacks": {}}}, "triage.instrument"),
    ({"console": "yes"}, "console"),
    ({"desks": {"seat-1": "desk 1"}}, "desks"),
])
def test_a_screening_table_console_or_desks_config_that_cannot_be_used_is_refused_at_start(raw, message_):
    with pytest.raises(ValueError, match=message_):
        line.config_from(raw)
