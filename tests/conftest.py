"""Shared fixtures: a real broker and a real PostgreSQL for the whole session, fresh names per test.

``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` point the tests at existing ones; without them the
session starts the embedded broker (Tansu, in memory) and an embedded PostgreSQL in a temp dir.
Each test gets its own database and its own topic prefix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tests.fakes import known_to
from tsunagu.settings import Settings
from tsunagu_tools import stack

PORT_FIELDS = [name for name in Settings.model_fields if name.endswith("_port")]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    port = stack.free_port()
    proc = stack.start_embedded_broker(port, tmp_path_factory.mktemp("broker") / "broker.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except Exception:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def postgres_server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    datadir = tmp_path_factory.mktemp("postgres") / "pgdata"
    dsn = stack.start_embedded_postgres(datadir)
    try:
        yield dsn
    finally:
        stack.stop_embedded_postgres(datadir)


@pytest.fixture
async def database_url(postgres_server_dsn: str) -> AsyncIterator[str]:
    """A fresh, empty database for this test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = await stack.ensure_database(postgres_server_dsn, name)
    try:
        yield dsn
    finally:
        await stack.drop_database(postgres_server_dsn, name)


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses, e.g. ``t3f9a0c1b.``."""
    return f"t{uuid.uuid4().hex[:12]}."


@pytest.fixture
def make_settings(kafka_bootstrap: str, database_url: str, topic_prefix: str) -> Callable[..., Settings]:
    """Build Settings for this test's broker, database and topics (3 partitions, free ports); a service's
    own knobs with its class first: ``make_settings(ReferralSettings, referral_clock="event_time")``."""

    def make(cls: type[Settings] = Settings, /, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "DATABASE_URL": database_url,
            "topic_prefix": topic_prefix,
            "partitions": 3,
            **{port: stack.free_port() for port in PORT_FIELDS},
        }
        for key, value in overrides.items():
            # database_url / kafka_bootstrap_servers are read through their env-style aliases
            alias = {"database_url": "DATABASE_URL", "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS"}
            values[alias.get(key, key)] = value
        return cls(**known_to(cls, values))  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def create_all_topics() -> Callable:
    """``await create_all_topics(settings)`` creates every tsunagu topic under the settings' prefix."""

    async def create(settings: Settings) -> list[str]:
        assert settings.kafka_bootstrap_servers, "settings need kafka_bootstrap_servers"
        return await stack.create_stack_topics(settings, settings.kafka_bootstrap_servers)

    return create
