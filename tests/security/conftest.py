"""Abuse and bad input (`make verify-security`): the whole stack once per run of this folder.

Every service runs as its own process against one database and one topic prefix of their own,
with keys for each role (and a revoked one), and two referrals — one addressed to each receiver —
so that every endpoint can be reached with every kind of caller.

``TSUNAGU_VERIFY_SIZE=full`` runs the generated tests at full size; the default is CI size.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.integration.referral_support import consultation, publish, requested
from tests.support import ServiceProcess, service_env
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.settings import Settings
from tsunagu_tools import stack

FULL = os.environ.get("TSUNAGU_VERIFY_SIZE", "ci") == "full"

# Organisations that hold desks in config/trial1.yaml (routing's default registry), so that a
# partner has desks of its own and desks of another organisation to be kept from.
ORG = "suicide-prevention-centre"
OTHER_ORG = "women-support-net"
RECEIVER = "muni-131016"  # Chiyoda's municipal office: gets consultation 1
OTHER_RECEIVER = "srsc-131016"  # Chiyoda's self-reliance centre: gets referral ref-sec-other
# A second intake process with tiny limits: a refill so slow that no test waits for a token.
LIMITED_BURST = 5
# Live and back-fill keys both limited (the tests' events lie in the trial's weeks: back-fill keys).
LIMITED = {"TSUNAGU_INTAKE_RATE_PER_S": "0.0001", "TSUNAGU_INTAKE_BACKFILL_RATE_PER_S": "0.0001",
           "TSUNAGU_INTAKE_BURST": str(LIMITED_BURST), "TSUNAGU_MAX_BATCH_EVENTS": str(LIMITED_BURST)}


def size(ci: int, full: int) -> int:
    """How many generated examples: small enough for CI, large on demand."""
    return full if FULL else ci


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.security)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "security: abuse and bad input (make verify-security)")


@dataclass
class SecureStack:
    settings: Settings
    bootstrap: str
    keys: dict[str, str]  # caller name -> API key: partner, partner-other, receiver, ..., revoked
    key_ids: dict[str, str]
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    referral_of: dict[str, str] = field(default_factory=dict)  # receiver org -> a referral addressed to it

    def url(self, service: str) -> str:
        return self.processes[service].url

    def headers(self, caller: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[caller]}"} if caller in self.keys else {}

    def topic(self, short: str) -> str:
        return self.settings.topic(short)


CALLERS = {
    "partner": (ORG, "partner"),
    "partner-other": (OTHER_ORG, "partner"),
    "receiver": (RECEIVER, "receiver"),
    "receiver-other": (OTHER_RECEIVER, "receiver"),
    "secretariat": (auth.SECRETARIAT_ORG, "secretariat"),
    "revoked": (auth.SECRETARIAT_ORG, "secretariat"),  # revoked below: the most powerful key, dead
}


async def issue_keys(database_url: str) -> tuple[dict[str, str], dict[str, str]]:
    pool = await create_pool(database_url)
    try:
        await auth.migrate_schema(pool)
        keys, ids = {}, {}
        for name, (org, role) in CALLERS.items():
            # the partners' tests send events of the trial's week (2022): their keys may back-fill
            extra = {"backfill": True} if role == "partner" else {}
            ids[name], keys[name] = await auth.issue_credential(pool, org, role, label=f"security-{name}", **extra)
        assert await auth.revoke_credential(pool, ids["revoked"])
        return keys, ids
    finally:
        await pool.close()


async def wait_until(check, what: str, timeout: float = 60.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.fixture(scope="package")
async def secure_stack(kafka_bootstrap: str, postgres_server_dsn: str,
                       tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecureStack]:
    name = f"sec_{uuid.uuid4().hex[:12]}"
    database_url = await stack.ensure_database(postgres_server_dsn, name)
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url, topic_prefix=f"s{uuid.uuid4().hex[:12]}.",
        partitions=3, **{f"{s}_port": stack.free_port() for s in ("intake", "routing", "referral", "metrics")},
    )
    await stack.create_stack_topics(settings, kafka_bootstrap)
    keys, key_ids = await issue_keys(database_url)
    logs = tmp_path_factory.mktemp("security-logs")
    env = {**service_env(settings), "TSUNAGU_REFERRAL_CLOCK": "event_time", "TSUNAGU_LOG_LEVEL": "warning"}
    running = SecureStack(settings, kafka_bootstrap, keys, key_ids)
    for service in ("intake", "routing", "referral", "metrics"):
        port = settings.service_port(service)
        running.processes[service] = ServiceProcess(service, env, port, logs / f"{service}.log")
    port = stack.free_port()
    running.processes["intake-limited"] = ServiceProcess(
        "intake", {**env, **LIMITED, "TSUNAGU_INTAKE_PORT": str(port)}, port, logs / "intake-limited.log")
    try:
        # Generous: the four start at once, on a CI machine that may be busy.
        await asyncio.gather(*(asyncio.to_thread(p.start, 180.0) for p in running.processes.values()))
        everyone = ["municipality", "self_reliance_centre", "police"]
        await publish(kafka_bootstrap, settings.topic("consultation.events"),
                      [consultation(1, consent=everyone), requested("ref-sec-other", need="self_reliance_centre")])
        async with httpx.AsyncClient(base_url=running.url("referral"), timeout=10) as client:
            for caller, org in (("receiver", RECEIVER), ("receiver-other", OTHER_RECEIVER)):
                async def addressed(caller: str = caller) -> str | None:
                    r = await client.get("/v1/referrals", headers=running.headers(caller))
                    found = r.json()["referrals"] if r.status_code == 200 else []
                    return found[0]["referral_id"] if found else None

                running.referral_of[org] = await wait_until(addressed, f"a referral addressed to {org}")
        yield running
    finally:
        for p in running.processes.values():
            p.stop()
        await stack.drop_database(postgres_server_dsn, name)
