"""What every benchmark stands on: its own embedded broker and PostgreSQL in a temp dir, on free
ports, so figures are not disturbed by (and do not disturb) a running local stack."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tsunagu.settings import Settings
from tsunagu_tools import stack


@asynccontextmanager
async def private_stack(service: str, partitions: int, database: str = "bench") -> AsyncIterator[tuple[Settings, Path]]:
    """(settings pointing at a fresh broker and database with every topic created, a scratch dir)."""
    with tempfile.TemporaryDirectory(prefix=f"tsunagu-bench-{service}-") as tmp:
        home = Path(tmp)
        port = stack.free_port()
        broker = stack.start_embedded_broker(port, home / "broker.log")
        dsn_server = stack.start_embedded_postgres(home / "pgdata")
        bootstrap = f"127.0.0.1:{port}"
        try:
            dsn = await stack.ensure_database(dsn_server, database)
            settings = Settings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, DATABASE_URL=dsn, partitions=partitions,
                                log_level="warning", **{f"{service}_port": stack.free_port()})
            await stack.create_stack_topics(settings, bootstrap)
            yield settings, home
        finally:
            broker.terminate()
            stack.stop_embedded_postgres(home / "pgdata")
