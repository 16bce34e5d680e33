"""A private stack for the infrastructure faults: its own embedded broker and its own embedded
PostgreSQL, so that restarting them breaks no other test, and the four services as OS processes.

The session's broker and PostgreSQL (tests/conftest.py) are shared by every other test: a fault test
that restarted them would fail its neighbours. Here the broker listens on a port of its own and
PostgreSQL runs in a data directory of its own (a unix socket whose path depends on the directory
only, so the DSN the services hold stays valid across a restart).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import ServiceProcess, service_env
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.settings import Settings
from tsunagu_tools import stack

SERVICES = ("intake", "routing", "referral", "metrics")


class PrivateStack:
    """Broker + PostgreSQL + services of one fault test, each restartable on its own."""

    def __init__(self, folder: Path, *, partitions: int = 2, env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.datadir = folder / "pgdata"
        self.broker_port = stack.free_port()
        self.broker: subprocess.Popen | None = None
        self.partitions = partitions
        self.extra_env = env or {}
        self.settings: Settings | None = None
        self.services: dict[str, ServiceProcess] = {}
        self.server_dsn = ""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def dsn(self) -> str:
        assert self.settings is not None and self.settings.database_url
        return self.settings.database_url

    def url(self, service: str) -> str:
        return self.services[service].url

    async def start(self) -> PrivateStack:
        self.server_dsn = await asyncio.to_thread(stack.start_embedded_postgres, self.datadir)
        dsn = await stack.ensure_database(self.server_dsn, "faults")
        self.start_broker()
        self.settings = Settings(KAFKA_BOOTSTRAP_SERVERS=self.bootstrap, DATABASE_URL=dsn, topic_prefix="f.",
                                 partitions=self.partitions,
                                 **{f"{s}_port": stack.free_port() for s in SERVICES})  # type: ignore[arg-type]
        await stack.create_stack_topics(self.settings, self.bootstrap)
        env = {**service_env(self.settings), "PYTHONUNBUFFERED": "1", **self.extra_env}
        for name in SERVICES:
            self.services[name] = ServiceProcess(name, env, self.settings.service_port(name),
                                                 self.folder / f"{name}.log")
        # side by side, as `tsunagu up` starts them (each migrates its own schema under a lock)
        # (a generous timeout: four Pythons importing at once on a busy 2-core machine take a while)
        await asyncio.gather(*(asyncio.to_thread(process.start, 180.0) for process in self.services.values()))
        return self

    async def partner_key(self, org: str) -> str:
        pool = await create_pool(self.dsn, max_size=1, attempts=5)
        try:
            await auth.migrate_schema(pool)
            return (await auth.issue_credential(pool, org, "partner", label="faults", backfill=True))[1]
        finally:
            await pool.close()

    async def stop(self) -> None:
        for process in reversed(list(self.services.values())):
            await asyncio.to_thread(process.stop)
        self.stop_broker()
        await asyncio.to_thread(stack.stop_embedded_postgres, self.datadir)

    # --- the faults --------------------------------------------------------------------------

    def start_broker(self) -> None:
        self.broker = stack.start_embedded_broker(self.broker_port, self.folder / "broker.log")

    def stop_broker(self) -> None:
        if self.broker is not None and self.broker.poll() is None:
            self.broker.terminate()
            try:
                self.broker.wait(10)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait()
        self.broker = None

    async def stop_postgres(self) -> None:
        await asyncio.to_thread(stack.stop_embedded_postgres, self.datadir)

    async def start_postgres(self) -> None:
        dsn = await asyncio.to_thread(stack.start_embedded_postgres, self.datadir)
        # The socket's path depends on the data directory only: the services' DSN is still right.
        assert dsn == self.server_dsn, (dsn, self.server_dsn)


@dataclass
class Readiness:
    """``GET /health/ready`` of each service, polled every ``every`` seconds while a fault runs:
    the spans (monotonic start, end) during which each one answered anything but 200."""

    urls: dict[str, str]
    every: float = 0.1
    down: dict[str, list[list[float]]] = field(default_factory=dict)
    _task: asyncio.Task | None = None
    _stopped: float = 0.0

    def start(self) -> Readiness:
        self.down = {name: [] for name in self.urls}
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._stopped = time.monotonic()  # a span still open (end -1) means: not ready again yet

    async def _check(self, client: httpx.AsyncClient, name: str) -> None:
        try:
            ready = (await client.get(f"{self.urls[name]}/health/ready", timeout=3.0)).status_code == 200
        except httpx.HTTPError:
            ready = False
        spans = self.down[name]
        now = time.monotonic()
        open_span = bool(spans) and spans[-1][1] < 0
        if not ready and not open_span:
            spans.append([now, -1.0])
        elif ready and open_span:
            spans[-1][1] = now

    async def _run(self) -> None:
        async with httpx.AsyncClient() as client:
            while True:
                await asyncio.gather(*(self._check(client, name) for name in self.urls))
                await asyncio.sleep(self.every)

    def went_false_and_back(self, name: str) -> bool:
        spans = self.down[name]
        return bool(spans) and all(end > 0 for _, end in spans)

    def seconds_not_ready(self, name: str) -> float:
        return sum((end if end > 0 else self._stopped) - start for start, end in self.down[name])
