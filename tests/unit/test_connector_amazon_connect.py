"""The Amazon Connect connector's pure side: reading CTR files in every delivered shape, mapping one
record to the contract, the import's policy (latest version, transfers, nothing half-sent) and the
command, without intake."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from schemas import validate_event
from schemas.envelope import looks_like_phone
from tests.integration.amazon_connect_support import START, counts_from_raw, ctr, generated_ctrs, mapping_doc, ts
from tsunagu_connectors import amazon_connect as ac
from tsunagu_connectors.client import IntakeClient

SAMPLES = Path(ac.__file__).parent / "samples" / "amazon_connect"
MAPPING = ac.mapping_from(mapping_doc())
T = START


def located(*records: object) -> list[ac.Located]:
    return [ac.Located(f"test record {n}", r) for n, r in enumerate(records, start=1)]


def kinds(events: list[dict]) -> list[str]:
    return [e["type"].removeprefix("jp.tsunagu.").removesuffix(".v1") for e in events]


def answered_call(cid: str = "c-1", **kw) -> dict:
    return ctr(cid, queue="Suicidal", enqueued=T + timedelta(seconds=20), agent="counsellor01",
               connected=T + timedelta(seconds=65), end=T + timedelta(seconds=665), **kw)


# --- reading ---------------------------------------------------------------------------------------------


def test_firehose_objects_back_to_back_json_lines_and_an_array_read_alike():
    records = [ctr("a"), ctr("b"), ctr("c")]
    concatenated = "".join(json.dumps(r) for r in records)
    for text in (concatenated, "\n".join(json.dumps(r) for r in records) + "\n", json.dumps(records),
                 "".join(json.dumps(r, indent=2) for r in records)):
        assert ac.records_in_text(text) == (records, None)


def test_a_file_that_stops_being_json_keeps_what_came_before_and_says_where():
    found, error = ac.records_in_text(json.dumps(ctr("a")) + '{"ContactId": "b", ')
    assert [r["ContactId"] for r in found] == ["a"] and error is not None and "record 2" in error
    assert ac.records_in_text("[{]")[1] is not None
    assert ac.records_in_text('{"a": 1}')[1] is None and ac.records_in_text("   \n") == ([], None)


def test_a_directory_reads_gzip_and_plain_records_but_not_readmes_configs_or_hidden_files(tmp_path):
    (tmp_path / "2022" / "07").mkdir(parents=True)
    (tmp_path / "2022" / "07" / "obj-1").write_text(json.dumps(ctr("a")))
    (tmp_path / "2022" / "07" / "obj-2.gz").write_bytes(gzip.compress(json.dumps(ctr("b")).encode()))
    (tmp_path / "README.md").write_text("# not records")
    (tmp_path / "mapping.yaml").write_text("queues: {}")
    (tmp_path / ".hidden").write_text("{")
    records, problems = ac.read_ctrs([tmp_path])
    assert [r.record["ContactId"] for r in records] == ["a", "b"] and problems == []
    assert records[1].where.endswith("obj-2.gz record 1")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe\x00garbage")
    assert [p.where for p in ac.read_ctrs([tmp_path])[1]] == [str(tmp_path / "bad.json")]


# --- one record ------------------------------------------------------------------------------------------


def test_an_answered_call_is_received_chosen_answered_and_ended_with_wait_and_talk():
    events = ac.events_of_ctr(answered_call(), MAPPING, "npo-a")
    assert kinds(events) == ["contact.received", "contact.field_selected", "contact.answered", "contact.ended"]
    data = [e["data"] for e in events]
    assert data[0]["channel"] == "phone" and data[0]["caller_id"] == "+819012340001"
    assert (data[1]["field"], data[1]["menu_position"]) == ("suicidal", 2)
    assert (data[2]["desk_id"], data[2]["organisation_id"], data[2]["wait_seconds"]) == ("npo-a-desk-1", "npo-a", 45.0)
    assert (data[3]["talk_seconds"], data[3]["desk_id"]) == (600.0, "npo-a-desk-1")
    assert len({d["contact_id"] for d in data}) == 1 and len({e["id"] for e in events}) == 4
    assert [datetime.fromisoformat(e["time"]) for e in events] == sorted(datetime.fromisoformat(e["time"])
                                                                          for e in events)
    for e in events:
        validate_event(e, form="ingress")
        assert e["source"] == "/partners/npo-a/amazon-connect"


def test_hanging_up_before_any_queue_is_the_voice_menu_and_in_the_queue_is_the_queue():
    ivr = ac.events_of_ctr(ctr("c-1", end=T + timedelta(seconds=12)), MAPPING, "npo-a")
    assert kinds(ivr) == ["contact.received", "contact.abandoned"]
    assert ivr[1]["data"] | {"contact_id": None} == {"contact_id": None, "stage": "ivr", "wait_seconds": 12.0}
    queued = ac.events_of_ctr(ctr("c-2", queue="Hardship", enqueued=T + timedelta(seconds=20),
                                  end=T + timedelta(seconds=140)), MAPPING, "npo-a")
    assert kinds(queued) == ["contact.received", "contact.field_selected", "contact.abandoned"]
    assert (queued[2]["data"]["stage"], queued[2]["data"]["wait_seconds"]) == ("queue", 120.0)


def test_an_agent_listed_without_a_connection_did_not_answer():
    record = ctr("c-1", queue="Hardship", agent="counsellor01", connected=None, end=T + timedelta(seconds=90))
    assert kinds(ac.events_of_ctr(record, MAPPING, "npo-a"))[-1] == "contact.abandoned"


def test_a_chat_has_no_caller_id_and_a_withheld_number_is_sent_as_withheld():
    chat = ac.events_of_ctr(answered_call(method="API", channel="CHAT", phone=None), MAPPING, "npo-a")
    assert chat[0]["data"] == {"contact_id": chat[0]["subject"], "channel": "chat"}
    for address in ("anonymous", "+8112", "Restricted"):
        received = ac.events_of_ctr(ctr("c-1", phone=address), MAPPING, "npo-a")[0]
        assert "caller_id" not in received["data"]
    old_style = answered_call(channel="Voice")  # the older data model pages spell channels "Voice", "Chat"
    assert ac.events_of_ctr(old_style, MAPPING, "npo-a")[0]["data"]["channel"] == "phone"


def chat(first_response: datetime | None, **metrics) -> dict:
    """An answered chat (connected 65 s in) whose record carries Amazon Connect's chat metrics."""
    record = answered_call(method="API", channel="CHAT", phone=None)
    contact = {"TotalMessages": 12, **metrics}
    if first_response is not None:
        contact["AgentFirstResponseTimestamp"] = ts(first_response)
    return record | {"ChatMetrics": {"ChatContactMetrics": contact}}


def test_a_chat_is_answered_at_the_counsellors_first_response_and_talks_from_there():
    events = ac.events_of_ctr(chat(T + timedelta(seconds=95)), MAPPING, "npo-a")
    assert kinds(events) == ["contact.received", "contact.field_selected", "contact.answered", "contact.ended"]
    assert events[0]["data"]["channel"] == "chat"
    answered, ended = events[2], events[3]
    # enqueued at 20 s, the agent took it at 65 s, the first response came at 95 s
    assert answered["data"]["wait_seconds"] == 75.0
    assert datetime.fromisoformat(answered["time"]) == datetime.fromisoformat(ts(T + timedelta(seconds=95)))
    assert ended["data"]["talk_seconds"] == 570.0
    for e in events:
        validate_event(e, form="ingress")


def test_a_chat_without_chat_metrics_is_answered_when_the_agent_connected():
    events = ac.events_of_ctr(answered_call(method="API", channel="CHAT", phone=None), MAPPING, "npo-a")
    assert events[2]["data"]["wait_seconds"] == 45.0 and events[3]["data"]["talk_seconds"] == 600.0


def test_a_chat_the_person_left_before_any_first_response_is_abandoned_while_offered():
    events = ac.events_of_ctr(chat(None), MAPPING, "npo-a")
    assert kinds(events) == ["contact.received", "contact.field_selected", "contact.abandoned"]
    assert events[2]["data"]["stage"] == "ringing" and events[2]["data"]["wait_seconds"] == 645.0


def test_a_chat_first_response_before_the_agent_connected_is_refused():
    with pytest.raises(ac.CtrUnmappable, match="first response is before"):
        ac.events_of_ctr(chat(T + timedelta(seconds=30)), MAPPING, "npo-a")


def test_a_voice_call_ignores_chat_metrics():
    record = answered_call() | {"ChatMetrics": {"ChatContactMetrics": {}}}
    assert kinds(ac.events_of_ctr(record, MAPPING, "npo-a"))[-1] == "contact.ended"


def test_queues_and_agents_map_by_name_or_arn_and_a_default_desk_catches_the_rest():
    record = answered_call()
    by_arn = ac.mapping_from({"queues": {record["Queue"]["ARN"]: {"field": "women_dv", "key": 4}},
                              "agents": {record["Agent"]["ARN"]: "desk-x"}})
    events = ac.events_of_ctr(record, by_arn, "npo-a")
    assert events[1]["data"]["field"] == "women_dv" and events[2]["data"]["desk_id"] == "desk-x"
    fallback = ac.mapping_from({"queues": {"Suicidal": {"field": "suicidal", "key": 2}}, "default_desk": "pool"})
    assert ac.events_of_ctr(record, fallback, "npo-a")[2]["data"]["desk_id"] == "pool"


@pytest.mark.parametrize(("change", "reason"), [
    (lambda r: r.update(Queue={**r["Queue"], "Name": "Billing", "ARN": "arn:x"}), "queue 'Billing' is not in"),
    (lambda r: r["Agent"].update(Username="stranger", ARN="arn:y"), "agent is not in the mapping"),
    (lambda r: r.update(DisconnectTimestamp=None), "DisconnectTimestamp is missing"),
    (lambda r: r.update(InitiationTimestamp="2022-07-07T01:00:00"), "InitiationTimestamp is not an ISO 8601"),
    (lambda r: r.update(InitiationTimestamp="yesterday"), "InitiationTimestamp is not an ISO 8601"),
    (lambda r: r["Agent"].update(ConnectedToAgentTimestamp="2022-07-07T00:59:00Z"), "wait is negative"),
    (lambda r: r.update(DisconnectTimestamp="2022-07-07T01:01:00Z"), "talk is negative"),
    (lambda r: r["Queue"].pop("EnqueueTimestamp"), "Queue.EnqueueTimestamp is missing"),
    (lambda r: r.update(Queue="Suicidal"), "Queue is not an object"),
    (lambda r: r.update(Queue=None), "connected to an agent without a queue"),
    (lambda r: r.pop("ContactId"), "ContactId is missing"),
    (lambda r: r.update(Channel=None), "Channel is missing"),
])
def test_a_record_that_cannot_be_mapped_says_why_and_never_what_it_holds(change, reason):
    record = answered_call()
    change(record)
    with pytest.raises(ac.CtrUnmappable, match=reason) as err:
        ac.events_of_ctr(record, MAPPING, "npo-a")
    assert "9012340001" not in str(err.value) and "counsellor" not in str(err.value)


def test_not_an_object_is_unmappable():
    with pytest.raises(ac.CtrUnmappable, match="not a JSON object"):
        ac.segment_of(["ContactId"])


def test_ids_come_from_the_platform_ids_and_carry_no_phone_number():
    one, again = (ac.events_of_ctr(answered_call("5f0c2a7e-0900-1234-5678"), MAPPING, "npo-a") for _ in range(2))
    assert [e["id"] for e in one] == [e["id"] for e in again]
    other_org = ac.events_of_ctr(answered_call("5f0c2a7e-0900-1234-5678"), MAPPING, "npo-b")
    assert not {e["id"] for e in one} & {e["id"] for e in other_org}
    for e in one:
        assert not looks_like_phone(e["id"]) and not looks_like_phone(e["subject"])
        assert "9012340001" not in json.dumps({k: v for k, v in e["data"].items() if k != "caller_id"})


# --- a whole import --------------------------------------------------------------------------------------


def test_the_documented_sample_maps_as_its_readme_says():
    records, problems = ac.read_ctrs([SAMPLES])
    plan = ac.plan_import(records, ac.load_mapping(SAMPLES / "mapping.yaml"), "npo-a", unreadable=problems)
    assert plan.unmapped == [] and plan.superseded == 1 and plan.contacts == 6
    assert sorted(plan.skipped.values()) == [1, 1]  # the agent's transfer and the outbound call
    assert Counter(kinds(plan.events)) == {"contact.received": 6, "contact.field_selected": 5,
                                           "contact.answered": 4, "contact.ended": 4, "contact.abandoned": 3}
    by_contact: dict[str, list[str]] = {}
    for e in plan.events:
        by_contact.setdefault(e["subject"], []).append(kinds([e])[0])
    moved = [k for k in by_contact.values() if "contact.abandoned" in k and "contact.answered" in k]
    assert len(moved) == 1  # the queue-transferred caller: hung up on the first queue, answered on the second
    for e in plan.events:
        validate_event(e, form="ingress")


def test_a_queue_transfer_answers_for_the_first_contact_and_an_agent_transfer_adds_nothing():
    root = ctr("c-1", queue="Hardship", end=T + timedelta(seconds=100), next_id="c-2")
    moved = answered_call("c-2", method="QUEUE_TRANSFER", initial="c-1", previous="c-1")
    moved["Queue"]["Name"] = "Not-mapped-overflow"  # a queue the person did not choose needs no mapping
    handed = answered_call("c-3", method="TRANSFER", initial="c-2", previous="c-2")
    plan = ac.plan_import(located(handed, moved, root), MAPPING, "npo-a")
    assert plan.unmapped == [] and plan.contacts == 1
    assert {e["subject"] for e in plan.events} == {ac.ids.contact_id("amazon-connect", "npo-a", "c-1")}
    assert Counter(kinds(plan.events)) == {"contact.received": 1, "contact.field_selected": 1,
                                           "contact.abandoned": 1, "contact.answered": 1, "contact.ended": 1}
    assert plan.skipped == {"transfer by an agent: the person was counted and answered on the first segment": 1}


@pytest.mark.parametrize("method", ["OUTBOUND", "CALLBACK", "MONITOR", "DISCONNECT", "SOMETHING_NEW"])
def test_contacts_no_person_started_are_skipped_and_counted(method):
    plan = ac.plan_import(located(answered_call(method=method)), MAPPING, "npo-a")
    assert plan.events == [] and plan.unmapped == [] and sum(plan.skipped.values()) == 1
    task = ac.plan_import(located(answered_call(method="API", channel="TASK")), MAPPING, "npo-a")
    assert task.events == [] and task.skipped == {"channel not counted (tasks, email)": 1}


def test_the_latest_version_of_a_record_is_mapped_and_a_tie_takes_the_last_read():
    first = ctr("c-1", queue="Hardship", end=T + timedelta(seconds=90), updated=T + timedelta(minutes=2))
    later = answered_call("c-1", updated=T + timedelta(hours=1))
    for order in ((first, later), (later, first)):
        plan = ac.plan_import(located(*order), MAPPING, "npo-a")
        assert plan.superseded == 1 and "contact.answered" in kinds(plan.events)
    tie = ac.plan_import(located(answered_call("c-1", updated=T), ctr("c-1", queue="Loneliness", updated=T)),
                         MAPPING, "npo-a")
    assert [e["data"]["field"] for e in tie.events if "field" in e["data"]] == ["loneliness"]


def test_an_unmappable_record_sends_nothing_unless_skipping_and_then_drops_its_whole_chain():
    good = answered_call("c-1")
    root = ctr("c-2", queue="Hardship", end=T + timedelta(seconds=100), next_id="c-3")
    broken_segment = answered_call("c-3", method="QUEUE_TRANSFER", initial="c-2", previous="c-2")
    broken_segment["Agent"]["Username"] = broken_segment["Agent"]["ARN"] = "stranger"
    records = located(good, root, broken_segment)
    strict = ac.plan_import(records, MAPPING, "npo-a")
    assert strict.events == [] and [str(u) for u in strict.unmapped] == [
        "test record 3: the agent is not in the mapping config and there is no default_desk"]
    lenient = ac.plan_import(records, MAPPING, "npo-a", skip_unmappable=True)
    assert {e["subject"] for e in lenient.events} == {ac.ids.contact_id("amazon-connect", "npo-a", "c-1")}
    assert lenient.contacts == 1
    unreadable = ac.plan_import(located(good), MAPPING, "npo-a", unreadable=[ac.Unmapped("f", "not JSON")])
    assert unreadable.events == [] and not unreadable.sendable


def test_generated_records_map_without_loss_and_the_raw_count_agrees_with_the_events():
    records = generated_ctrs(400, seed=3)
    methods = Counter(r["InitiationMethod"] for r in records)
    assert min(methods[m] for m in ("INBOUND", "API", "QUEUE_TRANSFER", "TRANSFER", "OUTBOUND")) > 10
    plan = ac.plan_import(located(*records), MAPPING, "npo-a")
    assert plan.unmapped == [] and plan.superseded > 10
    raw = counts_from_raw(records, {q: d["field"] for q, d in mapping_doc()["queues"].items()})
    received = {e["subject"] for e in plan.events if e["type"].endswith("received.v1")
                and e["data"]["channel"] == "phone"}
    answered = {e["subject"] for e in plan.events if e["type"].endswith("answered.v1")}
    assert raw["total"]["attempts"] == len(received) and raw["total"]["connected"] == len(received & answered)
    assert len(answered) == len([e for e in plan.events if e["type"].endswith("answered.v1")])  # one per person


# --- the mapping config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "message"), [
    ({"queues": {"Q": {"field": "weather", "key": 1}}}, "queues.Q.field"),
    ({"queues": {"Q": {"field": "suicidal", "key": 12}}}, "queues.Q.key"),
    ({"queues": {"Q": {"field": "suicidal", "key": True}}}, "queues.Q.key"),
    ({"queues": {"Q": "suicidal"}}, "give 'field' and 'key'"),
    ({"agents": {"a": "desk one"}}, "agents.a"),
    ({"agents": {"a": "090-1234-5678"}}, "phone number"),
    ({"default_desk": ""}, "default_desk"),
    (["queues"], "must be a mapping"),
])
def test_a_wrong_mapping_config_is_refused_before_anything_is_read(doc, message):
    with pytest.raises(ValueError, match=message):
        ac.mapping_from(doc)


# --- the command -----------------------------------------------------------------------------------------


def run(args: list[str], **env: str):
    return CliRunner().invoke(ac.app, args, env={"TSUNAGU_API_KEY": "", **env})


def test_a_dry_run_reports_what_would_be_sent():
    result = run(["import", str(SAMPLES), "--config", str(SAMPLES / "mapping.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "6 contacts, 22 events" in result.output and "1 superseded" in result.output
    assert "9012340001" not in result.output


def test_an_unmappable_file_sends_nothing_and_exits_1(tmp_path):
    (tmp_path / "ctr.json").write_text(json.dumps(ctr("c-1", queue="Billing")))
    result = run(["import", str(tmp_path), "--config", str(SAMPLES / "mapping.yaml"), "--partner", "npo-a"],
                 TSUNAGU_API_KEY="k")
    assert result.exit_code == 1
    assert "record 1: queue 'Billing' is not in the mapping config" in result.output
    assert "nothing sent" in result.output and "9012340001" not in result.output


def test_sending_needs_a_key_and_a_valid_config(tmp_path):
    result = run(["import", str(SAMPLES), "--config", str(SAMPLES / "mapping.yaml")])
    assert result.exit_code != 0 and "TSUNAGU_API_KEY" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"queues": {"Q": {"field": "weather", "key": 1}}}))
    result = run(["import", str(SAMPLES), "--config", str(bad), "--partner", "npo-a", "--dry-run"])
    assert result.exit_code != 0 and "queues.Q.field" in result.output


def test_the_command_sends_with_the_key_file_and_reports_intakes_answers(tmp_path, monkeypatch):
    seen: list[list[dict]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer secret-key"
        batch = json.loads(request.content)
        status = "duplicate" if seen else "accepted"
        seen.append(batch)
        return httpx.Response(200, json={"results": [{"index": i, "id": e["id"], "status": status, "problems": []}
                                                     for i, e in enumerate(batch)]})

    monkeypatch.setattr(ac, "IntakeClient", lambda url, key: IntakeClient(url, key,
                                                                          transport=httpx.MockTransport(handle)))
    key_file = tmp_path / "key"
    key_file.write_text("secret-key\n")
    args = ["import", str(SAMPLES), "--config", str(SAMPLES / "mapping.yaml"), "--key-file", str(key_file)]
    first, second = run(args), run(args)
    assert first.exit_code == 0 and "22 accepted, 0 duplicate" in first.output
    assert second.exit_code == 0 and "0 accepted, 22 duplicate" in second.output
    assert seen[0] == seen[1]
