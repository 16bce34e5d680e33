"""Benchmark intake's fairness: a quiet partner's latency while another partner floods.

Runs against its own embedded broker and PostgreSQL (temp dir, free ports, loopback only). Both
partners hold live keys (no back-fill) and send events dated now, as partners in service do. For each
intake configuration (``--configs``; all three by default, same run):

- ``defaults``: as shipped — the per-partner rate limit, the fair-share gate, precedence;
- ``unlimited``: the rate limit off (``TSUNAGU_INTAKE_RATE_PER_S=0``): a partner allowed more than the
  host can take, so only the gate and precedence stand between the flood and the quiet partner;
- ``before``: neither rate limit nor gate (``TSUNAGU_INTAKE_IN_FLIGHT=0``), as before the gate;

it measures:

1. the flood alone (in ``unlimited`` and ``before``, the host's capacity: the same-run baseline): the
   flooding partner as fast as ``--flood-connections`` connections allow: accepted events per second;
2. the quiet partner alone: single events at ``--quiet-rate`` a second, p50/p95 latency;
3. both: the quiet partner as in 2 while the other floods as in 1 (bounded by ``--flood-events`` and
   ``--seconds``; it re-sends at once after a 429, ignoring ``Retry-After``: the worst case).

Prints both p95s and their ratio (the goal: < 2×). Usage: ``make bench`` or
``python bench/fairness.py [--seconds S] [--flood-batch N] [--flood-connections C] [--workers W]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.intake import RawHttp  # noqa: E402
from bench.scaffold import private_stack  # noqa: E402
from tests.support import ServiceProcess, contact_received, field_selected  # noqa: E402
from tsunagu import auth  # noqa: E402
from tsunagu.db import create_pool  # noqa: E402
from tsunagu.settings import Settings  # noqa: E402

QUIET, FLOOD = "npo-quiet", "npo-flood"
SINGLE = {"Content-Type": "application/cloudevents+json"}
BATCH = {"Content-Type": "application/cloudevents-batch+json"}
CONFIGS = {
    "defaults": {},
    "unlimited": {"TSUNAGU_INTAKE_RATE_PER_S": "0"},
    "before": {"TSUNAGU_INTAKE_RATE_PER_S": "0", "TSUNAGU_INTAKE_IN_FLIGHT": "0"},
}


def now() -> datetime:
    return datetime.now(UTC)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Flood:
    accepted: int = 0
    answers: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


async def flood(host: str, port: int, key: str, numbers: itertools.count, batch: int, connections: int,
                max_events: int, seconds: float, stop: asyncio.Event | None = None, rate: float = 0) -> Flood:
    """Send as fast as ``connections`` keep-alive connections allow, until ``max_events`` were sent
    (answered, whatever the answer) or ``seconds`` passed."""
    headers = {"Authorization": f"Bearer {key}", **(BATCH if batch > 1 else SINGLE)}
    out = Flood()
    sent = 0
    deadline = time.perf_counter() + seconds
    begun = time.perf_counter()

    def body() -> bytes:
        n, at = next(numbers), now()
        if batch == 1:
            return json.dumps(contact_received(FLOOD, n, at=at)).encode()
        # half contact.received (a phone number to pseudonymise), half contact.field_selected
        return json.dumps([e for m in range(n * batch, n * batch + batch // 2)
                           for e in (contact_received(FLOOD, m, at=at), field_selected(FLOOD, m, at=at))]).encode()

    async def worker() -> None:
        nonlocal sent
        client = RawHttp(host, port)
        try:
            payload = body()
            while sent < max_events and time.perf_counter() < deadline and not (stop and stop.is_set()):
                if rate:  # paced: no more than ``rate`` events a second in all
                    await asyncio.sleep(max(0.0, begun + sent / rate - time.perf_counter()))
                t0 = time.perf_counter()
                status, answer = await client.post("/v1/events", payload, headers)
                out.latencies.append(time.perf_counter() - t0)
                out.answers[status] = out.answers.get(status, 0) + 1
                sent += batch
                if status in (200, 202):
                    out.accepted += json.loads(answer)["accepted"]
                    payload = body()
                elif status != 429:
                    raise RuntimeError(f"intake answered {status}: {answer[:300]!r}")
        finally:
            client.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    out.seconds = time.perf_counter() - t0
    return out


async def quiet(host: str, port: int, key: str, numbers: itertools.count, rate: float, seconds: float
                ) -> tuple[list[float], dict[int, int]]:
    """Single events at ``rate`` a second (open loop: a slow answer does not delay the next send),
    for ``seconds``; each answer's latency."""
    headers = {"Authorization": f"Bearer {key}", **SINGLE}
    idle: list[tuple[RawHttp, float]] = []  # kept-alive connections and when they were last used
    latencies: list[float] = []
    answers: dict[int, int] = {}

    async def one(payload: bytes) -> None:
        client = None
        while idle and client is None:
            client, used = idle.pop()
            if time.perf_counter() - used > 2.0:  # intake may close it (keep-alive timeout): not measured
                client.close()
                client = None
        client = client or RawHttp(host, port)
        t0 = time.perf_counter()
        status, answer = await client.post("/v1/events", payload, headers)
        latencies.append(time.perf_counter() - t0)
        answers[status] = answers.get(status, 0) + 1
        if status != 202:
            raise RuntimeError(f"intake answered the quiet partner {status}: {answer[:300]!r}")
        idle.append((client, time.perf_counter()))

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(json.dumps(contact_received(QUIET, next(numbers), at=now())).encode())))
    await asyncio.gather(*tasks)
    for client, _ in idle:
        client.close()
    return latencies, answers


@dataclass
class Run:
    name: str
    capacity: Flood
    alone: list[float]
    together: list[float]
    flood: Flood
    quiet_answers: dict[int, int]


async def measure(name: str, env: dict[str, str], settings: Settings, home: Path, keys: dict[str, str],
                  args: argparse.Namespace, numbers: dict[str, itertools.count]) -> Run:
    intake = ServiceProcess("intake", env, settings.intake_port, home / f"intake-{name}.log").start()
    host, port = "127.0.0.1", settings.intake_port
    try:
        # warm up: both partners, a few requests
        await flood(host, port, keys[FLOOD], numbers[FLOOD], args.flood_batch, 2, 20 * args.flood_batch, 5)
        await quiet(host, port, keys[QUIET], numbers[QUIET], 20, 0.5)
        capacity = await flood(host, port, keys[FLOOD], numbers[FLOOD], args.flood_batch, args.flood_connections,
                               args.flood_events, args.seconds)
        await asyncio.sleep(1)  # let the outbox drain what the flood left
        alone, _ = await quiet(host, port, keys[QUIET], numbers[QUIET], args.quiet_rate, args.seconds)
        stop = asyncio.Event()
        flooding = asyncio.create_task(flood(host, port, keys[FLOOD], numbers[FLOOD], args.flood_batch,
                                             args.flood_connections, args.flood_events, args.seconds + 30, stop,
                                             args.flood_rate))
        await asyncio.sleep(1)  # the flood under way first
        together, answers = await quiet(host, port, keys[QUIET], numbers[QUIET], args.quiet_rate, args.seconds)
        stop.set()
        flooded = await flooding
        if flooded.seconds < args.seconds:
            print(f"  [{name}] the flood ended (--flood-events) before the quiet partner's run did")
        return Run(name, capacity, alone, together, flooded, answers)
    finally:
        intake.stop()


async def main(args: argparse.Namespace) -> None:
    async with private_stack("intake", args.partitions, "bench") as (settings, home):
        pool = await create_pool(settings.database_url)
        await auth.migrate_schema(pool)
        keys = {org: (await auth.issue_credential(pool, org, "partner"))[1] for org in (QUIET, FLOOD)}
        await pool.close()
        env = {"DATABASE_URL": settings.database_url, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
               "TSUNAGU_INTAKE_PORT": str(settings.intake_port), "TSUNAGU_LOG_LEVEL": "warning",
               "TSUNAGU_CALLER_KEY_SECRET": "bench-secret-0123456789abcdef0123456789",
               "TSUNAGU_WORKERS": str(args.workers)}
        extra = dict(setting.partition("=")[::2] for setting in args.set)
        numbers = {QUIET: itertools.count(), FLOOD: itertools.count()}
        runs = []
        for config in args.configs.split(","):
            name = config + (" " + " ".join(args.set) if args.set else "")
            runs.append(await measure(name, {**env, **CONFIGS[config], **extra}, settings, home, keys, args, numbers))

    print(f"\nintake fairness benchmark — quiet partner: single events at {args.quiet_rate:g}/s "
          f"for {args.seconds:g} s; "
          f"flooding partner: {'batches of ' + str(args.flood_batch) if args.flood_batch > 1 else 'single events'} "
          f"on {args.flood_connections} connections, re-sent at once after a 429 (at most {args.flood_events:,} "
          f"events); {args.workers} intake worker(s); {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
    print(f"{'configuration':34} {'flood alone':>11} {'quiet p50':>10} {'quiet p95':>10} {'+flood p50':>11} "
          f"{'+flood p95':>11} {'p95 ×':>6} {'flood ev/s':>11} {'flood p95':>10}  flood answers")
    for r in runs:
        ratio = pct(r.together, 0.95) / pct(r.alone, 0.95)
        answers = ", ".join(f"{s}: {n}" for s, n in sorted(r.flood.answers.items()))
        print(f"{r.name:34} {r.capacity.rate:9,.0f}/s {pct(r.alone, .5) * 1e3:8.1f}ms {pct(r.alone, .95) * 1e3:8.1f}ms "
              f"{pct(r.together, .5) * 1e3:9.1f}ms {pct(r.together, .95) * 1e3:9.1f}ms {ratio:5.2f}× "
              f"{r.flood.rate:9,.0f}/s {pct(r.flood.latencies, .95) * 1e3:8.0f}ms  {answers}")
    print("flood alone = the flooding partner alone, accepted events/s (without a rate limit: the host's capacity, "
          "the same-run baseline); p95 × = the quiet partner's p95 with the flood ÷ without (goal < 2×)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each measured phase")
    parser.add_argument("--quiet-rate", type=float, default=20.0, help="the quiet partner's events a second")
    parser.add_argument("--flood-batch", type=int, default=1, help="events per flooding request (1 = single events)")
    parser.add_argument("--flood-connections", type=int, default=32)
    parser.add_argument("--flood-rate", type=float, default=0,
                        help="events a second the flood offers alongside the quiet partner (0 = as fast as it can)")
    parser.add_argument("--flood-events", type=int, default=200_000, help="most events the flood sends per phase")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--workers", type=int, default=1, help="intake worker processes (TSUNAGU_WORKERS)")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                        help="an intake setting for every configuration, e.g. TSUNAGU_INTAKE_ORG_IN_FLIGHT=2")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, of: {', '.join(CONFIGS)}")
    asyncio.run(main(parser.parse_args()))
