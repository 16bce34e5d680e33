"""The stack as a whole: ``up``, ``down``, ``status``, a fresh broker or database, and where a
running stack's broker and database are (``resolve_runtime``)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

from tsunagu.settings import Settings
from tsunagu_tools.services import SERVICES
from tsunagu_tools.stack.processes import (
    port_open,
    process_alive,
    process_started,
    terminate,
)
from tsunagu_tools.stack.servers import (
    create_stack_topics,
    database_answers,
    ensure_database,
    first_broker_address,
    mask_dsn,
    postmaster_pid,
    start_embedded_broker,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from tsunagu_tools.stack.services import (
    http_status,
    start_service,
    telemetry_dir,
    wait_until_ready,
)
from tsunagu_tools.stack.state import (
    BROKER,
    DATABASE,
    POSTGRES,
    Echo,
    Part,
    Runtime,
    StackError,
    StackState,
    home_of,
    log_path,
    part_names,
)


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
