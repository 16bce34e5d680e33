"""Secrets: none built in outside dev, API keys kept only as hashes, revocation at once everywhere."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import typing
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from tests.security.conftest import SecureStack
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.settings import DEV_CALLER_KEY_SECRET, Settings, SettingsError, get_settings

SECRET_LOOKING = ("secret", "password", "token", "credential", "api_key")


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("TSUNAGU_"):
            monkeypatch.delenv(name)


def secret_fields() -> list[str]:
    return [name for name, f in Settings.model_fields.items()
            if SecretStr in typing.get_args(f.annotation) or f.annotation is SecretStr]


def test_every_secret_looking_setting_is_a_secret_without_a_default():
    # A new secret must be a SecretStr (never printed) and must not ship with a value.
    for name, f in Settings.model_fields.items():
        if any(word in name for word in SECRET_LOOKING):
            assert name in secret_fields(), f"TSUNAGU_{name.upper()} must be a SecretStr"
            assert f.default is None, f"TSUNAGU_{name.upper()} must have no default"
    assert secret_fields() == ["caller_key_secret"]


@pytest.mark.parametrize("value", [None, DEV_CALLER_KEY_SECRET, "short-but-not-the-dev-one"])
def test_outside_dev_no_built_in_or_weak_secret_is_accepted(clean_env, monkeypatch, value):
    monkeypatch.setenv("TSUNAGU_ENV", "prod")
    if value is not None:
        monkeypatch.setenv("TSUNAGU_CALLER_KEY_SECRET", value)
    with pytest.raises(SettingsError, match="TSUNAGU_CALLER_KEY_SECRET"):
        get_settings().caller_secret()  # what intake asks for its pseudonyms


def test_intake_started_in_prod_without_its_secret_refuses_to_start(clean_env, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSUNAGU_")}
    env |= {"TSUNAGU_ENV": "prod", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "services.intake"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    assert "TSUNAGU_CALLER_KEY_SECRET" in done.stdout + done.stderr


def test_only_intake_is_given_the_caller_key_secret_in_kubernetes():
    # Least privilege: the services behind intake only ever see caller keys, never identifiers.
    services = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "services"
    holders = sorted(p.stem for p in services.glob("*.yaml") if "TSUNAGU_CALLER_KEY_SECRET" in p.read_text())
    assert holders == ["intake"]


async def every_row_as_text(database_url: str) -> list[str]:
    """Every row of every table of every tsunagu schema, as JSON text."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')")
        rows: list[str] = []
        for t in tables:
            rows += [r[0] for r in await conn.fetch(
                f'SELECT row_to_json(t)::text FROM "{t["table_schema"]}"."{t["table_name"]}" t')]
        return rows
    finally:
        await conn.close()


async def test_api_keys_are_stored_only_as_their_hash(secure_stack: SecureStack):
    pool = await create_pool(secure_stack.settings.database_url)
    try:
        stored = {r["key_id"]: r for r in await pool.fetch("SELECT * FROM auth.credentials")}
    finally:
        await pool.close()
    assert set(secure_stack.key_ids.values()) <= set(stored)
    for caller, key in secure_stack.keys.items():
        row = stored[secure_stack.key_ids[caller]]
        assert bytes(row["key_hash"]) == hashlib.sha256(key.encode()).digest()
    # No table anywhere (credentials, audit logs, inboxes, outboxes, ...) holds a key or its secret part.
    everything = "\n".join(await every_row_as_text(secure_stack.settings.database_url))
    assert len(everything) > 0
    for key in secure_stack.keys.values():
        secret_part = key.split("_", 2)[2]  # tsg_<key id>_<secret>; the secret may itself hold "_"
        assert len(secret_part) >= 40
        assert key not in everything and secret_part not in everything


def tsunagu_cli(stack: SecureStack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": stack.settings.database_url or "", "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    return subprocess.run([str(Path(sys.executable).parent / "tsunagu"), *args], env=env, capture_output=True,
                          text=True, timeout=60)


async def test_a_revoked_key_is_refused_by_every_service_process_on_the_very_next_request(secure_stack):
    pool = await create_pool(secure_stack.settings.database_url)
    try:
        partner_id, partner = await auth.issue_credential(pool, "suicide-prevention-centre", "partner")
        secretariat_id, secretariat = await auth.issue_credential(pool, "secretariat", "secretariat")
    finally:
        await pool.close()
    # Each request goes to a different OS process; each has answered the key many times (any cache
    # would be warm) before the revocation.
    asks = [("routing", "/v1/desks", secretariat), ("referral", "/v1/referrals", secretariat),
            ("metrics", "/v1/metrics/periods", secretariat), ("routing", "/v1/queues", partner),
            ("metrics", "/v1/metrics/periods", partner)]
    clients = {s: httpx.AsyncClient(base_url=secure_stack.url(s), timeout=15)
               for s in ("routing", "referral", "metrics", "intake", "intake-limited")}
    try:
        async def statuses() -> list[int]:
            return [(await clients[s].get(path, headers={"Authorization": f"Bearer {key}"})).status_code
                    for s, path, key in asks]

        async def publish_statuses() -> list[int]:  # two intake processes
            return [(await clients[s].post("/v1/events", content=b"{}", headers={
                "Authorization": f"Bearer {partner}", "Content-Type": "application/cloudevents+json"})).status_code
                for s in ("intake", "intake-limited")]

        for _ in range(3):
            assert await statuses() == [200] * len(asks)
            assert await publish_statuses() == [422, 422]  # authenticated: the (empty) event itself is refused
        # one through the operator's command, one through the function it calls (a CLI start is slow)
        done = tsunagu_cli(secure_stack, "credentials", "revoke", partner_id)
        assert done.returncode == 0, done.stderr
        pool = await create_pool(secure_stack.settings.database_url)
        try:
            assert await auth.revoke_credential(pool, secretariat_id)
        finally:
            await pool.close()
        assert await statuses() == [401] * len(asks)
        assert await publish_statuses() == [401, 401]
    finally:
        for c in clients.values():
            await c.aclose()
