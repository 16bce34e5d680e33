"""The hostile-partner drill: while one partner replays a scenario through the whole stack, another
partner with a valid key sends every kind of valid-but-wrong event — times far ahead and in year 1,
heartbeats ahead, the first partner's contact and referral ids (claims, answers, ends, triage that would
put a caller first, transfers that would move one), other organisations in
``data.organisation_id``, re-used event ids, NUL ids, phone numbers in envelope attributes — and a
flood of them. Afterwards the first partner's report equals the simulator's ground truth exactly,
routing and metrics stayed ready throughout, every hostile event got its own reason, and nothing of
them reached a topic, hence no figure.

The hostile events are dated now (or wrong on purpose): a partner without a back-fill key can say
nothing of a past period, and routing has one clock per stack, so the drill's replay runs on its own
stack (README, "Who may say what").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from tests.security.conftest import FULL
from tests.support import ServiceProcess, service_env
from tsunagu import auth, topics
from tsunagu.db import create_pool
from tsunagu.kafka import assign_all_partitions
from tsunagu.settings import Settings
from tsunagu_tools.simulate.engine import Engine
from tsunagu_tools.simulate.report import counted_report, differences, metrics_figures
from tsunagu_tools.simulate.router import PLATFORM
from tsunagu_tools.simulate.scenario import load_scenario
from tsunagu_tools.simulate.stack import replay_on_stack

SERVICES = ("intake", "routing", "referral", "metrics")
SCENARIO = "scenarios/trial1.yaml" if FULL else "scenarios/smoke.yaml"
ROGUE = "rogue-npo"
FLOOD_BATCHES = 40 if FULL else 8


@dataclass
class Seen:
    """What the hostile partner could learn of the replay from the canonical topics."""

    contacts: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    referrals: list[tuple[str, str]] = field(default_factory=list)  # (referral id, contact id)


def _event(type_: str, ident: str, subject: str, data: dict, at: datetime | str, system: str = "telephony") -> dict:
    return {"specversion": "1.0", "id": ident, "source": f"/partners/{ROGUE}/{system}",
            "type": f"jp.tsunagu.{type_}.v1", "time": at if isinstance(at, str) else at.isoformat(),
            "subject": subject, "data": data}


def hostile_events(seen: Seen, desk_orgs: list[str], now: datetime, round_: int) -> list[dict]:
    """Every class of valid-but-wrong event, about what was seen so far."""
    n = f"r{round_}"
    cid = f"rogue-{n}"
    received = {"contact_id": cid, "channel": "phone", "caller_id": "090-1111-2222"}
    out = [
        _event("contact.received", f"{n}-future", cid, received, "2100-01-01T00:00:00+00:00"),
        _event("contact.received", f"{n}-year1", cid, received, "0001-01-01T00:00:00+00:00"),
        _event("contact.received", f"{n}-year1-jst", cid, received, "0001-01-01T00:00:00+09:00"),
        _event("platform.heartbeat", f"{n}-hb-2100", "rogue-platform", {"platform_id": "rogue-platform"},
               "2100-01-01T00:00:00+00:00"),
        _event("platform.heartbeat", f"{n}-hb-ahead", "rogue-platform", {"platform_id": "rogue-platform"},
               now + timedelta(hours=1)),
        _event("contact.received", f"{n}-nul\u0000", cid, received, now),
        _event("contact.received", f"{n}-090-1234-5678", cid, received, now),
        _event("contact.received", f"{n}-state", cid, received, now) | {"tracestate": "v=09012345678"},
        _event("contact.received", f"{n}-schema", cid, received, now) | {"dataschema": "https://x.example/0312345678"},
    ]
    for other in seen.contacts[-5:]:
        desk_org = desk_orgs[round_ % len(desk_orgs)]
        out += [
            _event("contact.received", f"{n}-{other}-claim", other,
                   {"contact_id": other, "channel": "phone", "caller_id": "090-3333-4444"}, now),
            _event("contact.field_selected", f"{n}-{other}-field", other,
                   {"contact_id": other, "field": "suicidal", "menu_position": 1}, now),
            _event("contact.answered", f"{n}-{other}-ans", other, {"contact_id": other, "desk_id": "d-1",
                   "organisation_id": ROGUE, "wait_seconds": 1.0}, now),
            _event("contact.answered", f"{n}-{other}-ans-foreign", other, {"contact_id": other, "desk_id": "d-1",
                   "organisation_id": desk_org, "wait_seconds": 1.0}, now),
            _event("contact.abandoned", f"{n}-{other}-gone", other,
                   {"contact_id": other, "stage": "queue", "wait_seconds": 1.0}, now),
            _event("contact.ended", f"{n}-{other}-end", other, {"contact_id": other, "talk_seconds": 1.0}, now),
            # a triage that would put another partner's caller first, a transfer that would move them
            _event("contact.triaged", f"{n}-{other}-triage", other, {"contact_id": other, "risk": "imminent"}, now),
            _event("contact.transferred", f"{n}-{other}-move", other, {"contact_id": other, "from_desk_id": "d-1",
                   "to_field": "suicidal", "to_channel": "chat"}, now),
            _event("consultation.recorded", f"{n}-{other}-rec", other, {
                "contact_id": other, "organisation_id": ROGUE, "categories": ["loneliness"], "age_band": "age30s",
                "risk": "imminent", "referral_needed": False, "municipality": "131016"}, now, "cases"),
        ]
    for ident in seen.event_ids[-5:]:  # the replay's own event ids, under the rogue's source
        other = seen.contacts[-1]
        out.append(_event("contact.ended", ident, other, {"contact_id": other, "talk_seconds": 2.0}, now))
    for referral_id, other in seen.referrals[-3:]:
        out.append(_event("referral.requested", f"{n}-{referral_id}", other, {
            "referral_id": referral_id, "contact_id": other, "organisation_id": ROGUE, "need": "police",
            "urgency": "imminent", "municipality": "131016",
            "legal_basis": {"kind": "imminent_risk", "reference": "rogue"}}, now, "cases"))
    return out


async def watch(bootstrap: str, settings: Settings, seen: Seen, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await assign_all_partitions(consumer, [settings.topic(topics.CONTACT_EVENTS),
                                                     settings.topic(topics.REFERRAL_EVENTS)])
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    event = json.loads(r.value)
                    data = event.get("data", {})
                    if event["type"].endswith("referral.created.v1"):
                        seen.referrals.append((data["referral_id"], data["contact_id"]))
                    elif "contact_id" in data and event["source"].startswith(f"/partners/{PLATFORM}/"):
                        seen.contacts.append(data["contact_id"])
                        seen.event_ids.append(event["id"])
    finally:
        await consumer.stop()


@dataclass
class Drill:
    results: list[dict] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    readiness: list[tuple[str, int]] = field(default_factory=list)
    sent: int = 0


async def attack_round(client: httpx.AsyncClient, settings: Settings, key: str, seen: Seen,
                       engine_box: list[Engine], drill: Drill, round_: int) -> None:
    """One round of every hostile event about what was seen so far, then a look at readiness."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents-batch+json"}
    url = f"http://{settings.http_host}:{settings.intake_port}/v1/events"
    desk_orgs = engine_box[0].desk_organisations if engine_box else ["suicide-prevention-centre"]
    events = hostile_events(seen, desk_orgs, datetime.now(UTC), round_)
    for i in range(0, len(events), settings.max_batch_events):
        answer = await client.post(url, headers=headers, content=json.dumps(events[i:i + 500]))
        drill.answers.append(answer.status_code)
        drill.sent += len(events[i:i + 500])
        if answer.status_code == 200:
            drill.results += answer.json()["results"]
    for service in ("routing", "metrics"):
        r = await client.get(f"http://{settings.http_host}:{settings.service_port(service)}/health/ready")
        drill.readiness.append((service, r.status_code))


async def attack(settings: Settings, key: str, seen: Seen, engine_box: list[Engine], drill: Drill,
                 stop: asyncio.Event) -> int:
    """Rounds while the replay runs: the first ones as fast as intake answers, then two a second.
    Returns how many rounds were sent."""
    async with httpx.AsyncClient(timeout=30) as client:
        round_ = 0
        while not stop.is_set():
            round_ += 1
            await attack_round(client, settings, key, seen, engine_box, drill, round_)
            if round_ > FLOOD_BATCHES:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        return round_


@pytest.fixture
async def stack(make_settings, create_all_topics, tmp_path) -> AsyncIterator[Settings]:
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


async def test_a_hostile_partner_cannot_move_another_partners_figures_or_anyones_readiness(stack: Settings):
    settings = stack
    bootstrap, dsn = settings.kafka_bootstrap_servers or "", settings.database_url or ""
    pool = await create_pool(dsn)
    try:
        rogue_key = (await auth.issue_credential(pool, ROGUE, "partner", label="drill"))[1]  # valid, live only
    finally:
        await pool.close()
    seen, drill, stop, engine_box = Seen(), Drill(), asyncio.Event(), []

    async def hold(engine: Engine) -> None:
        engine_box.append(engine)

    watcher = asyncio.create_task(watch(bootstrap, settings, seen, stop))
    attacker = asyncio.create_task(attack(settings, rogue_key, seen, engine_box, drill, rounds_stop := asyncio.Event()))
    try:
        truth = await replay_on_stack(load_scenario(SCENARIO), settings, bootstrap, dsn, before_start=hold)
        rounds_stop.set()
        rounds = await attacker
        # A replay can end before the watcher has read what the partner could learn of it: one round
        # more with all of it, so that the other partner's own contact, event and referral ids are always
        # tried, and then the figures.
        async with asyncio.timeout(60):
            while not (seen.contacts and seen.referrals):
                await asyncio.sleep(0.1)
        async with httpx.AsyncClient(timeout=30) as client:
            await attack_round(client, settings, rogue_key, seen, engine_box, drill, rounds + 1)
        counted = metrics_figures(await counted_report(dsn, truth))
    finally:
        rounds_stop.set()
        stop.set()
        await asyncio.gather(watcher, attacker, return_exceptions=True)

    expected = truth.figures()
    assert differences(expected, counted) == []
    assert truth.unmatched == 0  # routing decided every contact exactly as its model did
    # the drill reached the replay: it used the first partner's contact, event and referral ids
    assert seen.contacts and seen.referrals and drill.sent > FLOOD_BATCHES * 9
    assert set(drill.answers) == {200}
    # every hostile event got its own reason; none was accepted
    assert len(drill.results) == drill.sent
    statuses = {r["status"] for r in drill.results}
    assert statuses <= {"rejected", "conflict"} and "conflict" in statuses
    assert all(r["problems"] and r["problems"][0]["message"] for r in drill.results)
    assert {service for service, status in drill.readiness if status != 200} == set()
    # nothing of it reached a topic: no consumer, no figure saw it
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        names = [settings.topic(n) for n in (topics.CONTACT_EVENTS, topics.CONSULTATION_EVENTS)]
        tps = await assign_all_partitions(consumer, names)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        values: list[bytes] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value for r in records]
    finally:
        await consumer.stop()
    assert values and not [v for v in values if f"/partners/{ROGUE}/".encode() in v]
