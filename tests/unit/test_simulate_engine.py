"""The replay engine against routing's pure core (the dry run): deterministic, time-ordered,
every contact accounted for, and the scenario files valid."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import pytest

from tsunagu_tools.simulate.engine import Engine, dry_run
from tsunagu_tools.simulate.router import DryRouter, Outgoing, Seen
from tsunagu_tools.simulate.scenario import ROOT, load_scenario
from tsunagu_tools.simulate.world import arrival_offsets

SMOKE = "scenarios/smoke.yaml"


class Recording(DryRouter):
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def send(self, events: list[Outgoing]) -> None:
        self.sent += events


def test_the_same_seed_gives_the_same_replay_and_another_seed_another():
    scenario = load_scenario(SMOKE)
    a, b = dry_run(scenario, run="r"), dry_run(scenario, run="r")
    assert json.dumps(a.figures(), sort_keys=True) == json.dumps(b.figures(), sort_keys=True)
    c = dry_run(load_scenario(SMOKE, seed=8), run="r")
    assert json.dumps(c.figures(), sort_keys=True) != json.dumps(a.figures(), sort_keys=True)


def test_call_events_leave_in_event_time_order_and_every_contact_has_a_fate():
    router = Recording()
    truth = asyncio.run(Engine(load_scenario(SMOKE), router, run="o").run_replay())
    calls = [e.envelope for e in router.sent if e.envelope["type"] != "jp.tsunagu.consultation.recorded.v1"]
    times = [datetime.fromisoformat(e["time"]) for e in calls]
    assert times == sorted(times)
    assert {f.outcome for f in truth.fates.values()} <= {"ivr", "queue", "ringing", "answered"}
    assert truth.late == 0 and truth.unmatched == 0  # the model is the router: never surprised
    answered = [e for e in calls if e["type"].endswith("contact.answered.v1")]
    assert len(answered) == truth.figures()["connected"]
    # Each answered call was assigned at least a pickup delay before: the lookahead holds.
    assert all(f.offers >= 1 for f in truth.fates.values() if f.outcome == "answered")


class Confirming(Recording):
    """Routing as the run-ahead engine meets it: decisions arrive later, each with its own id; this one
    makes every decision the engine predicts except ``drop`` of them, and one it did not predict."""

    def __init__(self, engine_model_decisions: list, drop: int = 0, extra: bool = False) -> None:
        super().__init__()
        self.made = engine_model_decisions  # filled by the spy below as the model decides
        self.drop = drop
        self.extra = extra
        self.given = 0

    async def decisions(self, timeout_ms: int):
        out = [Seen(f"real-{self.given + i}", d.kind, d.contact_id, d.at, d.desk_id, d.organisation_id)
               for i, d in enumerate(self.made[self.given:])]
        self.given = len(self.made)
        if self.drop:
            dropped, self.drop = min(self.drop, len(out)), self.drop - min(self.drop, len(out))
            out = out[dropped:]
        if self.extra and out:
            self.extra = False
            out.append(Seen("real-extra", "routing.assigned", out[0].contact_id, out[0].at + 0.5, "nowhere", "x"))
        return out


def run_ahead(drop: int = 0, extra: bool = False):
    scenario = load_scenario(SMOKE)
    made: list = []
    router = Confirming(made, drop, extra)
    engine = Engine(scenario, router, run="v", pipeline=True)
    model = engine._model

    def spy(decisions):  # what the model decides is what this routing will publish, a moment later
        before = len(engine._model_out)
        model(decisions)
        made.extend(engine._model_out[before:])

    engine._model = spy
    return asyncio.run(engine.run_replay()), router


def test_running_ahead_checks_every_decision_against_routings_own():
    truth, router = run_ahead()
    assert truth.unmatched == 0 and router.given > 0
    lockstep = dry_run(load_scenario(SMOKE), run="v")
    assert json.dumps(truth.figures(), sort_keys=True) == json.dumps(lockstep.figures(), sort_keys=True)
    beats = [e for e in router.sent if e.envelope["type"].endswith("platform.heartbeat.v1")]
    assert beats, "each send ends with a heartbeat: routing's watermark follows the replay"


def test_a_decision_routing_did_not_make_or_did_not_predict_is_unmatched():
    truth, _ = run_ahead(drop=3)
    assert truth.unmatched == 3
    truth, _ = run_ahead(extra=True)
    assert truth.unmatched == 1


def test_raw_caller_numbers_are_recorded_in_the_ground_truth():
    router = Recording()
    truth = asyncio.run(Engine(load_scenario(SMOKE), router, run="p").run_replay())
    sent = {e.envelope["data"]["caller_id"] for e in router.sent if "caller_id" in e.envelope["data"]}
    assert sent and sent == truth.caller_ids


def test_exactly_the_scenarios_attempts_arrive_following_the_hourly_profile():
    scenario = load_scenario(SMOKE, days=1.0)
    offsets = arrival_offsets(scenario)
    assert len(offsets) == scenario.demand.attempts and offsets == sorted(offsets)
    assert all(0 <= t < 86400 for t in offsets)
    night = load_scenario(SMOKE, days=1.0, demand={**scenario.demand.model_dump(), "attempts": 2000,
                                                  "hourly": [0] * 12 + [1] * 12})
    # trial start is 10:00 JST: hours 12-23 are 2 h to 14 h after it
    assert all(7200 <= t < 50400 for t in arrival_offsets(night))


def test_shorter_days_scale_the_attempts():
    assert load_scenario("scenarios/trial1.yaml", days=1).demand.attempts == round(14678 / 7)


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT) for p in (ROOT / "scenarios").glob("*.yaml")))
def test_every_scenario_file_is_valid(path: Path):
    scenario = load_scenario(path)
    assert scenario.registry().desks


def test_pooled_and_trial2_replays_share_trial1s_callers():
    base = load_scenario("scenarios/trial1.yaml")
    for name in ("trial1-pooled", "trial2-network"):
        other = load_scenario(f"scenarios/{name}.yaml")
        assert other.demand == base.demand and other.seed == base.seed and other.counsellors == base.counsellors
        assert other.desks != base.desks
    pooled = load_scenario("scenarios/trial1-pooled.yaml").registry()
    trial1 = base.registry()
    assert sum(d.lines for d in pooled.desks) == sum(d.lines for d in trial1.desks)  # the same lines


def test_a_bad_scenario_names_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(ROOT / SMOKE).read_text().replace("loneliness: 5", "astrology: 5"))
    with pytest.raises(ValueError, match="astrology"):
        load_scenario(bad)
