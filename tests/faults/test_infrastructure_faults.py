"""Faults in the infrastructure under the running stack: PostgreSQL restarted, the broker restarted, a
consumer paused behind a backlog. Each test runs its own broker and PostgreSQL (tests/faults/
infra_stack.py) and sends partner traffic whose figures are known (tests/faults/infra_traffic.py);
every fault adds a row to the summary table of `make verify-faults`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from tests.faults import summary
from tests.faults.conftest import size
from tests.faults.infra_stack import PrivateStack, Readiness
from tests.faults.infra_traffic import ORG, Partner, compare, counted, expected, inbox_counts

pytestmark = pytest.mark.faults


@pytest.fixture
async def make_stack(tmp_path) -> AsyncIterator[Callable[..., Awaitable[PrivateStack]]]:
    """``await make_stack(env={...})``: this test's own broker, PostgreSQL and services, started."""
    started: list[PrivateStack] = []

    async def make(env: dict[str, str] | None = None) -> PrivateStack:
        own = PrivateStack(tmp_path, env=env)
        started.append(own)
        return await own.start()

    try:
        yield make
    finally:
        for own in started:
            await own.stop()


async def in_flight(own: PrivateStack) -> int:
    """Contact events intake accepted that metrics has not consumed yet."""
    counts = await inbox_counts(own.dsn)
    return counts["intake"] - counts["metrics"]


async def test_services_reconnect_after_postgresql_restarts_and_readiness_says_so_meanwhile(make_stack):
    own = await make_stack()
    contacts = size(600, 4000)
    partner = Partner(own.url("intake"), await own.partner_key(ORG), per_request=50)
    readiness = Readiness({s: own.url(s) for s in own.services}).start()
    try:
        traffic = asyncio.create_task(partner.send(0, contacts, pace=0.02))
        while partner.sent < contacts // 4 and not traffic.done():
            await asyncio.sleep(0.05)
        flight = await in_flight(own)
        await own.stop_postgres()
        await asyncio.sleep(3.0)  # long enough for every service's readiness probe to notice
        await own.start_postgres()
        await traffic
        got = await counted(own.dsn, contacts)
        # readiness comes back once each service works again
        deadline = asyncio.get_running_loop().time() + 60
        while (not all(readiness.went_false_and_back(s) for s in own.services)
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.2)
    finally:
        await readiness.stop()
        await partner.close()

    compared, diffs = compare(expected(contacts), got)
    not_ready = ", ".join(f"{s} {readiness.seconds_not_ready(s):.1f} s" for s in own.services)
    summary.record("PostgreSQL restarted (down 3 s)", injected=1, in_flight=flight, compared=compared,
                   differences=len(diffs),
                   detail=f"readiness false then true: {not_ready}; intake's answers retried: "
                          f"{dict(partner.retries) or 'none'}")
    assert diffs == []
    assert set(partner.retries) <= {"503", "429", "no answer"}, partner.retries  # never a 500
    for service in own.services:
        assert readiness.went_false_and_back(service), (service, readiness.down[service])


async def consumer_lag(client: httpx.AsyncClient, url: str) -> int | None:
    """``tsunagu_consumer_lag`` summed over the partitions the service reads, from its scrape endpoint
    (None: no partition assigned at the moment, e.g. while its group rebalances)."""
    text = (await client.get(f"{url}/metrics", timeout=5.0)).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("tsunagu_consumer_lag{")]
    return int(sum(values)) if values else None


async def test_a_paused_consumer_catches_up_without_loss_and_its_lag_shows_in_telemetry(make_stack):
    own = await make_stack(env={"TSUNAGU_CONSUMER_LAG_SECONDS": "0.5"})
    warm, backlog = size(100, 500), size(1500, 10_000)
    partner = Partner(own.url("intake"), await own.partner_key(ORG), per_request=200)
    metrics = own.services["metrics"]
    lags: list[int] = []
    try:
        await partner.send(0, warm)
        assert (await counted(own.dsn, warm))["metrics"] == 2 * warm

        assert metrics.proc is not None
        metrics.proc.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        try:
            await partner.send(warm, backlog)
            # the rest of the stack went on: routing consumed the backlog while metrics slept
            deadline = asyncio.get_running_loop().time() + 120
            while (await inbox_counts(own.dsn))["routing"] < 2 * (warm + backlog):
                assert asyncio.get_running_loop().time() < deadline, "routing did not consume the backlog"
                await asyncio.sleep(0.5)
            flight = await in_flight(own)
        finally:
            metrics.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()

        async with httpx.AsyncClient() as client:

            async def watch() -> None:
                while True:
                    lag = await consumer_lag(client, metrics.url)
                    if lag is not None:
                        lags.append(lag)
                    await asyncio.sleep(0.2)

            watcher = asyncio.create_task(watch())
            try:
                got = await counted(own.dsn, warm + backlog)
                caught_up = time.monotonic()
                # and the gauge comes back to zero once it has
                deadline = asyncio.get_running_loop().time() + 60
                while not (lags and lags[-1] == 0) and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.2)
            finally:
                watcher.cancel()
    finally:
        await partner.close()

    compared, diffs = compare(expected(warm + backlog), got)
    summary.record("metrics paused (SIGSTOP) behind a backlog", injected=1, in_flight=flight, compared=compared,
                   differences=len(diffs),
                   detail=f"paused {resumed - paused:.1f} s; tsunagu_consumer_lag peaked at {max(lags, default=0)} "
                          f"records, caught up {caught_up - resumed:.1f} s after SIGCONT, then 0")
    assert diffs == []
    assert max(lags, default=0) > 0, "the backlog never showed in tsunagu_consumer_lag"
    assert lags[-1] == 0, lags[-20:]


def republished(own: PrivateStack) -> dict[str, int]:
    """What each service's outbox published again after it found the topics gone (from its log)."""
    counts: dict[str, int] = {}
    for name, process in own.services.items():
        for line in process.log_path.read_text(errors="replace").splitlines():
            if '"broker_topics_recreated"' in line:
                counts[name] = counts.get(name, 0) + json.loads(line).get("republished", 0)
    return counts


async def test_after_the_in_memory_broker_restarts_every_event_is_still_counted_exactly_once(make_stack):
    # As `tsunagu up` runs the services beside the embedded broker: outboxes keep what they published.
    own = await make_stack(env={"TSUNAGU_OUTBOX_RETAIN_SECONDS": "600"})
    before, after = size(400, 3000), size(400, 3000)
    partner = Partner(own.url("intake"), await own.partner_key(ORG), per_request=200)
    readiness = Readiness({s: own.url(s) for s in own.services}).start()
    try:
        await partner.send(0, before)  # accepted; part of it still on its way through the topics
        flight = await in_flight(own)
        own.stop_broker()  # memory storage: every topic, record and committed offset is gone
        await asyncio.sleep(2.0)
        await asyncio.to_thread(own.start_broker)  # same port, empty
        await partner.send(before, after)
        got = await counted(own.dsn, before + after, timeout=180)
        deadline = asyncio.get_running_loop().time() + 60
        while (any(readiness.down[s] and readiness.down[s][-1][1] < 0 for s in own.services)
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.2)
    finally:
        await readiness.stop()
        await partner.close()

    compared, diffs = compare(expected(before + after), got)
    again = republished(own)
    not_ready = ", ".join(f"{s} {readiness.seconds_not_ready(s):.1f} s" for s in own.services)
    summary.record("broker restarted (in memory: topics and offsets lost)", injected=1, in_flight=flight,
                   compared=compared, differences=len(diffs),
                   detail=f"topics recreated by the services; republished from outboxes: "
                          f"{', '.join(f'{s} {n}' for s, n in again.items()) or 'none'}; not ready: {not_ready}")
    assert diffs == []
    assert again.get("intake", 0) > 0, "intake's outbox never noticed the broker lost its topics"
    assert not any(readiness.down[s] and readiness.down[s][-1][1] < 0 for s in own.services), readiness.down
