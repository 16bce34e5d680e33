"""What a service is, as data (``ServiceSpec``), and the one app skeleton every service runs in.

A spec declares a service's name, its consumer group, the topics it consumes and produces, its HTTP
port's setting, its settings class and its migrations. The subscriber takes its topics and group from
the spec (``ServiceSpec.subscriber``), the runner its settings class, the lifespan its migrations, and
the deploy checks read the same specs instead of the code. ``service_app`` is the lifespan every service shares:

    pool -> migrations -> outbox (if any) -> Hooks.prepare -> broker (consuming) -> Hooks.consuming
    ... serve ...
    Hooks.consuming ends -> broker stops (offsets committed) -> Hooks.drained -> outbox -> pool

The service-specific parts (loading a directory, applying desk registries, background tasks) are
``Hooks``; each ``services/<name>/app.py`` is its spec, its hooks and its routes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from tsunagu import api_docs, auth, topics
from tsunagu.consume import batch_subscriber
from tsunagu.db import INBOX_OUTBOX, create_pool, migrate
from tsunagu.health import Check, health_router, service_checks
from tsunagu.kafka import make_broker
from tsunagu.outbox import running_outbox
from tsunagu.settings import Settings, SettingsError

log = structlog.get_logger()


@dataclass(frozen=True)
class Migrations:
    """A schema and the folder of its numbered ``.sql`` files (tsunagu.db.migrate)."""

    schema: str
    folder: Path | None
    inbox_outbox: bool = False  # the kit's inbox and outbox tables (tsunagu.db.INBOX_OUTBOX) come first

    @property
    def folders(self) -> tuple[Path, ...]:
        """The folders ``migrate`` applies to ``schema``, in order."""
        kit = (INBOX_OUTBOX,) if self.inbox_outbox else ()
        return kit + ((self.folder,) if self.folder is not None else ())


AUTH = Migrations(auth.SCHEMA, auth.MIGRATIONS)  # the callers' credentials: every service checks them


@dataclass(frozen=True)
class ServiceSpec:
    """A service, declared: what the runner, the lifespan, the subscriber and the deploy checks read."""

    name: str  # the process (`python -m services.<name>`), its client ids, its logs
    summary: str
    group: str  # its consumer group, before Settings.consumer_group_prefix
    consumes: tuple[str, ...]  # short topic names (tsunagu.topics), all in ``group``
    produces: tuple[str, ...]
    migrations: tuple[Migrations, ...]  # applied in order at every start
    group_setting: str | None = None  # a Settings field that renames the group (a rebuild: metrics)
    settings: type[Settings] = Settings  # the shared settings and its own (services/<name>/settings.py)

    def __post_init__(self) -> None:
        unknown = set(self.consumes + self.produces) - set(topics.ALL)
        if unknown:
            raise ValueError(f"{self.name}: {sorted(unknown)} are not topics of tsunagu.topics")
        if not self.consumes:
            raise ValueError(f"{self.name}: a service consumes at least one topic")

    @property
    def port_setting(self) -> str:
        """The Settings field of its HTTP port (``TSUNAGU_<NAME>_PORT``)."""
        return f"{self.name}_port"

    @property
    def default_port(self) -> int:
        return int(self.settings.model_fields[self.port_setting].default)

    @property
    def schema(self) -> str:
        """Its own schema: the last of its migrations (auth comes first)."""
        return self.migrations[-1].schema

    def port(self, settings: Settings) -> int:
        return int(getattr(settings, self.port_setting))

    def consumer_group(self, settings: Settings) -> str:
        name = getattr(settings, self.group_setting) if self.group_setting else self.group
        return settings.group(name)

    def topics_in(self, settings: Settings) -> list[str]:
        """The full names of the topics it consumes."""
        return [settings.topic(t) for t in self.consumes]

    def subscriber(self, broker: KafkaBroker, settings: Settings, *, title: str, description: str,
                   only: tuple[str, ...] | None = None, **batch_options: Any) -> Any:
        """A batch subscriber in the service's group on the topics it consumes (``only``: some of them,
        for a service that handles its topics apart; every one of them still in the spec's group)."""
        wanted = self.consumes if only is None else only
        if not set(wanted) <= set(self.consumes):
            raise ValueError(f"{self.name} does not consume {sorted(set(wanted) - set(self.consumes))} (its spec)")
        return broker.subscriber(*(settings.topic(t) for t in wanted),
                                 **batch_subscriber(self.consumer_group(settings), **batch_options),
                                 title=title, description=description)

    def make_broker(self, settings: Settings) -> KafkaBroker:
        return make_broker(settings, client_id=f"tsunagu-{self.name}")


@dataclass(frozen=True)
class Outbox:
    """The service publishes through an outbox (tsunagu.outbox.running_outbox's options)."""

    pool_size: int = 2
    linger_ms: int | None = None
    give_way: Callable[[], Awaitable[None]] | None = None


@dataclass
class Hooks:
    """A service's own parts of the lifespan. Each returns (or yields) fields for the started log line."""

    # instead of applying the spec's migrations plainly (a service that repairs data after some)
    migrate: Callable[[asyncpg.Pool], Awaitable[list[str]]] | None = None
    # after the migrations and the outbox, before the broker consumes: state the handlers need
    prepare: Callable[[asyncpg.Pool], Awaitable[Mapping[str, object] | None]] | None = None
    # entered once the broker consumes, left before it stops: background work beside the consumer
    consuming: Callable[[], AbstractAsyncContextManager[Mapping[str, object] | None]] | None = None
    # after the consumer stopped (its offsets committed), while the outbox and the pool are still open
    drained: Callable[[], Awaitable[None]] | None = None
    # fields for the stopped log line
    stopped: Callable[[], Mapping[str, object]] | None = None


async def apply_migrations(pool: asyncpg.Pool, migrations: tuple[Migrations, ...]) -> list[str]:
    applied: list[str] = []
    for m in migrations:
        applied += await migrate(pool, m.schema, *m.folders)
    return applied


def service_app(spec: ServiceSpec, settings: Settings, holder: Any, broker: KafkaBroker, *,
                hooks: Hooks | None = None, outbox: Outbox | None = None,
                checks: Mapping[str, Check] | None = None,
                state: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> FastAPI:
    """The FastAPI app of a service: the shared lifespan around ``hooks`` and the health routes
    (database, broker, outbox, consumer, plus ``checks``), its OpenAPI document with the key's schemes
    and its offline ``/docs`` and ``/redoc`` (tsunagu.api_docs). ``holder`` is the service's state object
    (``holder.pool``, ``holder.outbox`` are set here); the caller adds its own routes."""
    database_url = settings.database_url
    if not database_url:
        raise SettingsError(f"{spec.name} needs DATABASE_URL (`tsunagu up` sets it for the local stack)")
    hooks = hooks or Hooks()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = holder.pool = app.state.pool = await create_pool(database_url)
        fields: dict[str, object] = {}
        try:
            migrations = await (hooks.migrate(pool) if hooks.migrate else apply_migrations(pool, spec.migrations))
            fields["migrations"] = migrations
            async with contextlib.AsyncExitStack() as stack:
                if outbox is not None:
                    holder.outbox = await stack.enter_async_context(running_outbox(
                        settings, spec.schema, spec.name, pool_size=outbox.pool_size, linger_ms=outbox.linger_ms,
                        give_way=outbox.give_way))
                if hooks.prepare is not None:
                    fields.update(await hooks.prepare(pool) or {})
                await broker.start()
                try:
                    async with hooks.consuming() if hooks.consuming else contextlib.nullcontext() as more:
                        fields.update(more or {})
                        log.info(f"{spec.name}_started", group=spec.consumer_group(settings), **fields)
                        yield
                finally:
                    await broker.stop()  # commits the consumer's offsets
                    if hooks.drained is not None:
                        await hooks.drained()
                # leaving the stack: the outbox publishes what is left (best effort) and closes
        finally:
            await pool.close()
            log.info(f"{spec.name}_stopped", **(hooks.stopped() if hooks.stopped else {}))

    # the documents and their pages from this host, the key's schemes declared (tsunagu.api_docs)
    app = FastAPI(title=f"tsunagu {spec.name}", version="1", summary=spec.summary, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    api_docs.install(app)
    app.state.spec = spec
    app.include_router(health_router(spec.name, service_checks(holder, broker) | dict(checks or {}), state))
    return app
