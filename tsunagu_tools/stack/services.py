"""The services as processes: their URLs and environment, starting one, waiting until all are ready."""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tsunagu.settings import Settings
from tsunagu_tools.stack.processes import (
    port_open,
    process_alive,
    process_started,
    spawn,
    tail,
)
from tsunagu_tools.stack.state import (
    READY_TIMEOUT,
    Part,
    Runtime,
    StackError,
    home_of,
    log_path,
)


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
    proc = spawn([sys.executable, "-m", f"services.{service}"], log, service_env(runtime, telemetry, replay))
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
