"""The connectors' shared kit: ids from platform ids, contract events, and sending to intake as a
partner does (batches, Retry-After)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from schemas.envelope import looks_like_phone
from tsunagu_connectors import ids
from tsunagu_connectors.client import IntakeClient, IntakeRefused
from tsunagu_connectors.events import event


def test_ids_are_stable_per_platform_record_and_carry_no_platform_value():
    a = ids.event_id("asterisk", "npo-a", "1657155600.12", "ENTERQUEUE")
    assert a == ids.event_id("asterisk", "npo-a", "1657155600.12", "ENTERQUEUE")
    assert a != ids.event_id("asterisk", "npo-b", "1657155600.12", "ENTERQUEUE")
    assert a != ids.event_id("asterisk", "npo-a", "1657155600.1", "2ENTERQUEUE")  # parts never run together
    phone = ids.contact_id("twilio", "npo-a", "09012345678")
    assert "09012345678" not in phone and not looks_like_phone(phone)


def test_an_event_needs_a_contract_type_and_an_offset():
    at = datetime(2022, 7, 7, 1, 0, tzinfo=UTC)
    e = event("npo-a", "asterisk", "contact.ended", "x-1", "c-1", at, {"contact_id": "c-1", "talk_seconds": 3})
    assert e["type"] == "jp.tsunagu.contact.ended.v1" and e["source"] == "/partners/npo-a/asterisk"
    with pytest.raises(ValueError, match="not an event type"):
        event("npo-a", "asterisk", "contact.teleported", "x", "c", at, {})
    with pytest.raises(ValueError, match="offset"):
        event("npo-a", "asterisk", "contact.ended", "x", "c", at.replace(tzinfo=None), {})


def test_the_client_sends_in_batches_and_waits_as_retry_after_says():
    bodies: list[list[dict]] = []
    waits: list[float] = []
    answers = iter([httpx.Response(429, headers={"Retry-After": "2"}, json={"error": "rate_limited"})])

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer k"
        batch = json.loads(request.content)
        if (early := next(answers, None)) is not None:
            return early
        bodies.append(batch)
        return httpx.Response(200, json={"results": [
            {"index": i, "id": e["id"], "status": "duplicate" if e["id"] == "e1" else "accepted", "problems": []}
            for i, e in enumerate(batch)]})

    with IntakeClient("http://intake", "k", batch_events=2, transport=httpx.MockTransport(handle),
                      sleep=waits.append) as client:
        report = client.send({"id": f"e{n}"} for n in range(5))
    assert [len(b) for b in bodies] == [2, 2, 1] and waits == [2.0]
    assert report.counts == {"accepted": 4, "duplicate": 1} and report.ok


def test_a_refused_request_is_an_error_not_a_silent_loss():
    transport = httpx.MockTransport(lambda r: httpx.Response(401, json={"error": "unauthorized"}))
    with IntakeClient("http://intake", "bad", transport=transport, sleep=lambda s: None) as client, \
            pytest.raises(IntakeRefused, match="401"):
        client.send([{"id": "e"}])


def test_the_receivers_state_forgets_what_is_older_than_its_retention_in_event_time(tmp_path):
    from tsunagu_connectors.webhooks import STATE_RETENTION_S, State

    path = tmp_path / "state.sqlite3"
    state = State(path)
    day = 24 * 3600
    state.put("answered-1", {"age": 3}, at=1_000_000.0)
    state.put("answered-2", {"age": 4}, at=1_000_000.0 + STATE_RETENTION_S - day)
    assert state.count() == 2 and state.get("answered-1") == {"age": 3}
    state.put("answered-3", {"age": 5}, at=1_000_000.0 + STATE_RETENTION_S + day)  # a week and a day later
    assert state.get("answered-1") is None and state.get("answered-2") == {"age": 4} and state.count() == 2
    state.put("answered-2", {"age": 6}, at=1.0)  # an old callback again: its entry keeps its latest time
    state.put("answered-4", {}, at=1_000_000.0 + 2 * STATE_RETENTION_S - 2 * day)
    assert state.get("answered-2") == {"age": 6}
    state.close()


def test_a_state_file_written_before_entries_carried_their_time_is_kept_until_written(tmp_path):
    import sqlite3

    from tsunagu_connectors.webhooks import State

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO state VALUES ('answered-old', '{\"age\": 2}')")
    state = State(path)
    state.put("answered-new", {"age": 1}, at=2_000_000_000.0)
    assert state.get("answered-old") == {"age": 2} and state.get("answered-new") == {"age": 1}
    state.close()
