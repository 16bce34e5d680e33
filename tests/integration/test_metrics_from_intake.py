"""From a partner's HTTP post at intake to the secretariat's HTTP answer at metrics, on the real stack."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import httpx
import pytest

from tests.integration.metrics_support import start_metrics
from tests.support import T0, contact_received, envelope, field_selected

pytestmark = pytest.mark.integration


def answered(org: str, n: int, wait: float) -> dict:
    cid = f"c-{org}-{n}"
    return envelope(org, "contact.answered", f"ev-{org}-{n}-answered", cid,
                    {"contact_id": cid, "desk_id": f"{org}-desk-1", "organisation_id": org, "wait_seconds": wait},
                    at=T0 + timedelta(seconds=20 + wait))


def ivr_hangup(org: str, n: int) -> dict:
    cid = f"c-{org}-{n}"
    return envelope(org, "contact.abandoned", f"ev-{org}-{n}-abandoned", cid,
                    {"contact_id": cid, "stage": "ivr", "wait_seconds": 8.0}, at=T0 + timedelta(seconds=8))


async def test_the_secretariat_sees_the_answer_rate_of_what_partners_sent_through_intake(intake, tmp_path):
    events = []
    for n in range(20):  # 20 calls, the same caller twice for n and n+10 (n < 5)
        caller = f"090-1234-{n % 10 if n < 15 else n:04d}"
        events.append(contact_received("npo-a", n, caller=caller))
    events += [field_selected("npo-a", n, "suicidal", 3) for n in range(0, 8)]
    events += [field_selected("npo-a", n, "loneliness", 9) for n in range(8, 17)]
    events += [ivr_hangup("npo-a", n) for n in range(17, 20)]
    events += [answered("npo-a", n, 10.0 * n) for n in (0, 1, 2, 3, 4, 5, 8)]
    async with httpx.AsyncClient(base_url=intake.url, timeout=10) as client:
        response = await client.post("/v1/events", headers=intake.headers("npo-a"), content=json.dumps(events))
        assert response.json()["accepted"] == len(events)
        # re-sent: intake answers duplicate, and metrics must not count them again either way
        await client.post("/v1/events", headers=intake.headers("npo-a"), content=json.dumps(events))

    metrics = await asyncio.to_thread(start_metrics, intake.settings, intake.keys, tmp_path / "metrics.log")
    try:
        await metrics.wait_until_consumed(len(events))
        body = (await metrics.get("/v1/metrics/answer-rate", group_by="field",
                                  **{"from": "2022-07-07", "to": "2022-07-07"})).json()
        totals = body["totals"]
        assert (totals["attempts"], totals["connected"], totals["answer_rate"]) == (20, 7, 0.35)
        groups = {g["key"]: g for g in body["groups"]}
        assert (groups["suicidal"]["attempts"], groups["suicidal"]["connected"]) == (8, 6)
        assert (groups["loneliness"]["attempts"], groups["loneliness"]["connected"]) == (9, 1)
        assert (groups[None]["attempts"], groups[None]["abandoned_ivr"]) == (3, 3)
        # callers: n and n+10 share a number for n < 5 -> 15 distinct callers
        assert totals["callers"] == 15
        waits = (await metrics.get("/v1/metrics/waits", **{"from": "2022-07-07", "to": "2022-07-07"},
                                   within="20")).json()["totals"]
        assert waits["answered_within_20s"] == 3  # waits 0, 10, 20
        partner = (await metrics.get("/v1/metrics/answer-rate", "npo-b", period="trial1")).json()
        assert partner["totals"]["attempts"] == 0
    finally:
        await asyncio.to_thread(metrics.process.stop)
