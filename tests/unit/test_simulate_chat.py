"""The replay engine's chat/SNS users and counsellors at a keyboard, against routing's pure core (the
dry run): the contract's events in event-time order, seats that never hold more than their room,
patience in minutes with the platform's late report of a silent leaver, first responses, late triage,
hand-overs to the phone counted once — and a phone-only replay untouched by any of it."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tsunagu_tools.simulate.engine import Engine, dry_run
from tsunagu_tools.simulate.router import DryRouter, Outgoing, Seen
from tsunagu_tools.simulate.scenario import ROOT, Scenario, load_scenario
from tsunagu_tools.simulate.world import build_plans

SNS = "scenarios/sns-week.yaml"
DAYS = 2.0  # two evenings of the LINE window: enough to fill the seats, queue, leave and hand over


class Recording(DryRouter):
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def send(self, events: list[Outgoing]) -> None:
        self.sent += events


Replay = tuple[Engine, Recording, list[Any]]  # the engine, what it sent, every decision of its model


def _replay(scenario: Scenario | None = None) -> Replay:
    """A dry replay of the SNS scenario; returns the engine, what it sent and every model decision."""
    router = Recording()
    engine = Engine(scenario or load_scenario(SNS, days=DAYS), router, run="s")
    decisions: list[Any] = []
    peak: Counter[tuple[str, int]] = Counter()
    model, on_decision = engine._model, engine._on_decision

    def spy_model(made: list[Any]) -> None:
        decisions.extend(made)
        model(made)

    def spy_decision(d: Seen) -> None:
        on_decision(d)
        for seat, load in engine._seat_load.items():
            peak[seat] = max(peak[seat], load)

    engine._model = spy_model  # type: ignore[method-assign,assignment]
    engine._on_decision = spy_decision  # type: ignore[method-assign]
    engine.peak = peak  # type: ignore[attr-defined]
    asyncio.run(engine.run_replay())
    return engine, router, decisions


@pytest.fixture(scope="module")
def replay() -> Replay:
    return _replay()


def _events(router: Recording, kind: str, system: str | None = None) -> list[dict[str, Any]]:
    return [e.envelope for e in router.sent if e.envelope["type"] == f"jp.tsunagu.{kind}.v1"
            and (system is None or e.envelope["source"].endswith(f"/{system}"))]


def test_a_chat_section_leaves_the_callers_as_they_were() -> None:
    with_chat = load_scenario(SNS)
    without = with_chat.model_copy(update={"chat": None})
    assert with_chat.chat is not None and without.chat is None
    menu = {"suicidal": 1, "under18": 2, "loneliness": 3}
    assert build_plans(with_chat, "r", menu) == build_plans(without, "r", menu)


def test_chat_events_leave_in_event_time_order_on_the_windows_channel(replay: Replay) -> None:
    engine, router, _ = replay
    platform = [e.envelope for e in router.sent if e.envelope["type"] != "jp.tsunagu.consultation.recorded.v1"]
    times = [datetime.fromisoformat(e["time"]) for e in platform]
    assert times == sorted(times)
    received = _events(router, "contact.received", "line")
    assert received and {e["data"]["channel"] for e in received} == {"sns"}
    chats = {e["subject"] for e in received}
    fates = engine.truth.fates
    assert {fates[c].channel for c in chats} == {"sns"}
    assert {fates[c].outcome for c in chats} <= {"ivr", "queue", "ringing", "answered"}
    assert {"queue", "answered"} <= {fates[c].outcome for c in chats}
    assert engine.truth.late == 0 and engine.truth.unmatched == 0


def test_chats_go_to_seats_and_no_seat_holds_more_than_its_room(replay: Replay) -> None:
    engine, _, decisions = replay
    seats = [d.data for d in decisions if d.kind == "routing.assigned" and d.data.channel == "sns"]
    assert seats and all(d.desk_id == "line-window" and 1 <= (d.seat or 0) <= 5 and d.seat_capacity == 2
                         for d in seats)
    peak = engine.peak  # type: ignore[attr-defined]
    assert max(peak.values()) == 2, "busy evenings fill a seat to its two conversations"
    assert not engine._seat_load or max(engine._seat_load.values()) <= 2


def test_a_first_response_takes_a_counsellor_time_after_the_seat_is_given(replay: Replay) -> None:
    engine, router, decisions = replay
    chat = engine.scenario.chat
    assert chat is not None
    assigned: dict[str, float] = {}
    for d in decisions:
        if d.kind == "routing.assigned" and d.data.channel == "sns":
            assigned[d.contact_id] = d.at.timestamp()
    first = _events(router, "contact.answered", "line")
    assert first
    for e in first:
        at = datetime.fromisoformat(e["time"]).timestamp()
        assert at - assigned[e["subject"]] >= chat.first_response_s[0] - 1e-3
        assert e["data"]["wait_seconds"] == engine.truth.fates[e["subject"]].wait_s


def test_a_slow_first_response_loses_the_offer_and_answers_only_a_later_one() -> None:
    base = load_scenario(SNS, days=DAYS)
    assert base.chat is not None
    slow = base.chat.model_copy(update={"first_response_s": (100.0, 400.0)})  # often past the 180 s offer timeout
    engine, router, decisions = _replay(base.model_copy(update={"chat": slow}))
    withdrawn = [d for d in decisions if d.kind == "routing.withdrawn" and d.data.reason == "offer_timeout"]
    assert withdrawn
    offers: dict[str, list[float]] = {}
    for d in decisions:
        if d.kind == "routing.assigned" and d.data.channel == "sns":
            offers.setdefault(d.contact_id, []).append(d.at.timestamp())
    for e in _events(router, "contact.answered", "line"):
        at = datetime.fromisoformat(e["time"]).timestamp()
        latest = max(o for o in offers[e["subject"]] if o <= at)
        assert 100.0 - 1e-3 <= at - latest <= 180.0 + 1e-3  # the response of the offer in force, in its time
    assert engine.truth.unmatched == 0


def test_a_user_who_leaves_without_a_word_is_reported_after_the_inactivity_timeout(replay: Replay) -> None:
    engine, router, _ = replay
    chat = engine.scenario.chat
    assert chat is not None
    gone = _events(router, "contact.abandoned", "line")
    stages = Counter(e["data"]["stage"] for e in gone)
    assert stages["queue"] > 0 and stages["ivr"] > 0
    assert all(e["data"]["wait_seconds"] >= chat.inactivity_timeout_s for e in gone if e["data"]["stage"] != "ivr")
    # some first responses reach someone already gone: connected, as the platform counts them, and closed
    # by the platform's timeout with no consultation record
    ghosts = [f for f in engine.truth.fates.values() if f.gone]
    assert ghosts and all(f.outcome == "answered" and f.talk_s == chat.inactivity_timeout_s for f in ghosts)


def test_screening_results_come_before_and_after_the_counsellor_took_the_chat(replay: Replay) -> None:
    engine, router, decisions = replay
    assigned = {d.contact_id: d.at.timestamp() for d in decisions
                if d.kind == "routing.assigned" and d.data.channel == "sns"}
    triaged = _events(router, "contact.triaged", "line")
    assert triaged and {e["data"]["instrument"] for e in triaged} == {"k6"}
    late = [e for e in triaged if e["subject"] in assigned
            and datetime.fromisoformat(e["time"]).timestamp() > assigned[e["subject"]]]
    early = [e for e in triaged if e not in late]
    assert late and early


def test_a_hand_over_to_the_phone_is_one_contact_and_one_connection(replay: Replay) -> None:
    engine, router, decisions = replay
    transfers = _events(router, "contact.transferred", "line")
    assert transfers, "high-risk chats are handed to the phone desk"
    assert all(e["data"] == {"contact_id": e["subject"], "from_desk_id": "line-window", "to_channel": "phone",
                             "to_desk_id": "kokoro-phone"} for e in transfers)
    moved = {e["subject"] for e in transfers}
    again = [d for d in decisions if d.kind == "routing.assigned" and d.contact_id in moved
             and d.data.reason == "transferred"]
    assert again and {d.data.desk_id for d in again} == {"kokoro-phone"} and {d.data.seat for d in again} == {None}
    phone_answers = [e for e in _events(router, "contact.answered", "telephony") if e["subject"] in moved]
    assert phone_answers and {e["data"]["desk_id"] for e in phone_answers} == {"kokoro-phone"}
    sns = engine.truth.figures()["by_channel"]["sns"]
    assert sns["transferred"] == len(moved)
    first_answers = {e["subject"] for e in _events(router, "contact.answered", "line")}
    assert sns["connected"] == len(first_answers)  # the phone's answer adds no connection


def test_a_person_left_waiting_for_the_phone_gives_up_and_the_chat_desk_closes_the_talk() -> None:
    base = load_scenario(SNS, days=DAYS)
    assert base.chat is not None
    hurried = base.chat.transfer.model_copy(update={"patience_s": 2.0})  # less than any pick-up
    engine, router, _ = _replay(base.model_copy(update={"chat": base.chat.model_copy(update={"transfer": hurried})}))
    moved = {e["subject"] for e in _events(router, "contact.transferred", "line")}
    ends = {e["subject"]: e["data"] for e in _events(router, "contact.ended") if e["subject"] in moved}
    assert moved and set(ends) == moved
    assert {d["desk_id"] for d in ends.values()} == {"line-window"}
    assert not [e for e in _events(router, "contact.answered", "telephony") if e["subject"] in moved]
    assert all(engine.truth.fates[c].outcome == "answered" for c in moved)  # still one connection each
    assert engine.truth.unmatched == 0


def test_each_channel_has_its_own_figures() -> None:
    figures = dry_run(load_scenario(SNS, days=DAYS), run="f").figures()
    phone, sns = figures["by_channel"]["phone"], figures["by_channel"]["sns"]
    assert phone["attempts"] + sns["attempts"] == figures["attempts"]
    assert phone["connected"] + sns["connected"] == figures["connected"]
    # a call waits seconds, a chat minutes
    assert phone["first_response_p90"] < 60 < sns["first_response_p50"] <= sns["first_response_p90"]
    assert sns["abandoned_before_response"] > 0 and phone["transferred"] == 0


def test_the_same_seed_gives_the_same_chats_and_another_seed_others() -> None:
    a = dry_run(load_scenario(SNS, days=1.0), run="d").figures()
    b = dry_run(load_scenario(SNS, days=1.0), run="d").figures()
    c = dry_run(load_scenario(SNS, days=1.0, seed=1), run="d").figures()
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["by_channel"]["sns"] != c["by_channel"]["sns"]


def test_a_fuller_seat_is_slower() -> None:
    engine = Engine(load_scenario(SNS, days=1.0), DryRouter(), run="w")
    assert engine._slower(1) == 1.0 and engine._slower(2) == pytest.approx(1.25)
    assert engine.lookahead == min(3.0, 20.0)


class Confirming(Recording):
    """Routing as the run-ahead engine meets it: it makes the model's decisions a moment later, one of
    them (with ``wrong_seat``) on another seat."""

    def __init__(self, made: list[Seen], wrong_seat: bool) -> None:
        super().__init__()
        self.made, self.given, self.wrong_seat = made, 0, wrong_seat

    async def decisions(self, timeout_ms: int) -> list[Seen]:
        out = [Seen(f"real-{self.given + i}", d.kind, d.contact_id, d.at, d.desk_id, d.organisation_id, d.seat)
               for i, d in enumerate(self.made[self.given:])]
        self.given = len(self.made)
        for i, d in enumerate(out):
            if self.wrong_seat and d.seat is not None:
                self.wrong_seat = False
                out[i] = Seen(d.id, d.kind, d.contact_id, d.at, d.desk_id, d.organisation_id, d.seat % 5 + 1)
        return out


@pytest.mark.parametrize("wrong_seat", [False, True])
def test_running_ahead_checks_the_seat_of_every_chat_decision(wrong_seat: bool) -> None:
    made: list[Seen] = []
    router = Confirming(made, wrong_seat)
    engine = Engine(load_scenario(SNS, days=1.0), router, run="v", pipeline=True)
    model = engine._model

    def spy(decisions: list[Any]) -> None:
        before = len(engine._model_out)
        model(decisions)
        made.extend(engine._model_out[before:])

    engine._model = spy  # type: ignore[method-assign]
    truth = asyncio.run(engine.run_replay())
    assert any(d.seat for d in made)
    assert truth.unmatched == (2 if wrong_seat else 0)  # the seat predicted and not seen; seen, not predicted


def test_a_chat_section_names_how_many_and_where_hand_overs_go(tmp_path: Path) -> None:
    text = (ROOT / SNS).read_text(encoding="utf-8")
    desks = tmp_path / "desks"
    desks.mkdir()
    (desks / "sns-week.yaml").write_text((ROOT / "scenarios/desks/sns-week.yaml").read_text(encoding="utf-8"))
    both = tmp_path / "both.yaml"
    both.write_text(text.replace("attempts: 790", "attempts: 790\n  share: 1.0"), encoding="utf-8")
    with pytest.raises(ValueError, match="attempts or share"):
        load_scenario(both)
    nowhere = tmp_path / "nowhere.yaml"
    nowhere.write_text(text.replace("to_desk: kokoro-phone", "to_desk: null"), encoding="utf-8")
    with pytest.raises(ValueError, match="to_desk or to_field"):
        load_scenario(nowhere)
    assert load_scenario(SNS, days=1.0).chat.attempts == round(790 / 7)  # type: ignore[union-attr]


def _untagged_knobs(text: str, section: str) -> list[str]:
    """The knobs (key lines with a value) of a top-level ``section`` with neither a source tag ([N], [W3] …, FITTED) nor
    ASSUMED: on the line, in the comment lines just above it, or on a line it is nested in."""
    out: list[str] = []
    inside = False
    above: list[str] = []
    parents: list[tuple[int, bool]] = []  # (indent, tagged)

    def tagged(s: str) -> bool:
        return "ASSUMED" in s or "FITTED" in s or re.search(r"\[(N|W\d+)\]", s) is not None

    for line in text.splitlines():
        if not line.startswith(" "):
            inside = line.startswith(f"{section}:")
            continue
        stripped = line.strip()
        if not inside or not stripped:
            continue
        if stripped.startswith("#"):
            above.append(stripped)
            continue
        indent = len(line) - len(line.lstrip())
        parents = [(i, t) for i, t in parents if i < indent]
        ok = tagged(line) or any(tagged(c) for c in above) or any(t for _, t in parents)
        parents.append((indent, ok))
        above = []
        if not ok and not stripped.split("#")[0].rstrip().endswith(":"):  # a block: its knobs are checked
            out.append(stripped)
    return out


def test_every_knob_of_the_line_window_names_its_source_or_says_assumed() -> None:
    text = (ROOT / SNS).read_text(encoding="utf-8")
    assert _untagged_knobs(text, "chat") == []
    assert _untagged_knobs("chat:\n  attempts: 3\n  fields: {x: 1}   # ASSUMED\n", "chat") == ["attempts: 3"]
