"""The Twilio TaskRouter connector: X-Twilio-Signature as Twilio documents it, the mapping of event
callbacks to contact events, what it refuses, and the receiver's answers (intake faked here; the real
one in tests/integration/test_connector_webhooks.py)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from schemas import EVENT_TYPES
from schemas.envelope import looks_like_phone
from tsunagu_connectors import twilio
from tsunagu_connectors.client import IntakeRefused
from tsunagu_connectors.report import SendReport
from tsunagu_connectors.webhooks import State

SAMPLES = Path(twilio.__file__).parent / "samples" / "twilio"
CONFIG = twilio.load_config(SAMPLES / "mapping.yaml")
TOKEN = "twilio-auth-token-for-tests"
URL = "https://hooks.npo-a.example/twilio/taskrouter"
CALLER = "+819012345678"


def sample(name: str) -> dict[str, str]:
    return dict(twilio.form_params((SAMPLES / name).read_bytes()))


def map_all(names: list[str], config: twilio.TwilioConfig = CONFIG, state: State | None = None) -> list[dict]:
    state = state or State()
    events: list[dict] = []
    for name in names:
        mapped = twilio.map_callback(sample(name), "npo-a", config, state)
        assert not mapped.unmapped, mapped.unmapped
        for keep in mapped.commit:
            keep()
        events += mapped.events
    return events


def short(e: dict) -> str:
    return e["type"].removeprefix("jp.tsunagu.").removesuffix(".v1")


# --- the signature ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("caller", "expected"), [
    ("+14158675310", "GvWf1cFY/Q7PnoempGyD5oXAezc="),  # the current page's example
    ("+12349013030", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),  # the page's earlier example
])
def test_the_signature_matches_twilios_documented_example(caller, expected):
    # https://www.twilio.com/docs/usage/security#validating-requests
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", caller), ("Digits", "1234"), ("From", caller),
              ("To", "+18005551212")]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio.signature("12345", url, params) == expected
    assert twilio.signature_valid("12345", url, list(reversed(params)), expected)
    assert not twilio.signature_valid("54321", url, params, expected)
    assert not twilio.signature_valid("12345", url + "&baz=3", params, expected)


def test_the_signed_text_is_the_url_then_names_sorted_with_their_values_and_repeats_sorted():
    params = [("b", "2"), ("a", "1"), ("a", "0"), ("Z", ""), ("c", "x y+z")]
    assert twilio.signed_text("https://x.example/h?q=1", params) == "https://x.example/h?q=1Za0a1b2cx y+z"


def test_a_url_signed_with_or_without_its_default_port_is_accepted():
    params = [("EventType", "task.created")]
    with_port = twilio.signature(TOKEN, "https://hooks.example:443/t", params)
    assert twilio.signature_valid(TOKEN, "https://hooks.example/t", params, with_port)
    without = twilio.signature(TOKEN, "https://hooks.example/t", params)
    assert twilio.signature_valid(TOKEN, "https://hooks.example:443/t", params, without)
    assert not twilio.signature_valid(TOKEN, "https://hooks.example:8443/t", params, without)


# --- mapping ---------------------------------------------------------------------------------------


def test_one_answered_call_maps_to_received_field_answered_and_ended():
    events = map_all(["01-task-created.form", "02-task-queue-entered.form", "03-reservation-created.form",
                      "04-reservation-accepted.form", "05-task-wrapup.form", "06-task-completed.form"])
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected", "contact.answered",
                                          "contact.ended"]
    received, chosen, answered, ended = (e["data"] for e in events)
    assert received == {"contact_id": received["contact_id"], "channel": "phone", "caller_id": CALLER, "region": "13"}
    assert len({e["subject"] for e in events} | {d["contact_id"] for d in (received, chosen, answered, ended)}) == 1
    assert chosen["field"] == "loneliness" and chosen["menu_position"] == 1
    assert answered == {"contact_id": answered["contact_id"], "desk_id": "npo-a-desk-1", "organisation_id": "npo-a",
                        "wait_seconds": 45.0}
    assert ended["talk_seconds"] == 1200.0 and ended["desk_id"] == "npo-a-desk-1"
    assert events[0]["time"] == "2022-07-07T10:00:00.250000+09:00"  # TimestampMs, read in JST
    assert all(e["type"] in EVENT_TYPES and e["source"] == "/partners/npo-a/twilio" for e in events)


def test_a_caller_who_hung_up_in_the_queue_is_abandoned_and_a_withheld_number_is_no_caller():
    events = map_all(["07-task-created-withheld.form", "08-task-canceled.form"])
    assert [short(e) for e in events] == ["contact.received", "contact.abandoned"]
    assert events[0]["data"]["caller_id"] is None
    assert events[1]["data"]["stage"] == "queue" and events[1]["data"]["wait_seconds"] == 90.0


def test_a_retried_callback_has_the_same_ids_and_no_id_carries_a_phone_number_or_twilio_sid():
    first = map_all(["01-task-created.form", "04-reservation-accepted.form"])
    again = map_all(["01-task-created.form", "04-reservation-accepted.form"])
    assert first == again
    text = json.dumps([[e["id"], e["subject"]] for e in first])
    assert not looks_like_phone(text) and "WT0000" not in text and "9012345678" not in text
    other_partner = twilio.map_callback(sample("01-task-created.form"), "npo-b", CONFIG, State()).events
    assert other_partner[0]["id"] != first[0]["id"]


def test_the_event_sid_makes_the_id_when_the_callback_carries_one():
    params = sample("01-task-created.form")
    with_sid = {**params, "EventSid": "EV" + "1" * 32}
    later_copy = {**with_sid, "Timestamp": "1657155700", "TimestampMs": "1657155700000"}
    ids_of = [twilio.map_callback(p, "npo-a", CONFIG, State()).events[0]["id"] for p in (with_sid, later_copy, params)]
    assert ids_of[0] == ids_of[1] != ids_of[2]


def test_a_chat_task_never_sends_its_from_as_a_caller():
    params = {**sample("01-task-created.form"), "TaskChannelUniqueName": "chat",
              "TaskAttributes": json.dumps({"from": "Hanako", "channelType": "web"})}
    data = twilio.map_callback(params, "npo-a", CONFIG, State()).events[0]["data"]
    assert data["channel"] == "chat" and data["caller_id"] is None


def on_channel(name: str, channel: str) -> dict[str, str]:
    """A sample callback of the same task, on another TaskChannel (a chat's ``from`` is a handle)."""
    params = {**sample(name), "TaskChannelUniqueName": channel}
    if "TaskAttributes" in params:
        params["TaskAttributes"] = json.dumps({"from": "web-guest-42", "channelType": "web"})
    return params


def test_a_task_on_the_chat_channel_is_a_chat_contact_answered_and_ended_like_a_call():
    state, events = State(), []
    for name in ("01-task-created.form", "02-task-queue-entered.form", "04-reservation-accepted.form",
                 "05-task-wrapup.form"):
        mapped = twilio.map_callback(on_channel(name, "chat"), "npo-a", CONFIG, state)
        assert not mapped.unmapped, mapped.unmapped
        for keep in mapped.commit:
            keep()
        events += mapped.events
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected", "contact.answered",
                                          "contact.ended"]
    assert events[0]["data"]["channel"] == "chat" and events[0]["data"]["caller_id"] is None
    assert events[2]["data"]["wait_seconds"] == 45.0 and events[3]["data"]["talk_seconds"] == 1200.0
    assert "web-guest" not in json.dumps(events)


def test_an_sms_task_is_chat_and_a_partners_own_task_channel_maps_to_sns_by_the_config():
    sms = twilio.map_callback(on_channel("01-task-created.form", "sms"), "npo-a", CONFIG, State()).events
    assert sms[0]["data"]["channel"] == "chat" and sms[0]["data"]["caller_id"] is None
    config = twilio.config_from({"workers": CONFIG.workers, "channels": {"line": "sns"}})
    own = twilio.map_callback(on_channel("01-task-created.form", "line"), "npo-a", config, State()).events
    assert own[0]["data"]["channel"] == "sns"
    video = twilio.map_callback(on_channel("01-task-created.form", "video"), "npo-a", CONFIG, State())
    assert video.events == [] and "task channel 'video' is not in the config's channels" in str(video.unmapped[0])


def test_the_field_comes_from_the_workflow_at_creation_when_the_config_maps_workflows():
    config = twilio.config_from({"workflows": {"Hotline routing": {"field": "suicidal", "menu_position": 2}},
                                 "workers": CONFIG.workers})
    events = map_all(["01-task-created.form", "02-task-queue-entered.form"], config)
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected"]
    assert events[1]["data"]["field"] == "suicidal" and events[1]["time"] == events[0]["time"]


def test_the_talk_ends_at_completion_when_the_config_says_so():
    config = twilio.config_from({"workers": CONFIG.workers, "ended_on": "task.completed"})
    events = map_all(["04-reservation-accepted.form", "05-task-wrapup.form", "06-task-completed.form"], config)
    assert [short(e) for e in events] == ["contact.answered", "contact.ended"]
    assert events[1]["data"]["talk_seconds"] == 1255.0


def test_a_task_ended_without_a_known_answer_reports_no_talk_and_no_desk():
    (ended,) = map_all(["05-task-wrapup.form"])
    assert ended["data"] == {"contact_id": ended["subject"], "talk_seconds": 0.0}


def test_an_answer_is_remembered_only_once_committed():
    state = State()
    accepted = twilio.map_callback(sample("04-reservation-accepted.form"), "npo-a", CONFIG, state)
    assert accepted.events and accepted.commit  # not kept yet: intake has not stored the answer
    ended = twilio.map_callback(sample("05-task-wrapup.form"), "npo-a", CONFIG, state)
    assert ended.events[0]["data"]["talk_seconds"] == 0.0
    for keep in accepted.commit:
        keep()
    ended = twilio.map_callback(sample("05-task-wrapup.form"), "npo-a", CONFIG, state)
    assert ended.events[0]["data"]["talk_seconds"] == 1200.0


@pytest.mark.parametrize("name", ["03-reservation-created.form", "09-worker-activity-update.form",
                                  "06-task-completed.form"])
def test_events_tsunagu_does_not_count_are_left_aside(name):
    mapped = twilio.map_callback(sample(name), "npo-a", CONFIG, State())
    assert (mapped.events, mapped.unmapped, mapped.ignored) == ([], [], 1)


def test_a_queue_the_config_does_not_map_chooses_no_field():
    params = {**sample("02-task-queue-entered.form"), "TaskQueueSid": "WQ" + "9" * 32, "TaskQueueName": "Other"}
    mapped = twilio.map_callback(params, "npo-a", CONFIG, State())
    assert (mapped.events, mapped.unmapped, mapped.ignored) == ([], [], 1)


@pytest.mark.parametrize(("name", "change", "reason"), [
    ("01-task-created.form", {"TaskSid": ""}, "no TaskSid"),
    ("01-task-created.form", {"Timestamp": "yesterday", "TimestampMs": ""}, "no valid Timestamp"),
    ("01-task-created.form", {"TaskAttributes": "{from: " + CALLER}, "TaskAttributes is not JSON"),
    ("01-task-created.form", {"TaskAttributes": json.dumps([CALLER])}, "TaskAttributes is not a JSON object"),
    ("01-task-created.form", {"TaskChannelUniqueName": "video"}, "task channel 'video' is not in the config"),
    ("04-reservation-accepted.form", {"WorkerSid": "WK" + "9" * 32}, "the worker is not in the config's workers"),
    ("04-reservation-accepted.form", {"WorkerSid": ""}, "no WorkerSid"),
    ("04-reservation-accepted.form", {"TaskAge": "-3"}, "no valid TaskAge"),
    ("08-task-canceled.form", {"TaskAge": "nan"}, "no valid TaskAge"),
    ("05-task-wrapup.form", {"TaskAge": "inf"}, "no valid TaskAge"),
])
def test_a_callback_that_cannot_be_mapped_sends_nothing_and_says_why_without_its_content(name, change, reason):
    params = {**sample(name), **change}
    mapped = twilio.map_callback(params, "npo-a", CONFIG, State())
    assert mapped.events == [] and mapped.commit == []
    (unmapped,) = mapped.unmapped
    assert unmapped.where == f"callback {params['EventType']}" and unmapped.reason.startswith(reason)
    assert CALLER not in str(unmapped) and "9999" not in str(unmapped)


@pytest.mark.parametrize(("raw", "message"), [
    ({"queues": {"WQ1": {"field": "astrology"}}}, "queues.WQ1.field"),
    ({"queues": {"WQ1": {"field": "loneliness", "menu_position": 12}}}, "menu_position"),
    ({"workflows": ["loneliness"]}, "workflows"),
    ({"channels": {"voice": "pigeon"}}, "channels.voice"),
    ({"ended_on": "task.deleted"}, "ended_on"),
])
def test_a_config_with_unknown_codes_is_refused_at_start(raw, message):
    with pytest.raises(ValueError, match=message):
        twilio.config_from(raw)


# --- the receiver ----------------------------------------------------------------------------------


class FakeIntake:
    """Records what the receiver sends; answers as told."""

    def __init__(self, status: str = "accepted", refuse: bool = False) -> None:
        self.sent: list[list[dict]] = []
        self.status = status
        self.refuse = refuse

    def __call__(self, events: list[dict]) -> SendReport:
        if self.refuse:
            raise IntakeRefused("intake answered 401")
        self.sent.append(events)
        report = SendReport()
        report.add([{"id": e["id"], "status": self.status, "problems": [{"path": "data"}]} for e in events])
        return report


def receiver(intake: FakeIntake, state: State | None = None) -> TestClient:
    return TestClient(twilio.create_app(CONFIG, "npo-a", TOKEN, intake, state or State()))


def post(client: TestClient, name: str, *, signature: str | None = "sign", **change: str):
    params = {**sample(name), **change}
    body = urlencode(params)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature == "sign":
        headers["X-Twilio-Signature"] = twilio.signature(TOKEN, URL, list(params.items()))
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    return client.post("/twilio/taskrouter", content=body, headers=headers)


def test_a_signed_callback_is_answered_200_once_intake_stored_its_events():
    intake = FakeIntake()
    answer = post(receiver(intake), "01-task-created.form")
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert [short(e) for e in intake.sent[0]] == ["contact.received"]


@pytest.mark.parametrize(("signature", "status"), [(None, 401), ("", 401), ("AAAA", 403)])
def test_an_unsigned_or_wrongly_signed_callback_is_refused_and_nothing_sent(signature, status):
    intake = FakeIntake()
    assert post(receiver(intake), "01-task-created.form", signature=signature).status_code == status
    assert intake.sent == []


def test_a_callback_changed_after_signing_is_refused():
    intake = FakeIntake()
    client = receiver(intake)
    params = sample("01-task-created.form")
    good = twilio.signature(TOKEN, URL, list(params.items()))
    forged = urlencode({**params, "TaskAge": "7"})
    answer = client.post("/twilio/taskrouter", content=forged, headers={"X-Twilio-Signature": good})
    assert answer.status_code == 403 and intake.sent == []


def test_an_unmappable_callback_is_answered_422_with_the_reason_and_nothing_sent():
    intake = FakeIntake()
    answer = post(receiver(intake), "04-reservation-accepted.form", WorkerSid="WK" + "9" * 32)
    assert answer.status_code == 422 and intake.sent == []
    assert answer.json()["unmapped"] == ["callback reservation.accepted: the worker is not in the config's workers"]


def test_when_intake_does_not_store_the_platform_is_asked_to_retry_and_nothing_is_remembered():
    state = State()
    assert post(receiver(FakeIntake(refuse=True), state), "04-reservation-accepted.form").status_code == 503
    assert post(receiver(FakeIntake(status="rejected"), state), "04-reservation-accepted.form").status_code == 502
    assert state.get(twilio.accepted_key("npo-a", sample("04-reservation-accepted.form")["TaskSid"])) is None
    assert post(receiver(FakeIntake(status="duplicate"), state), "04-reservation-accepted.form").status_code == 200
    assert state.get(twilio.accepted_key("npo-a", sample("04-reservation-accepted.form")["TaskSid"])) is not None


def test_an_event_tsunagu_does_not_count_is_answered_200_with_nothing_sent():
    intake = FakeIntake()
    answer = post(receiver(intake), "09-worker-activity-update.form")
    assert answer.status_code == 200 and answer.json()["ignored"] == 1 and intake.sent == []


# --- commands --------------------------------------------------------------------------------------


def test_check_prints_the_samples_events_without_the_caller_number():
    files = [str(p) for p in sorted(SAMPLES.glob("*.form"))]
    result = CliRunner().invoke(twilio.app, ["check", "--config", str(SAMPLES / "mapping.yaml"),
                                             "--partner", "npo-a", *files])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected", "contact.answered",
                                          "contact.ended", "contact.received", "contact.abandoned"]
    assert "9012345678" not in result.output


def test_check_exits_1_naming_the_file_and_reason_of_an_unmappable_callback(tmp_path):
    bad = tmp_path / "bad.form"
    bad.write_text(urlencode({**sample("04-reservation-accepted.form"), "WorkerSid": "WK" + "9" * 32}))
    result = CliRunner().invoke(twilio.app, ["check", "--config", str(SAMPLES / "mapping.yaml"),
                                             "--partner", "npo-a", str(bad)])
    assert result.exit_code == 1
    assert "bad.form: callback reservation.accepted: the worker is not in the config's workers" in result.output


def test_serve_refuses_to_start_without_the_auth_token(tmp_path, monkeypatch):
    monkeypatch.delenv(twilio.AUTH_TOKEN_ENV, raising=False)
    monkeypatch.setenv("TSUNAGU_API_KEY", "k")
    result = CliRunner().invoke(twilio.app, ["serve", "--config", str(SAMPLES / "mapping.yaml"), "--partner", "npo-a",
                                             "--state-file", str(tmp_path / "s.sqlite3")])
    assert result.exit_code != 0 and "TWILIO_AUTH_TOKEN" in str(result.exception)


# --- send: saved callbacks, no signature -----------------------------------------------------------


def send_with(intake: FakeIntake, monkeypatch, *files: str, key_file: Path | None = None):
    """``twilio send`` with intake faked; the key from the environment unless a file is given."""
    seen: list[tuple[str, str]] = []

    def sender(url: str, key: str) -> FakeIntake:
        seen.append((url, key))
        return intake

    monkeypatch.setattr(twilio, "intake_sender", sender)
    monkeypatch.setenv("TSUNAGU_API_KEY", "tsg_env_key")
    key = ["--key-file", str(key_file)] if key_file else []
    result = CliRunner().invoke(twilio.app, ["send", "--config", str(SAMPLES / "mapping.yaml"), "--partner", "npo-a",
                                             "--intake-url", "http://intake.test", *key, *files])
    return result, seen


def test_send_sends_the_saved_callbacks_as_the_receiver_would_and_remembers_answers_across_files(monkeypatch):
    intake = FakeIntake()
    files = [str(p) for p in sorted(SAMPLES.glob("*.form"))]
    result, seen = send_with(intake, monkeypatch, *files)
    assert result.exit_code == 0, result.output
    assert seen == [("http://intake.test", "tsg_env_key")]
    sent = [e for batch in intake.sent for e in batch]
    assert sent == map_all([Path(f).name for f in files])  # the receiver's mapping, nothing of its own
    assert [e["data"]["talk_seconds"] for e in sent if short(e) == "contact.ended"] == [1200.0]
    assert "9012345678" not in result.output


def test_send_takes_the_key_from_a_file(monkeypatch, tmp_path):
    key_file = tmp_path / "npo-a.key"
    key_file.write_text("tsg_file_key\n")
    result, seen = send_with(FakeIntake(), monkeypatch, str(SAMPLES / "01-task-created.form"), key_file=key_file)
    assert result.exit_code == 0 and seen == [("http://intake.test", "tsg_file_key")]


def test_send_stops_at_the_first_callback_it_cannot_map_and_sends_nothing_after_it(monkeypatch, tmp_path):
    bad = tmp_path / "bad.form"
    bad.write_text(urlencode({**sample("04-reservation-accepted.form"), "WorkerSid": "WK" + "9" * 32}))
    intake = FakeIntake()
    result, _ = send_with(intake, monkeypatch, str(SAMPLES / "01-task-created.form"), str(bad),
                          str(SAMPLES / "07-task-created-withheld.form"))
    assert result.exit_code == 1
    assert "bad.form: 422" in result.output and "the worker is not in the config's workers" in result.output
    assert [[short(e) for e in batch] for batch in intake.sent] == [["contact.received"]]


def test_send_exits_1_when_intake_does_not_store_the_events(monkeypatch):
    result, _ = send_with(FakeIntake(status="rejected"), monkeypatch, str(SAMPLES / "01-task-created.form"))
    assert result.exit_code == 1 and "01-task-created.form: 502" in result.output


def test_send_ends_with_what_intake_stored(monkeypatch):
    result, _ = send_with(FakeIntake(status="duplicate"), monkeypatch, str(SAMPLES / "01-task-created.form"),
                          str(SAMPLES / "02-task-queue-entered.form"))
    assert result.exit_code == 0
    assert result.output.splitlines()[-1] == "intake: 0 accepted, 2 duplicate; 2 of 2 files sent"
