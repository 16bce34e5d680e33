"""What the webhook connectors share: a platform POSTs its own event, the connector checks the
platform's signature, maps, sends to intake, and answers 200 only once intake has stored every event —
so the platform's own retry is the recovery for any failure on the way, and a retried callback is a
duplicate at intake, never a double count.

Answers (the platform only reads the status; the body says why, never what the body held):

- 401 no signature header, 403 a wrong one: nothing is mapped or sent;
- 422 a body the connector cannot map (record and reason, no content): nothing of it is sent;
- 503 intake unreachable or refusing the request (e.g. a revoked key), 502 intake rejected an event:
  the platform retries later, and what was stored answers as a duplicate then;
- 200 every event stored (accepted or duplicate), or nothing to send (events tsunagu does not count).

The connectors keep a little state of their own (when a task was answered, when a chat conversation
opened) in a SQLite file, written only after intake stored the events it led to: a request that fails
leaves it untouched, and the platform's retry finds it as it was.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.codes import LabelledCode
from tsunagu_connectors.client import KEY_ENV, IntakeClient, IntakeRefused
from tsunagu_connectors.report import SendReport, Unmapped

log = logging.getLogger("tsunagu_connectors.webhooks")

# A webhook must answer within the platform's timeout (Twilio: 15 s; LINE: a few seconds): a few tries
# at intake, then 503 and the platform's own retry, rather than holding the request.
WEBHOOK_ATTEMPTS = 3

Send = Callable[[list[dict[str, Any]]], SendReport]


def load_yaml(path: Path) -> dict[str, Any]:
    """A mapping config file: a YAML mapping at the top."""
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: the mapping config must be a YAML mapping")
    return loaded


C = TypeVar("C", bound=LabelledCode)


def code_of(code_list: type[C], value: object, where: str) -> C:
    """The code of ``code_list`` spelt ``value``, or a config error naming where and what is allowed."""
    for member in code_list:
        if member.value == value:
            return member
    raise ValueError(f"{where}: one of {[m.value for m in code_list]}")


def signatures_match(expected: str, given: str) -> bool:
    """Constant-time comparison, so the answer's timing tells a forger nothing of the signature."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


@dataclass
class Mapped:
    """What one webhook body became: the events to send, the records that could not be mapped, how
    many records were left aside on purpose (events tsunagu does not count), and the state changes to
    keep once intake stored the events."""

    events: list[dict[str, Any]] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    ignored: int = 0
    commit: list[Callable[[], None]] = field(default_factory=list)


# How long the receivers remember an answered task or a person's conversation, in event time: far longer
# than any call or chat lasts, so that a late end still finds its answer; what is older is forgotten.
STATE_RETENTION_S = 7 * 24 * 3600


class State:
    """A small key → JSON store in SQLite (one table), safe to use from the event loop and the thread
    pool. Keys are digests of the platform's ids, never the ids themselves (a LINE user id is personal
    data). Each entry carries the event time it was last written at; writing one forgets every entry
    older than ``retention_s`` before it (event time, so a replay of old callbacks forgets alike), so the
    file stays as small as the calls and conversations of the last ``retention_s``."""

    def __init__(self, path: str | Path = ":memory:", retention_s: float = STATE_RETENTION_S) -> None:
        self._lock = threading.Lock()
        self.retention_s = retention_s
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        with self._lock, self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(state)")}
            if "at" not in columns:  # a file written before entries carried their time: kept until written
                self._db.execute("ALTER TABLE state ADD COLUMN at REAL")
            self._db.execute("CREATE INDEX IF NOT EXISTS state_at ON state (at)")

    def get(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any, at: float) -> None:
        """Keep ``value`` under ``key`` as of event time ``at`` (Unix seconds), forgetting what is older
        than the retention before it."""
        with self._lock, self._db:
            self._db.execute("INSERT INTO state (key, value, at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                             "value = excluded.value, at = max(coalesce(state.at, excluded.at), excluded.at)",
                             (key, json.dumps(value), at))
            self._db.execute("DELETE FROM state WHERE at < ?", (at - self.retention_s,))

    def delete(self, key: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM state WHERE key = ?", (key,))

    def count(self) -> int:
        """How many entries are kept (not ``__len__``: an empty store must still be truthy)."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM state").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def intake_sender(intake_url: str, key: str, **client_options: Any) -> Send:
    """A ``Send`` that posts to intake with the partner's key (a few attempts; see WEBHOOK_ATTEMPTS)."""
    client = IntakeClient(intake_url, key, attempts=WEBHOOK_ATTEMPTS, **client_options)
    return client.send


def _answer(status: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status)


async def deliver(mapped: Mapped, send: Send) -> JSONResponse:
    """Send what a body mapped to and answer as the module docstring says; keep its state only when
    intake stored every event."""
    if mapped.unmapped:
        for u in mapped.unmapped:
            log.warning("webhook record not mapped: %s", u)
        return _answer(422, error="unmapped", unmapped=[str(u) for u in mapped.unmapped])
    report = SendReport()
    if mapped.events:
        try:
            report = await run_in_threadpool(send, mapped.events)
        except IntakeRefused as err:
            log.error("intake did not store the webhook's events: %s", str(err)[:200])
            return _answer(503, error="intake_unavailable")
        if not report.ok:
            for event_id, problems in report.refused.items():
                log.error("intake refused event %s at %s", event_id, [p.get("path") for p in problems])
            return _answer(502, error="intake_refused", refused=sorted(report.refused))
    for keep in mapped.commit:
        keep()
    return _answer(200, sent=len(mapped.events), accepted=report.counts["accepted"],
                   duplicate=report.counts["duplicate"], ignored=mapped.ignored)


Verify = Callable[[Request, bytes], int | None]
MapBody = Callable[[Request, bytes], Mapped]


def webhook_app(path: str, verify: Verify, map_body: MapBody, send: Send) -> Starlette:
    """The partner's webhook receiver: one POST route. Requests are handled one at a time, so two
    callbacks about the same task or person never race over the connector's state (a partner's volume
    is a few events a second)."""
    one_at_a_time = asyncio.Lock()

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        refused = verify(request, body)
        if refused is not None:
            log.warning("webhook refused: signature %s", "missing" if refused == 401 else "wrong")
            return _answer(refused, error="signature_missing" if refused == 401 else "signature_invalid")
        async with one_at_a_time:
            return await deliver(map_body(request, body), send)

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "live"})

    return Starlette(routes=[Route(path, receive, methods=["POST"]), Route("/health/live", live)])


def serve(app: Starlette, host: str, port: int) -> None:
    """Run the receiver with uvicorn (one worker: the state is one process's)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")


def send_saved(callbacks: list[Path], map_one: Callable[[bytes], Mapped],
               send: Send) -> list[tuple[Path, int, dict[str, Any]]]:
    """Each saved callback through what the receiver does for a request once its signature is checked
    (map, send, keep the state only when intake stored every event), in order; stops at the first one
    not answered 200, since a later callback may rest on it (an end on its answer). Returns each file's
    status and answer."""
    answers: list[tuple[Path, int, dict[str, Any]]] = []
    for path in callbacks:
        response = asyncio.run(deliver(map_one(path.read_bytes()), send))
        answers.append((path, response.status_code, json.loads(bytes(response.body))))
        if response.status_code != 200:
            break
    return answers


def sent_summary(answers: list[tuple[Path, int, dict[str, Any]]], files: int) -> str:
    """One line for the person sending: what intake stored, and how many files got that far."""
    stored = [body for _, status, body in answers if status == 200]
    accepted, duplicate = sum(b["accepted"] for b in stored), sum(b["duplicate"] for b in stored)
    return f"intake: {accepted} accepted, {duplicate} duplicate; {len(stored)} of {files} files sent"


# --- what the receivers' commands share ----------------------------------------------------------------

IntakeUrlOption = Annotated[str, typer.Option("--intake-url", envvar="TSUNAGU_INTAKE_URL")]
KeyFileOption = Annotated[Path | None, typer.Option("--key-file", help=f"partner API key (or env {KEY_ENV})")]


def check_saved(paths: list[Path], map_one: Callable[[bytes], Mapped],
                show: Callable[[dict[str, Any]], dict[str, Any]] = lambda e: e) -> None:
    """``check``: map saved bodies as the receiver would, in order (state carries across them), and print
    the events; nothing is sent. Exit 1 when one cannot be mapped."""
    failed = False
    for path in paths:
        mapped = map_one(path.read_bytes())
        for u in mapped.unmapped:
            typer.echo(f"{path.name}: {u}", err=True)
            failed = True
        for keep in mapped.commit:
            keep()
        for e in mapped.events:
            typer.echo(json.dumps(show(e), ensure_ascii=False))
    if failed:
        raise typer.Exit(1)


def send_saved_command(paths: list[Path], map_one: Callable[[bytes], Mapped], send: Send) -> None:
    """``send``: ``send_saved``, each file's answer and a summary printed; exit 1 when one was not stored."""
    answers = send_saved(paths, map_one, send)
    for path, status, body in answers:
        typer.echo(f"{path.name}: {status} {json.dumps(body, ensure_ascii=False)}", err=status != 200)
    typer.echo(sent_summary(answers, len(paths)))
    if any(status != 200 for _, status, _ in answers):
        raise typer.Exit(1)
