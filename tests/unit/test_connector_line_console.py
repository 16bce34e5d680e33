"""The counsellors' console for LINE conversations (``tsunagu connect line console``): first responses,
transfers and ends the webhook never shows, found through the receiver's state, all or nothing per file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tsunagu_connectors import line
from tsunagu_connectors.line_console import map_console
from tsunagu_connectors.report import SendReport
from tsunagu_connectors.webhooks import State

SAMPLES = Path(line.__file__).parent / "samples" / "line" / "with-console"
CONFIG = line.load_config(SAMPLES / "mapping.yaml")
USER = "U4af4980629" + "0" * 22
T0 = 1657155600000  # 2022-07-07 10:00 JST


def short(e: dict) -> str:
    return e["type"].removeprefix("jp.tsunagu.").removesuffix(".v1")


def opened(state: State, minutes: float = 0, user: str = USER) -> str:
    """The receiver opened the person's conversation (their first message); its contact id."""
    raw = {"destination": "U" + "f" * 32, "events": [{
        "type": "message", "timestamp": T0 + int(minutes * 60_000), "webhookEventId": f"w-{user}-{minutes}",
        "source": {"type": "user", "userId": user}, "message": {"type": "text", "id": "1", "text": "…"}}]}
    mapped = line.map_webhook(json.dumps(raw).encode(), "npo-a", CONFIG, state)
    for keep in mapped.commit:
        keep()
    return str(mapped.events[0]["subject"])


def moment(kind: str, minute: int, n: int | None = None, *, desk: str = "seat-1", user: str = USER, **more) -> dict:
    return {"id": f"mgr-{n if n is not None else minute}", "moment": kind,
            "time": f"2022-07-07T10:{minute:02d}:00+09:00", "user": user, "desk": desk, **more}


def console(state: State, *moments: dict, commit: bool = True):
    mapped = map_console("\n".join(json.dumps(m) for m in moments).encode(), "npo-a", CONFIG, state)
    if commit:
        for keep in mapped.commit:
            keep()
    return mapped


def test_the_first_response_is_the_answer_and_its_wait_counts_from_the_persons_first_message():
    state = State()
    contact = opened(state)
    [answered] = console(state, moment("answered", 4)).events
    assert short(answered) == "contact.answered" and answered["subject"] == contact
    assert answered["data"] == {"contact_id": contact, "desk_id": "npo-a-line-1", "organisation_id": "npo-a",
                                "wait_seconds": 240.0}
    assert answered["source"] == "/partners/npo-a/line" and answered["time"] == "2022-07-07T10:04:00+09:00"


def test_a_transfer_names_the_desk_handing_on_and_the_next_desk_answers_again_and_ends():
    state = State()
    opened(state)
    mapped = console(state, moment("answered", 4), moment("transferred", 10, to_desk="specialist", to_field="suicidal",
                                                          to_channel="phone"),
                     moment("answered", 12, desk="specialist"), moment("ended", 40, desk="specialist"))
    answered, transferred, again, ended = mapped.events
    assert transferred["data"] == {"contact_id": answered["subject"], "from_desk_id": "npo-a-line-1",
                                   "to_desk_id": "npo-a-line-specialist", "to_field": "suicidal",
                                   "to_channel": "phone"}
    assert again["data"]["desk_id"] == "npo-a-line-specialist" and again["data"]["wait_seconds"] == 720.0
    # the talk runs from the first response, whoever gave it
    assert ended["data"] == {"contact_id": answered["subject"], "talk_seconds": 2160.0,
                             "desk_id": "npo-a-line-specialist"}


def test_after_the_console_ends_it_the_persons_next_message_opens_a_new_contact_unabandoned():
    state = State()
    first = opened(state)
    console(state, moment("answered", 2), moment("ended", 10))
    raw = {"destination": "x", "events": [{"type": "message", "timestamp": T0 + 12 * 60_000, "webhookEventId": "w2",
                                           "source": {"type": "user", "userId": USER}}]}
    events = line.map_webhook(json.dumps(raw).encode(), "npo-a", CONFIG, state).events
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected"]
    assert events[0]["subject"] != first


def test_sending_a_console_file_again_gives_the_same_events_so_intake_answers_duplicate():
    state = State()
    opened(state)
    moments = [moment("answered", 4), moment("transferred", 10, to_desk="specialist"), moment("ended", 30)]
    first = console(state, *moments).events
    assert console(state, *moments).events == first


def test_an_end_the_person_already_made_by_blocking_is_left_aside():
    state = State()
    opened(state)
    console(state, moment("answered", 4))
    unfollow = {"destination": "x", "events": [{"type": "unfollow", "timestamp": T0 + 20 * 60_000,
                                                "webhookEventId": "u1", "source": {"type": "user", "userId": USER}}]}
    mapped = line.map_webhook(json.dumps(unfollow).encode(), "npo-a", CONFIG, state)
    for keep in mapped.commit:
        keep()
    late = console(state, moment("ended", 25))
    assert (late.events, late.unmapped, late.ignored) == ([], [], 1)


@pytest.mark.parametrize(("lines", "reason"), [
    ([moment("answered", 4, desk="Sato's seat")], "line 1: desk is not in the config's desks"),
    ([moment("answered", 4, user="U" + "9" * 32)], "line 1: the person has no open conversation"),
    ([moment("ended", 9)], "line 1: ended before any first response"),
    ([moment("answered", 4), moment("transferred", 6)], "line 2: a transfer names to_desk or to_field"),
    ([moment("answered", 4), moment("transferred", 6, to_desk="nowhere")],
     "line 2: to_desk is not in the config's desks"),
    ([moment("answered", 4), moment("transferred", 6, to_field="astrology")], "line 2: to_field: one of"),
    ([moment("answered", 4) | {"time": "2022-07-07T10:04:00"}], "line 1: time carries no UTC offset"),
    ([moment("answered", 4) | {"moment": "replied"}], "line 1: moment: one of"),
    ([moment("answered", 4) | {"id": ""}], "line 1: no id"),
])
def test_a_console_file_with_a_line_it_cannot_map_sends_nothing_and_says_where_and_why(lines, reason):
    state = State()
    opened(state)
    mapped = console(state, *lines)
    assert mapped.events == [] and mapped.commit == []  # a good line 1 is not sent either
    assert any(str(u).startswith(reason) for u in mapped.unmapped), mapped.unmapped
    assert all(USER not in str(u) and "Sato" not in str(u) for u in mapped.unmapped)


def test_neither_the_user_id_nor_a_console_desk_name_leaves_the_connector():
    state = State()
    opened(state)
    events = console(state, moment("answered", 4), moment("ended", 9)).events
    text = json.dumps(events)
    assert USER not in text and "4af4980629" not in text and "seat-1" not in text


class FakeIntake:
    def __init__(self) -> None:
        self.sent: list[list[dict]] = []

    def __call__(self, events: list[dict]) -> SendReport:
        self.sent.append(events)
        report = SendReport()
        report.add([{"id": e["id"], "status": "accepted", "problems": []} for e in events])
        return report


def test_the_console_command_sends_through_the_receivers_state_file(monkeypatch, tmp_path):
    state_file = tmp_path / "line-state.sqlite3"
    opened(State(state_file))
    moments = tmp_path / "moments.jsonl"
    moments.write_text(json.dumps(moment("answered", 4)) + "\n" + json.dumps(moment("ended", 30)) + "\n")
    intake = FakeIntake()
    monkeypatch.setattr(line, "intake_sender", lambda url, key: intake)
    monkeypatch.setenv("TSUNAGU_API_KEY", "tsg_env_key")
    args = ["console", "--config", str(SAMPLES / "mapping.yaml"), "--partner", "npo-a", "--state-file",
            str(state_file), str(moments)]
    dry = CliRunner().invoke(line.app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert [short(json.loads(x)) for x in dry.output.splitlines()] == ["contact.answered", "contact.ended"]
    assert intake.sent == [] and State(state_file).count() == 1  # a dry run keeps nothing
    result = CliRunner().invoke(line.app, args)
    assert result.exit_code == 0, result.output
    assert [short(e) for e in intake.sent[0]] == ["contact.answered", "contact.ended"]
    assert USER not in result.output and State(state_file).count() == 2  # the conversation and its handling


def test_a_console_file_sent_again_after_the_person_opened_a_new_conversation_finds_the_old_one():
    state = State()
    first = opened(state)
    moments = [moment("answered", 4), moment("ended", 20)]
    before = console(state, *moments).events
    second = opened(state, 30)
    assert second != first
    again = console(state, *moments).events
    assert again == before and {e["subject"] for e in again} == {first}
    [answered] = console(state, moment("answered", 33)).events  # a moment after it opened: the new one
    assert answered["subject"] == second and answered["data"]["wait_seconds"] == 180.0
