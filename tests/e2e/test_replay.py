"""A small scenario replayed through the four real services (each its own process, real broker,
real PostgreSQL): what metrics reports for the replay's period is exactly what the simulator knows
happened to every contact — attempts, connected, abandonments, by field, consultations, referrals.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tests.support import ServiceProcess, service_env
from tsunagu.settings import Settings
from tsunagu_tools.simulate.report import counted_report, differences, metrics_figures
from tsunagu_tools.simulate.scenario import load_scenario
from tsunagu_tools.simulate.stack import replay_on_stack

pytestmark = pytest.mark.e2e

SERVICES = ("intake", "routing", "referral", "metrics")


@pytest.fixture
async def services(request, make_settings, create_all_topics, tmp_path) -> AsyncIterator[Settings]:
    settings = make_settings(partitions=2)
    await create_all_topics(settings)
    env = {**service_env(settings), "TSUNAGU_REFERRAL_CLOCK": "event_time", "TSUNAGU_ROUTING_DESKS_FILES": "",
           "TSUNAGU_REFERRAL_SCAN_SECONDS": "0.5",
           "TSUNAGU_ROUTING_ORDER": getattr(request, "param", "arrival")}
    started: list[ServiceProcess] = []
    try:
        for name in SERVICES:
            started.append(ServiceProcess(name, env, settings.service_port(name), tmp_path / f"{name}.log").start())
        yield settings
    finally:
        for process in reversed(started):
            process.stop()


@pytest.mark.parametrize("services", ["arrival", "event_time"], indirect=True)
async def test_metrics_reports_exactly_what_the_simulator_knows_happened(services: Settings, tmp_path, request):
    """arrival: the replay waits for routing at every decision point; event_time: it runs ahead on
    its model, and every one of routing's decisions is the one it predicted."""
    settings = services
    scenario = load_scenario("scenarios/smoke.yaml")
    truth = await replay_on_stack(scenario, settings, settings.kafka_bootstrap_servers or "",
                                  settings.database_url or "")
    expected = truth.figures()
    # The replay exercised what it is for: queues, hang-ups, answers and handoffs.
    assert expected["connected"] > 0 and expected["abandoned_queue"] > 0 and expected["abandoned_ivr"] > 0
    assert expected["referrals"] > 0 and truth.decisions > 0
    if request.node.callspec.params["services"] == "arrival":
        # Applied as read, routing's decisions may depend on the order its partitions are read in; the
        # replay then follows the real decision (an unmatched prediction), and the report must still
        # equal what the simulator knows happened.
        assert truth.syncs > 0
    else:
        assert truth.unmatched == 0
    assert truth.start == scenario.start  # a fresh routing: the scenario's own week

    counted = metrics_figures(await counted_report(settings.database_url or "", truth))
    assert differences(expected, counted) == []
    assert ({k: (g["attempts"], g["connected"]) for k, g in counted["by_field"].items()}
            == {k: (g["attempts"], g["connected"]) for k, g in expected["by_field"].items()})

    # Every raw caller number the simulator sent stays behind intake.
    logs = "".join((tmp_path / f"{name}.log").read_text(errors="replace") for name in SERVICES)
    assert truth.caller_ids and not [c for c in truth.caller_ids if c in logs]


async def test_a_second_replay_of_the_same_week_moves_to_its_own_week(services: Settings):
    settings = services
    scenario = load_scenario("scenarios/smoke.yaml", days=0.02, demand={**load_scenario(
        "scenarios/smoke.yaml").demand.model_dump(), "attempts": 8})
    bootstrap, dsn = settings.kafka_bootstrap_servers or "", settings.database_url or ""
    first = await replay_on_stack(scenario, settings, bootstrap, dsn)
    second = await replay_on_stack(scenario, settings, bootstrap, dsn)
    assert second.start - first.start >= timedelta(weeks=1) and (second.start - first.start).days % 7 == 0
    for truth in (first, second):
        counted = metrics_figures(await counted_report(dsn, truth))
        assert differences(truth.figures(), counted) == []
