"""Liveness and readiness for every service's HTTP port.

``/health/live`` answers while the process runs; ``/health/ready`` runs the service's checks
(database reachable, broker connected, consumer making progress, ...) and answers 503 naming the ones
that fail, each failing one with its reason under ``reasons`` when the check gives one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import asyncpg
import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse


class Verdict(NamedTuple):
    """What a check may answer instead of a plain bool: whether it passes and, if not, why."""

    ok: bool
    reason: str | None = None


Check = Callable[[], Awaitable[bool | Verdict]]


def health_router(service: str, checks: dict[str, Check],
                  state: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> APIRouter:
    """``state``, when given, adds to a ready answer what the service is doing (e.g. metrics while it
    rebuilds: ``{"status": "rebuilding", ...}``) — still 200: it works, and says so."""
    router = APIRouter(tags=["health"])

    @router.get("/health/live", summary="The process is running")
    async def live() -> dict[str, str]:
        return {"service": service, "status": "live"}

    @router.get("/health/ready", summary="The service can do its work", responses={503: {}})
    async def ready() -> JSONResponse:
        results: dict[str, bool] = {}
        reasons: dict[str, str] = {}
        for name, check in checks.items():
            try:
                answer = await asyncio.wait_for(check(), timeout=2.0)
            except Exception as err:  # a failing dependency is an answer, not an error
                answer = Verdict(False, type(err).__name__)
            if isinstance(answer, Verdict):
                results[name] = answer.ok
                if not answer.ok and answer.reason:
                    reasons[name] = answer.reason
            else:
                results[name] = bool(answer)
        ok = all(results.values())
        body: dict[str, Any] = {"service": service, "status": "ready" if ok else "not_ready", "checks": results}
        if reasons:
            body["reasons"] = reasons
        if ok and state is not None:
            body |= await state()
        return JSONResponse(body, status_code=200 if ok else 503)

    return router


def service_checks(state: object, broker: object) -> dict[str, Check]:
    """The checks every service has: its database answers, its broker answers and, when it has one,
    its outbox is publishing and its consumer is making progress (``state.consumer``, a
    ``ConsumerHealth``). ``state`` is the service's holder of ``pool`` (and ``outbox``, ``consumer``),
    read at check time because they are created in the lifespan."""

    async def database() -> bool:
        pool = getattr(state, "pool", None)
        return pool is not None and await pool.fetchval("SELECT 1") == 1

    async def broker_up() -> bool:
        up: bool = await broker.ping(timeout=1.0)  # type: ignore[attr-defined]
        return up

    checks: dict[str, Check] = {"database": database, "broker": broker_up}
    if hasattr(state, "outbox"):

        async def outbox() -> bool:
            current = getattr(state, "outbox", None)
            return current is not None and current.healthy

        checks["outbox"] = outbox
    if isinstance(getattr(state, "consumer", None), ConsumerHealth):

        async def consumer() -> Verdict:
            verdict: Verdict = state.consumer.verdict()  # type: ignore[attr-defined]
            return verdict

        checks["consumer"] = consumer
    return checks


# --- a consumer's progress ------------------------------------------------------------------------

# A consumer is not ready once this many batches in a row have failed (the first redelivery failed
# too: not a one-off), and ready again with the next batch that succeeds.
FAILURES_NOT_READY = 2
# Between a failed batch and its redelivery: 0.25 s, doubling, at most 2 s — so a batch that cannot
# succeed logs a few lines a second at most instead of spinning, and a shutdown is not held up long.
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 2.0

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_SINGLE = re.compile(r"'[^']*'")
_DIGITS = re.compile(r"\d{5,}")
_ARGUMENT = re.compile(r"(invalid input for query argument \$\d+):.*?(\([^()]*\))?\s*$", re.S)


def describe_error(err: BaseException, limit: int = 200) -> str:
    """``Class: message`` of an exception, safe to log: never a payload value.

    Only the first line; an argument's value in asyncpg's "invalid input for query argument $3: <value>
    (reason)" is dropped, single-quoted parts and runs of five or more digits are masked. PostgreSQL's
    own messages keep their double-quoted identifiers (row values are in DETAIL, never logged); any
    other message has its double-quoted parts masked too."""
    name = type(err).__name__
    server = isinstance(err, asyncpg.PostgresError) and getattr(err, "sqlstate", None)
    message = str(getattr(err, "message", None) or err) if server else str(err)
    message = message.splitlines()[0] if message else ""
    message = _ARGUMENT.sub(lambda m: m.group(1) + (" " + m.group(2) if m.group(2) else ""), message)
    # PostgreSQL puts identifiers in double quotes (kept: `relation "metrics.facts" does not exist`)
    message = _DIGITS.sub("…", (_SINGLE if server else _QUOTED).sub("'…'", message))
    message = message.strip()
    if len(message) > limit:
        message = message[:limit] + "…"
    return f"{name}: {message}" if message else name


class ConsumerHealth:
    """Whether a consumer is making progress: every batch reports ``succeeded()`` or ``failed(err)``.

    Not ready after ``FAILURES_NOT_READY`` failed batches in a row, with the last cause as the reason
    (``describe_error``: class and message, never a value); ready again with the next batch that
    succeeds. ``backoff()`` is how long to wait before letting the failed batch be redelivered."""

    def __init__(self, not_ready_after: int = FAILURES_NOT_READY) -> None:
        self.not_ready_after = not_ready_after
        self.failures = 0  # batches failed in a row
        self.last_error: str | None = None
        self.batches = 0  # batches that succeeded

    def succeeded(self) -> None:
        self.failures = 0
        self.batches += 1

    def failed(self, err: BaseException) -> str:
        self.failures += 1
        self.last_error = describe_error(err)
        return self.last_error

    @property
    def ready(self) -> bool:
        return self.failures < self.not_ready_after

    def verdict(self) -> Verdict:
        if self.ready:
            return Verdict(True)
        return Verdict(False, f"{self.failures} batches failed in a row; last: {self.last_error}")

    def backoff(self) -> float:
        if self.failures <= 0:
            return 0.0
        delay: float = min(BACKOFF_FIRST_S * 2 ** (self.failures - 1), BACKOFF_MAX_S)
        return delay


async def batch_failed(consumer: ConsumerHealth, records: Any, err: BaseException) -> None:
    """Log a failed batch with its cause (class and message, never a value), mark the consumer failing
    (not ready after ``FAILURES_NOT_READY`` in a row) and wait before it is redelivered. Every service's
    subscriber calls this from its ``except`` and then re-raises, so the batch is not committed."""
    records = records if isinstance(records, (list, tuple)) else [records]
    cause = consumer.failed(err)
    first = records[0] if records else None
    structlog.get_logger().error(
        "batch_failed", error=type(err).__name__, cause=cause, failures_in_a_row=consumer.failures,
        records=len(records), topic=getattr(first, "topic", None), partition=getattr(first, "partition", None),
        offset=getattr(first, "offset", None), ready=consumer.ready)
    await asyncio.sleep(consumer.backoff())
