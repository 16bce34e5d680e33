"""Services SIGKILLed during a replay: each of intake, routing, referral and metrics alone, and two
at once, at random moments, and restarted at once. The replay is trial 1 cut short (CI: 2.4 hours of
the week; ``TSUNAGU_VERIFY_SIZE=full``: the whole week, every kill three times), with more
consultations needing a handoff (and more imminent risk among suicidal callers) than the trial had,
so that referrals, their escalations and their outcomes are exercised too. The simulator plays the
partner systems, which retry while a service is down.

When everything has settled:
1. metrics' report equals the simulator's ground truth exactly;
2. no line was booked twice and no contact held two assignments (routing's published decisions
   against the desks' lines; routing's own board invariants on the committed board);
3. every referral the replay asked for exists once, and is terminal or awaits its receiver with its
   deadline not yet passed by referral's event-time clock; every escalation happened at the
   deadline it missed; every change in the histories is on ``referral.events`` (none lost with a
   killed outbox);
4. nothing from the replay is on the rejected topic, and no consumer set an event aside.

One summary row per kind of kill (tests/faults/summary.py). All kills happen in one replay, so the
rows share its comparison: ``figures compared`` = the report's figures compared with the ground
truth plus the four checks above; ``differences`` = figures that differed plus violations found.
``events in flight`` = partner events intake had accepted and metrics had not yet folded, summed
over the kills (kills_support.py says how it is counted).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.faults import summary
from tests.faults.conftest import FULL, size
from tests.faults.kills_support import (
    PAIR,
    SERVICES,
    Kill,
    Killer,
    board_violations,
    kill_plan,
    line_violations,
    read_events,
    referral_problems,
    set_aside_lines,
)
from tests.support import ServiceProcess, service_env
from tsunagu import topics
from tsunagu.settings import Settings
from tsunagu_tools.reports import period_report
from tsunagu_tools.simulate.report import differences, metrics_figures, period_of
from tsunagu_tools.simulate.scenario import Scenario, load_scenario
from tsunagu_tools.simulate.stack import replay_on_stack
from tsunagu_tools.simulate.truth import GroundTruth

SEED = 20260708
DAYS = 7.0 if FULL else 0.1  # trial 1 is a week (14,678 attempts); CI replays its first 2.4 hours
REPEATS = size(1, 3)  # kills of each kind
# The replay is paced to last at least this long (wall clock), so that its kills, each waiting for the
# last restart, fall inside it rather than after its last event.
PACE_S = 900.0 if FULL else 75.0
SETTLE_S = 600.0 if FULL else 240.0


def kill_scenario() -> Scenario:
    """Trial 1 cut to ``DAYS``, with handoffs common enough, and receivers quick enough, that a short
    cut opens referrals, escalates some (an imminent one not acknowledged within 15 minutes) and
    closes others."""
    base = load_scenario("scenarios/trial1.yaml")
    counsellors = base.counsellors.model_dump()
    counsellors["risk"] = {**counsellors["risk"], "suicidal": {"low": 25, "medium": 30, "high": 25, "imminent": 20}}
    counsellors["referral_by_risk"] = {"low": 0.1, "medium": 0.5, "high": 0.8, "imminent": 1.0}
    receivers = {**base.receivers.model_dump(), "acknowledge_s": (120, 2400), "accept_s": (60, 600),
                 "complete_s": (300, 1800)}
    return load_scenario("scenarios/trial1.yaml", days=DAYS, counsellors=counsellors, receivers=receivers)


@pytest.fixture
async def stack(make_settings, create_all_topics,
                tmp_path) -> AsyncIterator[tuple[Settings, dict[str, ServiceProcess]]]:
    settings = make_settings(partitions=2)
    await create_all_topics(settings)
    env = {**service_env(settings), "TSUNAGU_REFERRAL_CLOCK": "event_time", "TSUNAGU_ROUTING_DESKS_FILES": "",
           "TSUNAGU_REFERRAL_SCAN_SECONDS": "0.5"}
    processes = {name: ServiceProcess(name, env, settings.service_port(name), tmp_path / f"{name}.log")
                 for name in SERVICES}
    try:
        for process in processes.values():
            process.start(timeout=240)
        yield settings, processes
    finally:
        for process in reversed(processes.values()):
            process.stop()


async def settled_report(dsn: str, truth: GroundTruth, timeout: float) -> list[str]:
    """Poll metrics' report until it equals the ground truth; the differences left at ``timeout``."""
    expected = truth.figures()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        diffs = differences(expected, metrics_figures(await period_report(dsn, period_of(truth))))
        if not diffs or loop.time() > deadline:
            return diffs
        await asyncio.sleep(1.0)


async def settled_referrals(pool: asyncpg.Pool, timeout: float) -> tuple[list[str], dict[str, int], list[str]]:
    """Poll referral's tables until no deadline is left unescalated (the scanner runs every 0.5 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        problems, statuses, ids = await referral_problems(pool)
        if not problems or loop.time() > deadline:
            return problems, dict(statuses), ids
        await asyncio.sleep(1.0)


def figures_compared(expected: dict) -> int:
    scalars = ["attempts", "connected", "abandoned_ivr", "abandoned_queue", "consultations", "referrals"]
    return (len(scalars) + len(expected["age_bands"]) + len(expected["categories"])
            + 2 * len(expected["by_field"]))


async def test_killed_services_lose_nothing_count_nothing_twice_and_book_no_line_twice(stack, tmp_path):
    settings, processes = stack
    dsn, bootstrap = settings.database_url or "", settings.kafka_bootstrap_servers or ""
    scenario = kill_scenario()
    rng = random.Random(SEED)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    try:
        killer = Killer(processes, pool, kill_plan(rng, REPEATS), rng)
        speed = (scenario.end - scenario.start).total_seconds() / PACE_S
        replay = asyncio.create_task(replay_on_stack(scenario, settings, bootstrap, dsn, speed=speed,
                                                     progress=killer.on_progress))
        killing = asyncio.create_task(killer.run(replay))
        try:
            truth, kills = await asyncio.gather(replay, killing)
        finally:
            for task in (replay, killing):
                task.cancel()
        print(f"\nreplay: {len(truth.fates)} attempts, {truth.events_sent} events, {truth.wall_s:.0f} s; "
              f"kills: " + ", ".join(f"{'+'.join(k.targets)} at {k.progress:.0%} ({k.in_flight} in flight, "
                                     f"down {k.down_s:.1f} s)" for k in kills))
        loop = asyncio.get_running_loop()
        replayed = loop.time()
        expected = truth.figures()
        assert len(kills) == len(killer.plan) and any(k.during_replay for k in kills)
        assert expected["connected"] > 0 and expected["abandoned_queue"] > 0 and truth.referrals_needed > 0

        # 1. the report equals the ground truth (after the last restart's catch-up)
        diffs = await settled_report(dsn, truth, SETTLE_S)
        problems = [f"report: {d}" for d in diffs]

        # 2. lines: every decision metrics folded must be read back (it counts each distinct one once)
        n_decisions = await pool.fetchval("SELECT count(*) FROM metrics.inbox WHERE source = '/tsunagu/routing'")
        n_releases = await pool.fetchval(
            "SELECT count(*) FROM intake.inbox WHERE type IN ('jp.tsunagu.contact.ended.v1', "
            "'jp.tsunagu.contact.abandoned.v1')")
        decisions = await read_events(bootstrap, settings.topic(topics.ROUTING_DECISIONS), expect=n_decisions)
        contact_events = await read_events(
            bootstrap, settings.topic(topics.CONTACT_EVENTS), expect=n_releases,
            wanted=lambda e: e["type"] in ("jp.tsunagu.contact.ended.v1", "jp.tsunagu.contact.abandoned.v1"))
        assert len(decisions) >= n_decisions > 0
        lines = {d.id: d.lines for d in scenario.registry().desks}
        problems += [f"lines: {p}" for p in line_violations(decisions, contact_events, lines)]
        problems += [f"board: {p}" for p in await board_violations(pool)]

        # 3. referrals: all there, once; terminal or not yet due; their events all published
        referral_issues, statuses, change_ids = await settled_referrals(pool, 120.0)
        problems += [f"referral: {p}" for p in referral_issues]
        if sum(statuses.values()) != truth.referrals_needed:
            problems.append(f"referral: {sum(statuses.values())} referrals, the replay asked for "
                            f"{truth.referrals_needed}")
        published = await read_events(bootstrap, settings.topic(topics.REFERRAL_EVENTS), expect=len(change_ids))
        missing = set(change_ids) - {e["id"] for e in published}
        if missing:
            problems.append(f"referral: {len(missing)} changes never published, e.g. {sorted(missing)[:3]}")

        # 4. nothing rejected, nothing set aside
        rejected = await read_events(bootstrap, settings.topic(topics.REJECTED), expect=0, linger=3.0)
        problems += [f"rejected: {r.get('id')} {r.get('problems')}" for r in rejected]
        logs = "".join((tmp_path / f"{name}.log").read_text(errors="replace") for name in SERVICES)
        problems += [f"set aside: {line[:200]}" for line in set_aside_lines(logs)]
    finally:
        await pool.close()

    kinds = {e["type"].removeprefix("jp.tsunagu.").removesuffix(".v1") for e in decisions}
    counts = {k: sum(e["type"] == f"jp.tsunagu.{k}.v1" for e in decisions) for k in sorted(kinds)}
    escalations = sum(e["type"] == "jp.tsunagu.referral.escalated.v1" for e in published)
    print(f"checked: {counts}; referrals {statuses}, {escalations} escalations; "
          f"{len(problems)} problems; settled {loop.time() - replayed:.0f} s after the replay")

    compared = figures_compared(expected) + 4
    by_kind: dict[str, list[Kill]] = {}
    for k in kills:
        by_kind.setdefault(k.kind, []).append(k)
    for kind in (*SERVICES, PAIR):
        done = by_kind.get(kind, [])
        pairs = sorted({"+".join(k.targets) for k in done}) if kind == PAIR else []
        after = sum(not k.during_replay for k in done)
        summary.record(
            f"SIGKILL {kind}" + (f" ({', '.join(pairs)})" if pairs else ""),
            injected=len(done), in_flight=sum(k.in_flight for k in done), compared=compared,
            differences=len(problems),
            detail=(f"at {', '.join(f'{k.progress:.0%}' for k in done)} of a {len(truth.fates):,}-attempt replay"
                    + (f" ({after} after its last event)" if after else "")
                    + f"; ready again ≤ {max((k.down_s for k in done), default=0):.0f} s after the kill"))
    assert {k.kind for k in kills} == {*SERVICES, PAIR}
    assert problems == [], "\n".join(problems[:40])


# --- the checks themselves catch what they are for (pure, no stack) ------------------------------


def _decision(kind: str, cid: str, desk: str, at: int, n: int) -> dict:
    return {"id": f"d{n}", "type": f"jp.tsunagu.routing.{kind}.v1", "subject": cid,
            "time": f"2022-07-07T10:00:{at:02d}+09:00", "data": {"contact_id": cid, "desk_id": desk}}


def _ended(cid: str, at: int) -> dict:
    return {"id": f"{cid}-ended", "type": "jp.tsunagu.contact.ended.v1", "subject": cid,
            "time": f"2022-07-07T10:00:{at:02d}+09:00", "data": {"contact_id": cid}}


def test_the_line_check_accepts_a_line_reused_after_it_was_released():
    decisions = [_decision("assigned", "c1", "a", 1, 1), _decision("assigned", "c2", "a", 5, 2),
                 _decision("assigned", "c3", "a", 8, 3), _decision("withdrawn", "c3", "a", 9, 4),
                 _decision("assigned", "c3", "a", 12, 5)]
    assert line_violations(decisions, [_ended("c1", 5), _ended("c2", 8)], {"a": 1}) == []


def test_the_line_check_catches_a_line_booked_twice_and_a_contact_assigned_twice():
    decisions = [_decision("assigned", "c1", "a", 1, 1), _decision("assigned", "c2", "a", 5, 2),
                 _decision("assigned", "c3", "b", 6, 3), _decision("assigned", "c3", "c", 7, 4)]
    problems = line_violations(decisions, [_ended("c1", 6)], {"a": 1, "b": 1, "c": 1})
    assert any("desk a held ['c1', 'c2'] on 1 lines" in p for p in problems)
    assert any("c3 assigned to c while still assigned to b" in p for p in problems)
