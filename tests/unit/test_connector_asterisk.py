"""The Asterisk queue_log connector without a network: parsing, the mapping of each queue_log event to
the contract, the all-or-nothing policy for unmappable input, the config, the commands, and following a
live log through rotation, truncation and restarts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from schemas import validate_event
from schemas.envelope import looks_like_phone
from tsunagu_connectors import ids
from tsunagu_connectors.asterisk import app
from tsunagu_connectors.asterisk_follow import Follower, load_state
from tsunagu_connectors.asterisk_queue_log import (
    CallMapper,
    ConfigError,
    Line,
    caller_id,
    load_mapping,
    map_text,
    parse_line,
)
from tsunagu_connectors.report import SendReport, Unmapped

SAMPLES = Path(__file__).resolve().parents[2] / "tsunagu_connectors" / "samples" / "asterisk"
MAPPING = load_mapping((SAMPLES / "mapping.yaml").read_text())
CONFIG = """
queues:
  lonely: {field: loneliness, menu_position: 1}
  dying: {field: suicidal, menu_position: 2}
desks:
  SIP/201: npo-a-desk-1
  SIP/202: npo-a-desk-2
"""
CALLER = "09012345678"


def mapped(text: str, config: str = CONFIG, partner: str = "npo-a"):
    return map_text([("queue_log", text)], partner, load_mapping(config))


def short(e: dict[str, Any]) -> str:
    return e["type"].removeprefix("jp.tsunagu.").removesuffix(".v1")


def summary(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(short(e), {k: v for k, v in e["data"].items() if k != "contact_id"}) for e in events]


def enter(callid: str, queue: str = "lonely", at: int = 1657155600, caller: str = CALLER) -> str:
    return f"{at}|{callid}|{queue}|NONE|ENTERQUEUE||{caller}|1"


# --- parsing ---------------------------------------------------------------------------------------


def test_a_line_is_split_into_its_documented_fields():
    line = parse_line("1366720340|1366720340.303267|MYQUEUE|SIP/8007|RINGNOANSWER|1000\n", 1)
    assert isinstance(line, Line)
    assert (line.callid, line.queue, line.agent, line.event, line.data) == (
        "1366720340.303267", "MYQUEUE", "SIP/8007", "RINGNOANSWER", ("1000",))
    assert line.at.isoformat() == "2013-04-23T12:32:20+00:00"


@pytest.mark.parametrize(("text", "reason"), [
    ("1366720340|1366720340.3|MYQUEUE|SIP/8007", "fewer than 5 fields"),
    ("yesterday|1366720340.3|MYQUEUE|SIP/8007|CONNECT|2", "not a UNIX time"),
    ("1366720340|1366720340.3|MYQUEUE|SIP/8007|connect me|2", "not a queue_log event name"),
])
def test_a_malformed_line_is_refused_with_its_number_and_never_its_content(text, reason):
    refused = parse_line(text, 7)
    assert isinstance(refused, Unmapped) and refused.where == "line 7" and reason in refused.reason
    assert "SIP/8007" not in str(refused) and "1366720340" not in str(refused)


def test_blank_lines_are_nothing():
    assert parse_line("\n", 1) is None and parse_line("  \r\n", 2) is None


@pytest.mark.parametrize(("raw", "sent"), [
    (CALLER, CALLER), ("090-1234-5678", CALLER), ("+81 90 1234 5678", "+819012345678"),
    ("", None), ("anonymous", None), ("Restricted", None), ("201", None), ("<unknown>", None),
])
def test_only_a_dialable_caller_id_is_sent_withheld_and_extensions_are_not(raw, sent):
    assert caller_id(raw) == sent


# --- mapping ---------------------------------------------------------------------------------------


def test_the_documentation_sample_maps_to_two_answered_contacts():
    batch = map_text([("queue_log", (SAMPLES / "queue_log").read_text())], "npo-a", MAPPING)
    assert not batch.unmapped and batch.calls == 2
    events = batch.events(skip_unmappable=False)
    assert summary(events) == [
        ("contact.received", {"channel": "phone", "caller_id": "4165551212"}),
        ("contact.field_selected", {"field": "suicidal", "menu_position": 1}),
        ("contact.answered", {"desk_id": "npo-a-desk-1", "organisation_id": "npo-a", "wait_seconds": 2.0}),
        ("contact.ended", {"talk_seconds": 3073.0, "desk_id": "npo-a-desk-1"}),
        ("contact.received", {"channel": "phone", "caller_id": "4165551212"}),
        ("contact.field_selected", {"field": "suicidal", "menu_position": 1}),
        ("contact.answered", {"desk_id": "npo-a-desk-1", "organisation_id": "npo-a", "wait_seconds": 2.0}),
    ]
    assert events[0]["time"] == "2010-12-13T22:57:26+00:00"  # 1292281046
    assert {e["source"] for e in events} == {"/partners/npo-a/asterisk"}
    for e in events:
        validate_event(e, form="ingress")


def test_the_caller_number_travels_only_in_caller_id_and_no_id_carries_a_platform_value():
    events = mapped(enter("1657155600.12") + "\n1657155630|1657155600.12|lonely|NONE|ABANDON|1|1|30\n").events(False)
    for e in events:
        without_caller = {**e, "data": {k: v for k, v in e["data"].items() if k != "caller_id"}}
        text = json.dumps(without_caller)
        assert CALLER not in text and "1657155600.12" not in text and not looks_like_phone(e["id"])
    assert [e["data"].get("caller_id") for e in events] == [CALLER, None, None]


def test_non_call_lines_are_skipped_without_being_errors():
    text = "\n".join([
        "1657155000|NONE|NONE|NONE|QUEUESTART|",
        "1657155001|MANAGER|lonely|SIP/201|ADDMEMBER|",
        "1657155002|NONE|lonely|SIP/201|PAUSE|lunch",
        "1657155003|NONE|NONE|Agent/3001|AGENTLOGIN|SIP/201",
        "1657155004|NONE|lonely|SIP/999|UNPAUSE|",  # an unmapped member's own lines are no call
        "1657155005|REALTIME|lonely|SIP/201|CONFIGRELOAD|",
    ])
    batch = mapped(text)
    assert batch.lines == 6 and not batch.unmapped and batch.events(False) == []


@pytest.mark.parametrize(("exit_line", "stage", "wait"), [
    ("ABANDON|3|5|47", "queue", 47.0),
    ("EXITWITHTIMEOUT|1|2|45", "queue", 45.0),
    ("EXITWITHKEY|9|1|1|31", "queue", 31.0),
    ("EXITEMPTY|1|1|4", "queue", 4.0),
])
def test_every_way_of_leaving_the_queue_unanswered_is_an_abandonment_with_its_wait(exit_line, stage, wait):
    events = mapped(enter("c1") + f"\n1657155700|c1|lonely|NONE|{exit_line}\n").events(False)
    assert summary(events)[-1] == ("contact.abandoned", {"stage": stage, "wait_seconds": wait})


def test_a_caller_hanging_up_while_a_desk_rings_abandons_at_the_ringing_stage():
    text = "\n".join([enter("c1"), "1657155610|c1|lonely|SIP/201|RINGNOANSWER|15000",
                      "1657155630|c1|lonely|SIP/202|RINGCANCELED|4000", "1657155630|c1|lonely|NONE|ABANDON|1|1|30"])
    assert summary(mapped(text).events(False))[-1] == ("contact.abandoned", {"stage": "ringing", "wait_seconds": 30.0})
    rang_then_waited = "\n".join([enter("c2"), "1657155610|c2|lonely|SIP/201|RINGNOANSWER|15000",
                                  "1657155630|c2|lonely|NONE|ABANDON|1|1|30"])
    assert summary(mapped(rang_then_waited).events(False))[-1][1]["stage"] == "queue"


@pytest.mark.parametrize("end_line", [
    "COMPLETECALLER|12|300|1", "COMPLETEAGENT|12|300|1", "TRANSFER|2000|from-internal|12|300|1",
    "BLINDTRANSFER|2000|from-internal|12|300|1", "ATTENDEDTRANSFER|BRIDGE|c9|12|300|1",
])
def test_completions_and_transfers_end_the_talk_with_its_calltime(end_line):
    text = "\n".join([enter("c1"), "1657155612|c1|dying|SIP/202|CONNECT|12|c1-b|3",
                      f"1657155912|c1|dying|SIP/202|{end_line}"])
    assert summary(mapped(text).events(False))[2:] == [
        ("contact.answered", {"desk_id": "npo-a-desk-2", "organisation_id": "npo-a", "wait_seconds": 12.0}),
        ("contact.ended", {"talk_seconds": 300.0, "desk_id": "npo-a-desk-2"}),
    ]


def test_a_call_entering_another_queue_after_a_timeout_is_one_contact_in_its_latest_field():
    text = "\n".join([enter("c1", "lonely"), "1657155645|c1|lonely|NONE|EXITWITHTIMEOUT|1|1|45",
                      enter("c1", "dying", at=1657155646), "1657155650|c1|dying|SIP/201|CONNECT|4|c1-b|2"])
    events = mapped(text).events(False)
    assert [short(e) for e in events] == ["contact.received", "contact.field_selected", "contact.abandoned",
                                          "contact.field_selected", "contact.answered"]
    assert len({e["subject"] for e in events}) == 1 and len({e["id"] for e in events}) == 5
    assert events[3]["data"]["field"] == "suicidal"


def test_a_caller_turned_away_at_the_door_is_an_attempt_not_connected():
    events = mapped("1657155600|c1|dying|NONE|JOINEMPTY|\n").events(False)
    assert summary(events) == [("contact.received", {"channel": "phone"}),
                               ("contact.field_selected", {"field": "suicidal", "menu_position": 2}),
                               ("contact.abandoned", {"stage": "queue", "wait_seconds": 0.0})]


def test_lines_that_change_nothing_counted_are_skipped_even_without_their_call():
    batch = mapped("1366720340|1366720340.303267|lonely|SIP/201|RINGNOANSWER|1000\n"
                   "1366720341|1366720340.303267|lonely|SIP/201|AGENTDUMP|\n")
    assert batch.lines == 2 and not batch.unmapped and batch.events(False) == []


def test_the_same_lines_give_the_same_ids_and_another_partner_other_ids():
    text = enter("c1") + "\n1657155612|c1|dying|SIP/202|CONNECT|12|c1-b|3\n"
    first, again, other = mapped(text).events(False), mapped(text).events(False), mapped(text, partner="npo-b")
    assert [e["id"] for e in first] == [e["id"] for e in again]
    assert not {e["id"] for e in first} & {e["id"] for e in other.events(False)}
    assert first[0]["subject"] == ids.contact_id("asterisk", "npo-a", "c1")


# --- what cannot be mapped -------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "reason"), [
    (enter("c2", "unknown-queue"), "queue is not in the mapping config"),
    ("1657155612|c1|lonely|SIP/999|CONNECT|12|c1-b|3", "agent is not in the mapping config"),
    ("1657155612|c1|lonely|SIP/201|CONNECT|soon|c1-b|3", "holdtime is not a number"),
    ("1657155612|c1|lonely|NONE|ABANDON|1|1|", "waittime is not a number"),
    ("1657155612|c1|lonely|SIP/201|COMPLETECALLER|12|-5|1", "calltime is not a number"),
    ("1657155612|c1|lonely|SIP/201|COMPLETEAGENT|12|5|1", "never connected"),
    ("1657155612|c9|lonely|SIP/201|CONNECT|12|c9-b|3", "ENTERQUEUE is not in the input"),
    ("1657155612|c1|lonely|SIP/201|TELEPORTED|x", "unknown queue_log event TELEPORTED"),
])
def test_an_unmappable_line_is_reported_with_its_reason_and_changes_nothing(line, reason):
    mapper = CallMapper("npo-a", load_mapping(CONFIG))
    first = parse_line(enter("c1"), 1)
    assert isinstance(first, Line)
    mapper.map(first)
    before = {c: call.to_json() for c, call in mapper.calls.items()}
    parsed = parse_line(line, 2)
    assert isinstance(parsed, Line)
    result = mapper.map(parsed)
    assert result.events == [] and result.unmapped is not None
    assert result.unmapped.where == "line 2" and reason in result.unmapped.reason
    assert "SIP/999" not in str(result.unmapped) and CALLER not in str(result.unmapped)
    assert {c: call.to_json() for c, call in mapper.calls.items()} == before


def test_a_file_with_an_unmappable_line_sends_nothing_unless_told_and_then_only_whole_calls():
    text = "\n".join([
        enter("c1"), "1657155612|c1|lonely|SIP/201|CONNECT|12|c1-b|3",
        enter("c2", at=1657155700), "1657155712|c2|lonely|SIP/999|CONNECT|12|c2-b|3",  # unknown agent
        "1657155800|c2|lonely|SIP/999|COMPLETECALLER|12|88|1",
        "garbage",
    ])
    batch = mapped(text)
    assert [str(u) for u in batch.unmapped] == [
        "queue_log line 4: agent is not in the mapping config (desks:)",
        "queue_log line 5: COMPLETECALLER of a call that was never connected",
        "queue_log line 6: fewer than 5 fields (epoch|callid|queuename|agent|event)",
    ]
    assert batch.events(skip_unmappable=False) == []
    sent = batch.events(skip_unmappable=True)
    assert {e["subject"] for e in sent} == {ids.contact_id("asterisk", "npo-a", "c1")} and len(sent) == 3


def test_two_files_read_in_order_are_one_stream():
    older = enter("c1") + "\n"
    newer = "1657155612|c1|lonely|SIP/201|CONNECT|12|c1-b|3\n"
    batch = map_text([("queue_log.1", older), ("queue_log", newer)], "npo-a", load_mapping(CONFIG))
    assert not batch.unmapped and [short(e) for e in batch.events(False)][-1] == "contact.answered"
    alone = map_text([("queue_log", newer)], "npo-a", load_mapping(CONFIG))
    assert [str(u) for u in alone.unmapped] == ["queue_log line 1: CONNECT of a call whose ENTERQUEUE is not in "
                                                "the input"]


# --- the mapping config ----------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "says"), [
    ("queues: [", "not YAML"),
    ("queues: {}", "queues"),
    ("queues: {q: {field: astrology, menu_position: 1}}", "queues.q.field"),
    ("queues: {q: {field: suicidal, menu_position: 10}}", "queues.q.menu_position"),
    ("queues: {q: {field: suicidal, menu_position: '1'}}", "queues.q.menu_position"),
    ("queues: {q: {field: suicidal, menu_position: 1}}\ndesks: {SIP/1: '090-1234-5678'}", "desks"),
    ("queues: {q: {field: suicidal, menu_position: 1}}\ndesks: {SIP/1: 'desk one'}", "desks"),
    ("queues: {q: {field: suicidal, menu_position: 1}}\ncolour: blue", "colour"),
])
def test_a_config_that_cannot_be_used_is_refused_naming_the_setting_not_the_value(config, says):
    with pytest.raises(ConfigError, match=says) as err:
        load_mapping(config)
    assert "090-1234-5678" not in str(err.value)


# --- the commands ----------------------------------------------------------------------------------


runner = CliRunner()


def test_import_dry_run_maps_the_documentation_sample(tmp_path):
    result = runner.invoke(app, ["import", str(SAMPLES / "queue_log"), "--partner", "npo-a",
                                 "--config", str(SAMPLES / "mapping.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "14 lines, 2 calls, 0 unmappable lines; 7 events to send" in result.output


def test_import_of_a_file_with_unmappable_lines_sends_nothing_and_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TSUNAGU_API_KEY", "k")
    log = tmp_path / "queue_log"
    log.write_text(enter("c1", "nowhere") + "\n")
    config = tmp_path / "mapping.yaml"
    config.write_text(CONFIG)
    result = runner.invoke(app, ["import", str(log), "--partner", "npo-a", "--config", str(config),
                                 "--intake-url", "http://127.0.0.1:9"])  # nothing listens: nothing is tried
    assert result.exit_code == 1
    assert "queue_log line 1: queue is not in the mapping config" in result.output
    assert "nothing sent" in result.output and CALLER not in result.output


def test_import_without_a_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("TSUNAGU_API_KEY", raising=False)
    result = runner.invoke(app, ["import", str(SAMPLES / "queue_log"), "--partner", "npo-a",
                                 "--config", str(SAMPLES / "mapping.yaml")])
    assert result.exit_code == 2 and "no API key" in result.output


def test_a_broken_config_is_refused_before_anything_is_read(tmp_path):
    config = tmp_path / "mapping.yaml"
    config.write_text("queues: {q: {field: astrology, menu_position: 1}}")
    result = runner.invoke(app, ["import", str(SAMPLES / "queue_log"), "--partner", "npo-a",
                                 "--config", str(config), "--dry-run"])
    assert result.exit_code == 2 and "queues.q.field" in result.output


# --- following a live log --------------------------------------------------------------------------


class Intake:
    """Intake's answers as far as the follower cares: accepted once per id, duplicate after."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.posts = 0

    def send(self, events: list[dict[str, Any]]) -> SendReport:
        self.posts += 1
        report = SendReport()
        report.add([{"id": e["id"], "status": "duplicate" if e["id"] in self.stored else "accepted"}
                    for e in events])
        for e in events:
            self.stored.setdefault(e["id"], e)
        return report


def call_lines(n: int, queue: str = "lonely", t0: int = 1657155600) -> list[str]:
    """Call ``n``: enters, is answered by SIP/201 after 5 s, ends after 60 s."""
    t = t0 + 100 * n
    return [enter(f"call-{n}", queue, at=t), f"{t + 5}|call-{n}|{queue}|SIP/201|CONNECT|5|b-{n}|2",
            f"{t + 65}|call-{n}|{queue}|SIP/201|COMPLETEAGENT|5|60|1"]


def append(path: Path, lines: list[str], *, end: str = "\n") -> None:
    with open(path, "a") as f:
        f.write("".join(line + end for line in lines))


class Script:
    """An injected sleep: each pause of the follower runs the next step (writing, rotating); a fake clock."""

    def __init__(self, *steps) -> None:
        self.steps = list(steps)
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.steps:
            self.steps.pop(0)()

    def clock(self) -> float:
        return self.now


def quiet() -> dict[str, Any]:
    """A fake clock and sleep for a follower that should stop once the log has no new line."""
    script = Script()
    return {"sleep": script.sleep, "clock": script.clock}


def follower(tmp_path: Path, intake: Intake, config: str = CONFIG, **kw) -> Follower:
    return Follower(tmp_path / "queue_log", tmp_path / "state.json", CallMapper("npo-a", load_mapping(config)),
                    intake.send, say=lambda _m: None, **kw)


def per_call(intake: Intake) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in intake.stored.values():
        out.setdefault(e["subject"], []).append(short(e))
    return out


def test_follow_reads_appended_lines_through_rotation_and_truncation(tmp_path):
    log = tmp_path / "queue_log"
    append(log, call_lines(0))
    intake = Intake()

    def rotate() -> None:
        append(log, call_lines(1)[:2])
        os.rename(log, tmp_path / "queue_log.1")
        append(tmp_path / "queue_log.1", call_lines(1)[2:])  # written before Asterisk reopened its log
        append(log, call_lines(2))

    def truncate() -> None:
        log.write_text("")
        append(log, call_lines(3)[:1])

    half_line = call_lines(3)[1]
    script = Script(lambda: append(log, call_lines(0)[:0]), rotate, lambda: None, truncate,
                    lambda: append(log, [half_line[:10]], end=""), lambda: append(log, [half_line[10:]]))
    code = follower(tmp_path, intake).run(poll=1.0, idle_exit=5.0, sleep=script.sleep, clock=script.clock)
    assert code == 0
    calls = per_call(intake)
    assert len(calls) == 4
    assert sorted(map(len, calls.values())) == [3, 4, 4, 4]  # call 3: received, field, answered
    position, _ = load_state(tmp_path / "state.json", "npo-a")
    assert position is not None and position.offset == log.stat().st_size and position.line == 2


def test_follow_resumes_after_a_restart_and_after_a_rotation_while_stopped(tmp_path):
    log = tmp_path / "queue_log"
    append(log, call_lines(0) + call_lines(1)[:2])
    intake = Intake()
    assert follower(tmp_path, intake).run(idle_exit=1.0, **quiet()) == 0
    posts = intake.posts
    # stopped; the call goes on, the log is rotated, the new log fills
    append(log, call_lines(1)[2:])
    os.rename(log, tmp_path / "queue_log.1")
    append(log, call_lines(2))
    script = Script()
    assert follower(tmp_path, intake).run(idle_exit=1.0, sleep=script.sleep, clock=script.clock) == 0
    assert intake.posts > posts
    calls = per_call(intake)
    assert sorted(map(len, calls.values())) == [4, 4, 4]
    # nothing was sent twice: every id stored was posted once
    assert sum(1 for _ in intake.stored) == 12


def test_follow_stops_before_a_line_it_cannot_map_and_resumes_there_once_the_config_is_fixed(tmp_path):
    log = tmp_path / "queue_log"
    append(log, call_lines(0) + call_lines(1, queue="new-queue") + call_lines(2))
    intake = Intake()
    assert follower(tmp_path, intake).run(idle_exit=1.0, **quiet()) == 1
    assert len(per_call(intake)) == 1
    position, _ = load_state(tmp_path / "state.json", "npo-a")
    assert position is not None and position.line == 3
    fixed = CONFIG.replace("queues:\n", "queues:\n  new-queue: {field: hardship, menu_position: 3}\n")
    assert follower(tmp_path, intake, fixed).run(idle_exit=1.0, **quiet()) == 0
    assert sorted(map(len, per_call(intake).values())) == [4, 4, 4]


def test_follow_with_skip_unmappable_reports_the_line_and_goes_on(tmp_path):
    log = tmp_path / "queue_log"
    append(log, call_lines(0) + ["nonsense"] + call_lines(1))
    intake, said = Intake(), []
    f = Follower(log, tmp_path / "state.json", CallMapper("npo-a", load_mapping(CONFIG)), intake.send,
                 skip_unmappable=True, say=said.append)
    assert f.run(idle_exit=1.0, **quiet()) == 0
    assert len(per_call(intake)) == 2 and "cannot map queue_log line 4: fewer than 5 fields" in " ".join(said)


def test_the_state_file_holds_no_platform_value_and_belongs_to_one_partner(tmp_path):
    log = tmp_path / "queue_log"
    append(log, call_lines(0)[:2])
    intake = Intake()
    follower(tmp_path, intake).run(idle_exit=1.0, **quiet())
    state = (tmp_path / "state.json").read_text()
    assert CALLER not in state and "call-0" not in state and "SIP/201" not in state
    with pytest.raises(ValueError, match="another partner"):
        load_state(tmp_path / "state.json", "npo-b")


def test_a_half_line_left_in_a_rotated_log_does_not_hold_the_follower_back(tmp_path):
    log = tmp_path / "queue_log"
    append(log, call_lines(0))
    intake = Intake()

    def rotate_after_a_half_line() -> None:
        append(log, [call_lines(1)[0][:12]], end="")  # Asterisk stopped mid-line
        os.rename(log, tmp_path / "queue_log.1")
        append(log, call_lines(2))

    script = Script(rotate_after_a_half_line)
    assert follower(tmp_path, intake).run(idle_exit=3.0, sleep=script.sleep, clock=script.clock) == 0
    assert sorted(map(len, per_call(intake).values())) == [4, 4]
    position, _ = load_state(tmp_path / "state.json", "npo-a")
    assert position is not None and position.inode == log.stat().st_ino and position.line == 3
