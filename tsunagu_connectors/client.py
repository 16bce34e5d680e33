"""Sending events to intake (POST /v1/events, batches) as a partner does: with its key, in batches
intake takes, waiting as long as ``Retry-After`` says on 429 and 503, and never giving up silently."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from tsunagu_connectors.report import SendReport

BATCH = "application/cloudevents-batch+json"
DEFAULT_INTAKE_URL = "http://127.0.0.1:8081"  # the local stack's intake (tsunagu/settings.py, intake_port)
KEY_ENV = "TSUNAGU_API_KEY"
BATCH_EVENTS = 500  # intake's default largest batch (TSUNAGU_MAX_BATCH_EVENTS)


class SecretMissing(ValueError):
    """A key, token or secret the connector needs was given neither as a file nor in the environment."""


def read_secret(path: Path | None, env: str, what: str) -> str:
    """A secret from its file (first line) or the environment variable ``env``; never from the command
    line, where it would show in the process list and the shell's history."""
    if path is not None:
        value = path.read_text(encoding="utf-8").strip()
    else:
        value = os.environ.get(env, "").strip()
    if not value:
        raise SecretMissing(f"{what}: give a file or set {env}")
    return value


def partner_key(key_file: Path | None) -> str:
    """The partner's API key from ``--key-file`` or ``TSUNAGU_API_KEY``; never echoed."""
    return read_secret(key_file, KEY_ENV, "the partner API key (--key-file)")


class IntakeRefused(RuntimeError):
    """Intake refused a whole request (401, 403, 413, 415, 400): sending again would not help."""


class IntakeClient:
    def __init__(self, url: str, key: str, *, batch_events: int = BATCH_EVENTS, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, attempts: int = 20,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url.rstrip("/") + "/v1/events"
        self.batch_events = batch_events
        self.attempts = attempts
        self.sleep = sleep
        self.http = httpx.Client(timeout=timeout, transport=transport,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": BATCH})

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> IntakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, events: Iterable[dict[str, Any]], report: SendReport | None = None) -> SendReport:
        """Every event, in order, in batches; returns (or adds to) the report of intake's answers."""
        report = report if report is not None else SendReport()
        batch: list[dict[str, Any]] = []
        for e in events:
            batch.append(e)
            if len(batch) >= self.batch_events:
                report.add(self._post(batch))
                batch = []
        if batch:
            report.add(self._post(batch))
        return report

    def _post(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = json.dumps(batch, ensure_ascii=False).encode()
        for _ in range(self.attempts):
            try:
                answer = self.http.post(self.url, content=body)
            except httpx.TransportError:
                self.sleep(1.0)  # intake restarting: what it stored answers as duplicates on the retry
                continue
            if answer.status_code in (429, 503):
                self.sleep(float(answer.headers.get("Retry-After", "1")))
                continue
            if answer.status_code != 200:
                raise IntakeRefused(f"intake answered {answer.status_code}: {answer.text[:500]}")
            results: list[dict[str, Any]] = answer.json()["results"]
            return results
        raise IntakeRefused(f"intake did not take the batch after {self.attempts} attempts")
