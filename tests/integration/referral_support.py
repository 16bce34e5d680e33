"""The referral service as its own process(es), with receivers' keys and canonical input events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from schemas.kafka import kafka_headers
from tests.support import T0, ServiceProcess, service_env
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.settings import Settings

RECEIVERS = ("muni-131016", "srsc-131016", "police-13", "muni-011002")


def consultation(n: int, *, risk: str = "medium", consent: list[str] | None = None, municipality: str = "131016",
                 at: datetime = T0, referral_needed: bool = True) -> dict:
    contact_id = f"c-npo-a-{n}"
    data: dict = {"contact_id": contact_id, "organisation_id": "npo-a", "categories": ["loneliness"],
                  "age_band": "age30s", "risk": risk, "referral_needed": referral_needed,
                  "municipality": municipality}
    if consent is not None:
        data["consent"] = {"given": True, "scope": consent, "recorded_by": "staff-1", "recorded_at": at.isoformat()}
    return {"specversion": "1.0", "id": f"ev-npo-a-{n}-consultation", "source": "/partners/npo-a/cases",
            "type": "jp.tsunagu.consultation.recorded.v1", "time": at.isoformat(), "subject": contact_id,
            "partitionkey": contact_id, "data": data}


def requested(referral_id: str, *, need: str | None = None, basis: dict | None = None, urgency: str = "standard",
              municipality: str = "131016", at: datetime = T0) -> dict:
    """A counsellor's explicit request (keyed by the contact, like the consultation it follows)."""
    contact_id = f"c-{referral_id}"
    data: dict = {"referral_id": referral_id, "contact_id": contact_id, "organisation_id": "npo-a",
                  "municipality": municipality, "urgency": urgency,
                  "legal_basis": basis or {"kind": "support_meeting", "reference": "meeting-42"}}
    if need:
        data["need"] = need
    return {"specversion": "1.0", "id": f"ev-{referral_id}-requested", "source": "/partners/npo-a/cases",
            "type": "jp.tsunagu.referral.requested.v1", "time": at.isoformat(), "subject": contact_id,
            "data": data}


async def publish(bootstrap: str, topic: str, events: list[dict | bytes]) -> None:
    """As intake would: canonical events, keyed by contact (raw bytes go as they are, keyed "poison")."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, e, key=b"poison") if isinstance(e, bytes) else
            await producer.send(topic, json.dumps(e).encode(), key=e["subject"].encode(), headers=kafka_headers())
            for e in events
        ]
        for f in futures:
            await f
    finally:
        await producer.stop()


@dataclass
class RunningReferral:
    settings: Settings
    bootstrap: str
    keys: dict[str, str]  # org -> API key (receivers, and "secretariat")
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.processes[0].url

    def topic(self, short: str) -> str:
        return self.settings.topic(short)

    def client(self, org: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10, headers={"Authorization": f"Bearer {self.keys[org]}"})


def referral_env(settings: Settings) -> dict[str, str]:
    return {**service_env(settings), "TSUNAGU_REFERRAL_CLOCK": "event_time", "TSUNAGU_REFERRAL_SCAN_SECONDS": "0.2"}


async def prepare(settings: Settings, create_all_topics) -> dict[str, str]:
    await create_all_topics(settings)
    pool = await create_pool(settings.database_url)
    try:
        await auth.migrate_schema(pool)
        keys = {org: (await auth.issue_credential(pool, org, "receiver"))[1] for org in RECEIVERS}
        keys["secretariat"] = (await auth.issue_credential(pool, "secretariat", "secretariat"))[1]
        keys["npo-a"] = (await auth.issue_credential(pool, "npo-a", "partner", backfill=True))[1]
    finally:
        await pool.close()
    return keys


@pytest.fixture
async def referral(settings: Settings, create_all_topics, tmp_path) -> AsyncIterator[RunningReferral]:
    keys = await prepare(settings, create_all_topics)
    process = ServiceProcess("referral", referral_env(settings), settings.referral_port, tmp_path / "referral.log")
    process.start()
    running = RunningReferral(settings, settings.kafka_bootstrap_servers or "", keys, [process])
    try:
        yield running
    finally:
        for p in running.processes:
            p.stop()


async def wait_for(client, path: str, check, timeout: float = 30.0):
    """GET ``path`` until ``check(response)`` holds (or fail with the last answer)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(path)
        if check(response):
            return response
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{path}: {response.status_code} {response.text}")
        await asyncio.sleep(0.1)
