"""An evening of the sns-week scenario (a local platform's phone line and its LINE window) replayed
through the four real services (each its own process, real broker, real PostgreSQL), with routing in
event-time order as ``tsunagu up --replay`` runs it: every routing decision — a chat's seat included —
is the one the replay's model predicted, and metrics counts each channel exactly as the simulator
knows it happened: attempts, connections (a chat's first response; a chat handed to the phone counts
once), abandonment before the first response."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import ServiceProcess, service_env
from tsunagu.settings import Settings
from tsunagu_tools.simulate.report import counted_report, differences, metrics_figures
from tsunagu_tools.simulate.scenario import load_scenario
from tsunagu_tools.simulate.stack import replay_on_stack

pytestmark = pytest.mark.integration

SERVICES = ("intake", "routing", "referral", "metrics")


@pytest.fixture
async def services(make_settings: Callable[..., Settings], create_all_topics: Callable[..., Any],
                   tmp_path: Path) -> AsyncIterator[Settings]:
    settings = make_settings(partitions=2)
    await create_all_topics(settings)
    env = {**service_env(settings), "TSUNAGU_REFERRAL_CLOCK": "event_time", "TSUNAGU_ROUTING_DESKS_FILES": "",
           "TSUNAGU_REFERRAL_SCAN_SECONDS": "0.5", "TSUNAGU_ROUTING_ORDER": "event_time"}
    started: list[ServiceProcess] = []
    try:
        for name in SERVICES:
            started.append(ServiceProcess(name, env, settings.service_port(name), tmp_path / f"{name}.log").start())
        yield settings
    finally:
        for process in reversed(started):
            process.stop()


async def test_phone_and_line_through_the_services_are_counted_per_channel(services: Settings,
                                                                          tmp_path: Path) -> None:
    settings = services
    # Monday 00:00 to Tuesday 00:00: one evening of the LINE window (17:00-22:00) beside a day of calls.
    scenario = load_scenario("scenarios/sns-week.yaml", days=1.0)
    truth = await replay_on_stack(scenario, settings, settings.kafka_bootstrap_servers or "",
                                  settings.database_url or "")
    expected = truth.figures()
    sns = expected["by_channel"]["sns"]
    # The evening exercised what it is for: seats answered, users left, chats were handed to the phone.
    assert sns["connected"] > 0 and sns["abandoned_before_response"] > 0
    assert truth.unmatched == 0, truth.unmatched_examples

    counted = metrics_figures(await counted_report(settings.database_url or "", truth))
    assert set(counted["by_channel"]) == {"phone", "sns"}
    assert differences(expected, counted) == []

    # Every platform user id the simulator sent stays behind intake.
    logs = "".join((tmp_path / f"{name}.log").read_text(errors="replace") for name in SERVICES)
    assert truth.caller_ids and not [c for c in truth.caller_ids if c in logs]
