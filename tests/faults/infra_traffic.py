"""Traffic for the infrastructure faults, with its ground truth known by construction.

A telephony partner posts each contact's ``contact.received`` and ``contact.field_selected`` to
intake over HTTP, as partners do, and keeps trying through an outage (503 while intake cannot
store, connection errors, 429): a partner system retries what was not acknowledged. Every contact
is a phone attempt in one of three fields, so what metrics must count is known exactly.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
import httpx

from services.metrics.domain.periods import Period
from tests.support import T0, contact_received, field_selected
from tsunagu_tools.reports import period_report
from tsunagu_tools.simulate.report import metrics_figures

ORG = "faults-tel"
FIELDS = (("loneliness", 9), ("suicidal", 3), ("hardship", 1))  # menu keys of config/trial1.yaml
PERIOD = Period(T0, T0 + timedelta(days=2), "faults")
CONTACT_TYPES = ("jp.tsunagu.contact.received.v1", "jp.tsunagu.contact.field_selected.v1")


def field_of(n: int) -> tuple[str, int]:
    return FIELDS[n % len(FIELDS)]


def events_of(n: int) -> list[dict[str, Any]]:
    at = T0 + timedelta(seconds=3 * n)  # event time: one contact every 3 s from the trial's start
    name, key = field_of(n)
    return [contact_received(ORG, n, at=at), field_selected(ORG, n, name, key, at=at)]


class Partner:
    """Posts contacts to intake, retrying what intake did not acknowledge."""

    def __init__(self, intake_url: str, key: str, *, per_request: int = 100) -> None:
        self.client = httpx.AsyncClient(base_url=intake_url, timeout=10.0)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents-batch+json"}
        self.per_request = per_request
        self.sent = 0  # contacts acknowledged by intake
        self.retries: Counter[str] = Counter()  # why requests had to be repeated: a status, or "no answer"

    async def close(self) -> None:
        await self.client.aclose()

    async def post(self, events: list[dict[str, Any]]) -> None:
        body = json.dumps(events)
        delay = 0.1
        deadline = asyncio.get_running_loop().time() + 180  # a partner gives up at last, and so does the test
        while asyncio.get_running_loop().time() < deadline:
            try:
                answer = await self.client.post("/v1/events", content=body, headers=self.headers)
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code < 300:
                result = answer.json()
                assert not result.get("rejected"), result
                return
            if answer is not None and answer.status_code not in (429, 500, 502, 503, 504):
                raise AssertionError(f"intake answered {answer.status_code}: {answer.text[:300]}")
            self.retries[str(answer.status_code) if answer is not None else "no answer"] += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise AssertionError(f"intake did not accept events for 180 s (last answer {answer and answer.status_code})")

    async def send(self, first: int, count: int, *, pace: float = 0.0) -> None:
        """Contacts ``first`` .. ``first + count - 1``, ``per_request`` events a request."""
        events = [e for n in range(first, first + count) for e in events_of(n)]
        for i in range(0, len(events), self.per_request):
            await self.post(events[i:i + self.per_request])
            self.sent = first + min(i + self.per_request, len(events)) // 2
            if pace:
                await asyncio.sleep(pace)


def expected(contacts: int) -> dict[str, Any]:
    by_field = Counter(field_of(n)[0] for n in range(contacts))
    return {"attempts": contacts, "by_field": dict(by_field), "intake": 2 * contacts, "routing": 2 * contacts,
            "metrics": 2 * contacts}


async def inbox_counts(dsn: str) -> dict[str, int]:
    """Contact events each service has consumed (its inbox holds each (source, id) once)."""
    conn = await asyncpg.connect(dsn)
    try:
        counts = {}
        for schema in ("intake", "routing", "metrics"):
            counts[schema] = int(await conn.fetchval(
                f'SELECT count(*) FROM "{schema}".inbox WHERE type = ANY($1::text[])', list(CONTACT_TYPES)))
        return counts
    finally:
        await conn.close()


async def counted(dsn: str, contacts: int, *, timeout: float = 120.0) -> dict[str, Any]:
    """What the stack counted, once every service consumed every contact event (or the timeout)."""
    want = expected(contacts)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            counts = await inbox_counts(dsn)
        except (OSError, asyncpg.PostgresError):
            counts = {}
        if all(counts.get(s) == want[s] for s in ("intake", "routing", "metrics")) or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    figures = metrics_figures(await period_report(dsn, PERIOD))
    return {"attempts": figures["attempts"],
            "by_field": {k: g["attempts"] for k, g in figures["by_field"].items()}, **counts}


def compare(want: dict[str, Any], got: dict[str, Any]) -> tuple[int, list[str]]:
    """(figures compared, the ones that differ)."""
    pairs = [("attempts", want["attempts"], got.get("attempts"))]
    pairs += [(f"attempts {f}", n, got.get("by_field", {}).get(f)) for f, n in want["by_field"].items()]
    pairs += [(f"{s} consumed", want[s], got.get(s)) for s in ("intake", "routing", "metrics")]
    return len(pairs), [f"{name}: expected {a}, counted {b}" for name, a, b in pairs if a != b]
