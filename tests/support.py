"""Test support: realistic partner events and a reader for what landed on a topic."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer

from schemas.timezone import JST
from tsunagu.kafka import assign_all_partitions

T0 = datetime(2022, 7, 7, 10, 0, tzinfo=JST)


def envelope(org: str, type_: str, event_id: str, subject: str, data: dict, *, at: datetime = T0,
             system: str = "telephony") -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": f"/partners/{org}/{system}",
        "type": f"jp.tsunagu.{type_}.v1",
        "time": at.isoformat(),
        "subject": subject,
        "data": data,
    }


def contact_received(org: str, n: int, *, caller: str | None = None, channel: str = "phone",
                     region: str | None = "13", at: datetime = T0) -> dict:
    contact_id = f"c-{org}-{n}"
    data = {"contact_id": contact_id, "channel": channel,
            "caller_id": caller if caller is not None else f"090-{n // 10000 % 10000:04d}-{n % 10000:04d}"}
    if region:
        data["region"] = region
    return envelope(org, "contact.received", f"ev-{org}-{n}-received", contact_id, data, at=at)


def field_selected(org: str, n: int, field: str = "loneliness", key: int = 9, at: datetime = T0) -> dict:
    contact_id = f"c-{org}-{n}"
    data = {"contact_id": contact_id, "field": field, "menu_position": key}
    return envelope(org, "contact.field_selected", f"ev-{org}-{n}-field", contact_id, data,
                    at=at + timedelta(seconds=20))


async def read_topic(bootstrap: str, topic: str, *, expect: int, timeout: float = 30.0) -> list:
    """Every record on ``topic`` from the beginning, once at least ``expect`` arrived (or timeout)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        tps = await assign_all_partitions(consumer, [topic])
        await consumer.seek_to_beginning(*tps)
        records: list = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < expect and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for rs in batch.values():
                records.extend(rs)
        # a little longer, to see duplicates that would arrive just after
        batch = await consumer.getmany(timeout_ms=300)
        for rs in batch.values():
            records.extend(rs)
        return records
    finally:
        await consumer.stop()


def values(records: list) -> list[dict]:
    return [json.loads(r.value) for r in records]


TEST_CALLER_KEY_SECRET = "integration-test-secret-0123456789abcdef"


def service_env(settings) -> dict[str, str]:
    """The environment a service process needs to run against this test's broker, database, topics
    and ports (``settings`` from the ``make_settings`` / ``settings`` fixtures)."""
    env = {
        "DATABASE_URL": settings.database_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "TSUNAGU_TOPIC_PREFIX": settings.topic_prefix,
        # each test's services in groups of their own: a group left mid-rebalance by a killed process
        # in one test must not hold up the next test's consumers on the shared broker
        "TSUNAGU_CONSUMER_GROUP_PREFIX": settings.topic_prefix,
        "TSUNAGU_PARTITIONS": str(settings.partitions),
        "TSUNAGU_CALLER_KEY_SECRET": TEST_CALLER_KEY_SECRET,
        "TSUNAGU_LOG_FORMAT": "json",
    }
    for name in ("intake", "routing", "referral", "metrics"):
        env[f"TSUNAGU_{name.upper()}_PORT"] = str(settings.service_port(name))
    return env


class ServiceProcess:
    """One tsunagu service as its own OS process, as in production: real HTTP, real broker."""

    def __init__(self, service: str, env: dict[str, str], port: int, log_path) -> None:
        self.service = service
        self.env = env
        self.port = port
        self.log_path = log_path
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        import os
        import subprocess
        import sys
        import time

        import httpx

        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.service}"],
            env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.service} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.service} not ready after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except Exception:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(open(self.log_path, encoding="utf-8", errors="replace").read().splitlines()[-lines:])
        except OSError:
            return ""


async def until(predicate, timeout: float, what: str, tail=None) -> None:
    """Wait for ``await predicate()`` to hold, or fail naming ``what`` (and the log ``tail()`` says)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout}s" + (f":\n{tail()}" if tail else ""))
