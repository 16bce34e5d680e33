"""The whole local stack through its public interfaces: `tsunagu up`, a partner key from the CLI,
events over HTTP, and a consumer on the canonical topic."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.support import T0, contact_received, envelope, field_selected, read_topic, values
from tsunagu_tools import stack
from tsunagu_tools.services import SERVICES

pytestmark = pytest.mark.e2e


def tsunagu(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsunagu_tools.cli", *args], env=env, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(TSUNAGU_HOME=str(tmp_path_factory.mktemp("e2e") / "home"),
               TSUNAGU_BROKER_PORT=str(stack.free_port()), TSUNAGU_PARTITIONS="4")
    for service in SERVICES:
        env[f"TSUNAGU_{service.upper()}_PORT"] = str(stack.free_port())
    up = tsunagu(env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield env
    finally:
        tsunagu(env, "down")


async def test_a_partner_key_from_the_cli_publishes_events_that_arrive_on_the_canonical_topic(running_stack):
    env = running_stack
    # the events are of the trial's week (2022): a past period, so a key that may back-fill
    issued = tsunagu(env, "credentials", "issue", "--role", "partner", "--org", "npo-e2e", "--backfill")
    assert issued.returncode == 0, issued.stderr
    key = issued.stdout.strip().splitlines()[-1]
    assert key.startswith("tsg_")

    events = [contact_received("npo-e2e", n, caller=f"090-4242-{n:04d}") for n in range(5)]
    events += [field_selected("npo-e2e", n, field="suicidal", key=3) for n in range(5)]
    url = f"http://127.0.0.1:{env['TSUNAGU_INTAKE_PORT']}"
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/v1/events", content=json.dumps(events),
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/cloudevents-batch+json"})
    assert response.status_code == 200 and response.json()["accepted"] == 10

    bootstrap = f"127.0.0.1:{env['TSUNAGU_BROKER_PORT']}"
    published = values(await read_topic(bootstrap, "tsunagu.contact.events", expect=10))
    assert sorted(e["id"] for e in published) == sorted(e["id"] for e in events)
    assert "4242" not in json.dumps(published)

    listed = tsunagu(env, "credentials", "list", "--org", "npo-e2e")
    assert "npo-e2e" in listed.stdout and key not in listed.stdout and "yes" in listed.stdout  # back-fill
    key_id = key.split("_")[1]
    assert tsunagu(env, "credentials", "revoke", key_id).returncode == 0
    async with httpx.AsyncClient(base_url=url) as client:
        after = await client.post("/v1/events", content=json.dumps([contact_received("npo-e2e", 99)]),
                                  headers={"Authorization": f"Bearer {key}",
                                           "Content-Type": "application/cloudevents-batch+json"})
    assert after.status_code == 401, "a revoked key stops working at once"
    logs = Path(env["TSUNAGU_HOME"], "logs", "intake.log").read_text()
    assert "4242" not in logs


async def test_a_contact_goes_through_intake_routing_and_metrics_on_the_local_stack(running_stack):
    """The journey the secretariat's figures rest on: a partner's call events through intake,
    routing's assignment on its topic, and metrics counting it — every service as its own process."""
    env = running_stack
    key = tsunagu(env, "credentials", "issue", "--role", "partner", "--org", "npo-journey",
                  "--backfill").stdout.split()[-1]
    secretariat = tsunagu(env, "credentials", "issue", "--role", "secretariat").stdout.split()[-1]
    intake_url = f"http://127.0.0.1:{env['TSUNAGU_INTAKE_PORT']}"
    metrics_url = f"http://127.0.0.1:{env['TSUNAGU_METRICS_PORT']}"
    bootstrap = f"127.0.0.1:{env['TSUNAGU_BROKER_PORT']}"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents-batch+json"}

    contact = "c-npo-journey-1"
    first = [contact_received("npo-journey", 1, caller="090-1111-2222"),
             field_selected("npo-journey", 1, field="hardship", key=1)]
    async with httpx.AsyncClient(base_url=intake_url) as client:
        assert (await client.post("/v1/events", content=json.dumps(first), headers=headers)).json()["accepted"] == 2

    mine: list[dict] = []
    for _ in range(30):  # other tests' contacts share the topic: wait for this one's decision
        decisions = values(await read_topic(bootstrap, "tsunagu.routing.decisions", expect=1, timeout=1))
        mine = [d for d in decisions if d["subject"] == contact and d["type"].endswith("routing.assigned.v1")]
        if mine:
            break
    [assigned] = mine
    desk, org = assigned["data"]["desk_id"], assigned["data"]["organisation_id"]
    assert assigned["data"]["field"] == "hardship"

    # the platform reports the desk's answer: its key must be registered to act for the desk's organisation
    platform_key = tsunagu(env, "credentials", "issue", "--role", "partner", "--org", "npo-journey", "--backfill",
                           "--acts-for", org).stdout.split()[-1]
    headers = {**headers, "Authorization": f"Bearer {platform_key}"}
    answered_at = T0 + timedelta(seconds=35)
    rest = [envelope("npo-journey", "contact.answered", "ev-journey-answered", contact,
                     {"contact_id": contact, "desk_id": desk, "organisation_id": org, "wait_seconds": 15.0},
                     at=answered_at),
            envelope("npo-journey", "contact.ended", "ev-journey-ended", contact,
                     {"contact_id": contact, "talk_seconds": 600.0}, at=answered_at + timedelta(seconds=600))]
    async with httpx.AsyncClient(base_url=intake_url) as client:
        assert (await client.post("/v1/events", content=json.dumps(rest), headers=headers)).json()["accepted"] == 2

    figures = {}
    async with httpx.AsyncClient(base_url=metrics_url) as client:
        for _ in range(120):
            answer = await client.get("/v1/metrics/answer-rate", params={"period": "trial1", "group_by": "field"},
                                      headers={"Authorization": f"Bearer {secretariat}"})
            if answer.status_code == 503:  # still catching up with the topics after its start
                await asyncio.sleep(0.25)
                continue
            figures = {g["key"]: g for g in answer.json()["groups"]}
            if figures.get("hardship", {}).get("connected") == 1:
                break
            await asyncio.sleep(0.25)
    assert figures["hardship"]["attempts"] == 1 and figures["hardship"]["connected"] == 1
    assert figures["hardship"]["answer_rate"] == 1.0
