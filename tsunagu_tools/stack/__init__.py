"""The local stack: broker, PostgreSQL and every service, each its own detached process.

State lives in ``settings.home`` (``.tsunagu/`` by default, ``TSUNAGU_HOME``)::

    stack.json        the parts: pid, port, address, embedded or external
    logs/<part>.log   each embedded part's stdout and stderr
    telemetry/        with ``tsunagu up --telemetry``: <service>-spans.jsonl and <service>-metrics.jsonl
    pgdata/           embedded PostgreSQL's data directory (survives ``down``/``up``)

A part given by the environment (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``) is external:
used, never started or stopped. The building blocks (``start_embedded_broker``,
``start_embedded_postgres``, ``ensure_database``, ...) are what the tests' fixtures use too.

One purpose a module: ``state`` (the parts and the state file), ``processes`` (spawn, wait, stop),
``servers`` (the embedded broker and PostgreSQL), ``services`` (the services as processes),
``lifecycle`` (``up``, ``down``, ``status``). Callers use ``stack.X``: the names they use are here.
"""

from tsunagu_tools.stack.lifecycle import (
    PartStatus,
    down,
    empty_embedded_database,
    fresh_broker,
    resolve_runtime,
    status,
    up,
)
from tsunagu_tools.stack.processes import free_port, process_alive, tail
from tsunagu_tools.stack.servers import (
    create_stack_topics,
    drop_database,
    ensure_database,
    postmaster_pid,
    start_embedded_broker,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from tsunagu_tools.stack.services import REPLAY_ENV, service_env, service_url, telemetry_dir
from tsunagu_tools.stack.state import Runtime, StackError, StackState, local_package, log_path, part_names

__all__ = [
    "REPLAY_ENV", "PartStatus", "Runtime", "StackError", "StackState", "create_stack_topics", "down",
    "drop_database", "empty_embedded_database", "ensure_database", "free_port", "fresh_broker", "local_package",
    "log_path", "part_names", "postmaster_pid", "process_alive", "resolve_runtime", "service_env", "service_url",
    "start_embedded_broker", "start_embedded_postgres", "status", "stop_embedded_postgres", "tail",
    "telemetry_dir", "up",
]
