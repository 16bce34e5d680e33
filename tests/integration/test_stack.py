"""The local stack through the ``tsunagu`` CLI: up, status, down, and up again.

Runs the CLI as a subprocess with its own home and free ports, so it never touches a developer's
``.tsunagu/`` or a stack already running on the default ports.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tsunagu import topics
from tsunagu.settings import Settings
from tsunagu_tools import stack
from tsunagu_tools.services import SERVICES

pytestmark = pytest.mark.integration

PARTITIONS = 3


def tsunagu(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsunagu_tools.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def stack_settings(env: dict[str, str]) -> Settings:
    return Settings(home=Path(env["TSUNAGU_HOME"]), partitions=PARTITIONS)


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(
        TSUNAGU_HOME=str(tmp_path_factory.mktemp("stack") / "home"),
        TSUNAGU_BROKER_PORT=str(stack.free_port()),
        TSUNAGU_PARTITIONS=str(PARTITIONS),
        TSUNAGU_LOG_FORMAT="console",
    )
    for service in SERVICES:
        env[f"TSUNAGU_{service.upper()}_PORT"] = str(stack.free_port())
    result = tsunagu(env, "up")
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield env
    finally:
        tsunagu(env, "down")


def pids(env: dict[str, str]) -> dict[str, int | None]:
    state = stack.StackState.load(Path(env["TSUNAGU_HOME"]))
    return {name: part.pid for name, part in state.parts.items()}


async def topic_partitions(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        return {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()


def test_up_leaves_broker_postgres_and_every_service_healthy(stack_env: dict[str, str]) -> None:
    rows = {row.name: row for row in stack.status(stack_settings(stack_env))}
    assert set(rows) == {"broker", "postgres", *SERVICES}
    assert {name: row.health for name, row in rows.items()} == {name: "ready" for name in rows}
    for service in SERVICES:
        port = stack_env[f"TSUNAGU_{service.upper()}_PORT"]
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200


def test_status_shows_every_part(stack_env: dict[str, str]) -> None:
    result = tsunagu(stack_env, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ["broker", "postgres", *SERVICES]:
        assert name in result.stdout
    assert f"127.0.0.1:{stack_env['TSUNAGU_BROKER_PORT']}" in result.stdout


async def test_topics_exist_with_the_configured_partitions(stack_env: dict[str, str]) -> None:
    settings = stack_settings(stack_env)
    runtime = stack.resolve_runtime(settings)
    names = [settings.topic(name) for name in topics.ALL]
    assert await topic_partitions(runtime.bootstrap, names) == {name: PARTITIONS for name in names}


def test_up_again_changes_nothing(stack_env: dict[str, str]) -> None:
    before = pids(stack_env)
    result = tsunagu(stack_env, "up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "starting" not in result.stdout
    assert pids(stack_env) == before


async def test_down_stops_everything_and_up_keeps_the_data(stack_env: dict[str, str]) -> None:
    settings = stack_settings(stack_env)
    dsn = stack.resolve_runtime(settings).database_url
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE IF NOT EXISTS kept (note text)")
    await conn.execute("INSERT INTO kept VALUES ('written before down')")
    await conn.close()
    before = pids(stack_env)

    result = await asyncio.to_thread(tsunagu, stack_env, "down")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not any(stack.process_alive(pid) for pid in before.values())
    assert (await asyncio.to_thread(tsunagu, stack_env, "status")).returncode == 1
    with pytest.raises(stack.StackError, match="tsunagu up"):
        stack.resolve_runtime(settings)
    assert (await asyncio.to_thread(tsunagu, stack_env, "down")).returncode == 0  # idempotent

    result = await asyncio.to_thread(tsunagu, stack_env, "up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "initialising" not in result.stdout
    conn = await asyncpg.connect(stack.resolve_runtime(settings).database_url)
    try:
        assert await conn.fetchval("SELECT note FROM kept") == "written before down"
    finally:
        await conn.close()


def test_a_bad_setting_is_named(tmp_path: Path) -> None:
    env = {**os.environ, "TSUNAGU_HOME": str(tmp_path / "home"), "TSUNAGU_PARTITIONS": "abc"}
    result = tsunagu(env, "up", timeout=60)
    assert result.returncode != 0
    assert "TSUNAGU_PARTITIONS" in result.stderr
    assert not (tmp_path / "home" / "stack.json").exists()
