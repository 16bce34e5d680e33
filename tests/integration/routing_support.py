"""Support for routing's integration tests: canonical contact events straight onto the topic (as
intake would publish them), a desk registry file, API keys, and routing processes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.kafka import encode_value, kafka_headers
from tests.support import T0, ServiceProcess, service_env
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.settings import Settings
from tsunagu_tools import stack

PLATFORM = "/partners/tel-platform/telephony"


def canonical(type_: str, event_id: str, subject: str, data: dict, at: datetime) -> dict:
    return {"specversion": "1.0", "id": event_id, "source": PLATFORM, "type": f"jp.tsunagu.{type_}.v1",
            "time": at.isoformat(), "subject": subject, "partitionkey": subject, "data": data}


def received(cid: str, at: datetime, prefecture: str | None = "13", channel: str = "phone") -> dict:
    data = {"contact_id": cid, "channel": channel, "caller_key": "a" * 64}
    if prefecture:
        data["prefecture"] = prefecture
    return canonical("contact.received", f"{cid}-received", cid, data, at)


def field_selected(cid: str, field_code: str, at: datetime) -> dict:
    return canonical("contact.field_selected", f"{cid}-field", cid,
                     {"contact_id": cid, "field": field_code, "menu_position": 9}, at)


def answered(cid: str, desk: str, org: str, at: datetime) -> dict:
    return canonical("contact.answered", f"{cid}-answered", cid,
                     {"contact_id": cid, "desk_id": desk, "organisation_id": org, "wait_seconds": 1.0}, at)


def ended(cid: str, at: datetime) -> dict:
    return canonical("contact.ended", f"{cid}-ended", cid, {"contact_id": cid, "talk_seconds": 60.0}, at)


def triaged(cid: str, risk: str, at: datetime) -> dict:
    return canonical("contact.triaged", f"{cid}-triaged", cid, {"contact_id": cid, "risk": risk}, at)


def heartbeat(n: int, at: datetime) -> dict:
    return canonical("platform.heartbeat", f"hb-{n}", "tel-platform", {"platform_id": "tel-platform"}, at)


def desk_registry(desks: list[dict], **rules) -> dict:
    orgs: dict[str, list[dict]] = {}
    for d in desks:
        d = dict(d)
        orgs.setdefault(d.pop("org"), []).append(d)
    return {
        "version": "test-1",
        "effective_from": (T0 - timedelta(days=1)).isoformat(),
        "rules": {"ring_timeout_s": 600, "overflow_after_s": {"default": 30}, **rules},
        "organisations": [{"id": o, "name": o, "desks": ds} for o, ds in orgs.items()],
    }


@dataclass
class RoutingRig:
    settings: Settings
    tmp_path: Path
    keys: dict[str, str]
    producer: AIOKafkaProducer
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap_servers or ""

    def topic(self, short: str) -> str:
        return self.settings.topic(short)

    def start(self, name: str = "routing", registry: Path | None = None) -> ServiceProcess:
        """Start one routing instance on its own HTTP port (instances share the consumer group)."""
        env = service_env(self.settings)
        port = self.settings.routing_port if not self.processes else stack.free_port()
        env["TSUNAGU_ROUTING_PORT"] = str(port)
        env["TSUNAGU_ROUTING_DESKS_FILES"] = str(registry or self.tmp_path / "desks.yaml")
        process = ServiceProcess("routing", env, port, self.tmp_path / f"{name}.log")
        self.processes.append(process)
        return process.start()

    async def publish(self, events: list[dict]) -> None:
        """As intake publishes them: by key, and a heartbeat to every partition (routing's watermark)."""
        topic = self.topic("contact.events")
        futures = []
        for e in events:
            every = e["type"] == "jp.tsunagu.platform.heartbeat.v1"
            for partition in sorted(await self.producer.partitions_for(topic)) if every else [None]:
                futures.append(await self.producer.send(topic, encode_value(e), key=e["partitionkey"].encode(),
                                                        partition=partition, headers=kafka_headers()))
        for f in futures:
            await f

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture(name="routing_rig")
async def routing_rig_fixture(settings: Settings, create_all_topics, tmp_path: Path) -> AsyncIterator[RoutingRig]:
    await create_all_topics(settings)
    pool = await create_pool(settings.database_url)
    try:
        await auth.migrate_schema(pool)
        keys = {"secretariat": (await auth.issue_credential(pool, "secretariat", "secretariat"))[1],
                "npo-a": (await auth.issue_credential(pool, "npo-a", "partner", backfill=True))[1],
                "receiver": (await auth.issue_credential(pool, "city-x", "receiver"))[1]}
    finally:
        await pool.close()
    (tmp_path / "desks.yaml").write_text(yaml.safe_dump(desk_registry([
        {"org": "npo-a", "id": "a-lonely", "fields": ["loneliness"], "lines": 1},
        {"org": "npo-b", "id": "b-hardship", "fields": ["hardship"], "lines": 1},
    ])))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    rig = RoutingRig(settings, tmp_path, keys, producer)
    try:
        yield rig
    finally:
        for p in rig.processes:
            p.stop()
        await producer.stop()


def decisions(records) -> list[dict]:
    return [json.loads(r.value) for r in records]


async def play_assignments(rig: RoutingRig, done: Callable[[], bool], violations: list[str],
                           on_assigned: Callable[[str, dict], None]) -> None:
    """Read routing's decisions from the start until ``done()``, each once (a decision republished after a
    kill has the same id), and hand every assignment's id and data to ``on_assigned``; a withdrawal is a
    violation (the tests answer at once)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=rig.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        topic = rig.topic("routing.decisions")
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or range(3))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: set[str] = set()
        while not done():
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for r in records:
                    event = json.loads(r.value)
                    if event["id"] in seen:
                        continue
                    seen.add(event["id"])
                    if event["type"] == "jp.tsunagu.routing.withdrawn.v1":
                        violations.append(f"unexpected withdrawal of {event['subject']}")
                    elif event["type"] == "jp.tsunagu.routing.assigned.v1":
                        on_assigned(event["id"], event["data"])
    finally:
        await consumer.stop()
