"""The intake service as its own process, against this test's database, broker topics and keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.support import ServiceProcess, service_env
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.settings import Settings


@dataclass
class RunningIntake:
    process: ServiceProcess
    settings: Settings
    bootstrap: str
    keys: dict[str, str]  # org -> partner API key

    @property
    def url(self) -> str:
        return self.process.url

    def topic(self, short: str) -> str:
        return self.settings.topic(short)

    def headers(self, org: str, content_type: str = "application/cloudevents-batch+json") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[org]}", "Content-Type": content_type}


@pytest.fixture
async def intake(settings: Settings, create_all_topics, tmp_path) -> AsyncIterator[RunningIntake]:
    await create_all_topics(settings)
    pool = await create_pool(settings.database_url)
    try:
        await auth.migrate_schema(pool)
        keys = {org: (await auth.issue_credential(pool, org, "partner", backfill=True))[1]
                for org in ("npo-a", "npo-b")}
        keys["secretariat"] = (await auth.issue_credential(pool, "secretariat", "secretariat"))[1]
        keys["npo-a-live"] = (await auth.issue_credential(pool, "npo-a", "partner"))[1]  # no back-fill
        # a telephony platform reporting for npo-b's desks, as the #9999 carrier did for every desk
        keys["tel"] = (await auth.issue_credential(pool, "tel", "partner", acts_for=["npo-b"], backfill=True))[1]
    finally:
        await pool.close()
    process = ServiceProcess("intake", service_env(settings), settings.intake_port, tmp_path / "intake.log")
    process.start()
    try:
        yield RunningIntake(process, settings, settings.kafka_bootstrap_servers or "", keys)
    finally:
        process.stop()


@pytest.fixture
async def pool(database_url) -> AsyncIterator:
    """A small pool on this test's own database (the store-level tests of metrics)."""
    pool = await create_pool(database_url, max_size=3)
    try:
        yield pool
    finally:
        await pool.close()
