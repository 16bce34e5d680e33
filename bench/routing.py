"""Benchmark routing: decisions per second and the latency from ``contact.field_selected``
published to ``routing.assigned`` consumed, at steady offered rates of contacts per second.

Runs against its own embedded broker and PostgreSQL (temp dir, free ports). Each contact is three
events — received, field_selected, and ended half a second later (so lines free up and the board
stays the size of real traffic) — onto ``contact.events``; a desk per field has lines enough that
every contact is assigned at once, so what is measured is routing's own path: consume a batch,
lock the board, apply, write board + inbox + outbox, commit, publish. Baselines in the same run, at
the same rate through the same broker: a bare publish-consume hop, and a bare echo round trip
(publish → a plain consumer fetching like routing's → re-publish → consume): routing's own path is
a round trip too, so the echo is the baseline the goal (p99 ≤ 1.5 × baseline p99) is judged on.

With ``--chat-share F`` a share F of the contacts are chats and SNS talks (half each), of which half
carry a triage: every desk then also has seats holding three conversations each, and a chat is assigned
to the least-loaded seat (the mixed phone + chat load).

Usage: ``python bench/routing.py [--rates 100,500,2000] [--seconds 10] [--chat-share 0.5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from datetime import timedelta
from pathlib import Path

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scaffold import private_stack  # noqa: E402
from schemas.kafka import encode_value, kafka_headers  # noqa: E402
from services.routing.handlers import FETCH_MAX_WAIT_MS  # noqa: E402
from tests.integration.routing_support import ended, field_selected, received, triaged  # noqa: E402
from tests.support import T0, ServiceProcess  # noqa: E402
from tsunagu.kafka import assign_all_partitions  # noqa: E402
from tsunagu.settings import Settings  # noqa: E402

FIELDS = ["loneliness", "suicidal", "hardship", "under18", "women_dv", "gender", "single_mother", "foreign_language"]
END_AFTER_S = 0.5


SEATS, PER_SEAT = 400, 3  # per desk, with --chat-share: room for every chat at once at 2,000/s


def registry(chat_share: float = 0.0) -> dict:
    seats = {"seats": SEATS, "conversations_per_seat": PER_SEAT} if chat_share else {}
    return {
        "version": "bench",
        "effective_from": (T0 - timedelta(days=1)).isoformat(),
        "rules": {"ring_timeout_s": 3600, "channels": {c: {"offer_timeout_s": 3600} for c in ("chat", "sns")}},
        "organisations": [{"id": "npo-bench", "name": "bench", "desks": [
            {"id": f"desk-{f}", "fields": [f], "lines": 5000, **seats} for f in FIELDS]}],
    }


def channel_of(i: int, chat_share: float) -> str:
    """Contact i's channel: an even spread of chats (then SNS) through the phone calls."""
    if int((i + 1) * chat_share) == int(i * chat_share):
        return "phone"
    return "chat" if int((i + 1) * chat_share) % 2 else "sns"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def consumer_for(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10,
                                auto_offset_reset="latest")
    await consumer.start()
    tps = await assign_all_partitions(consumer, [topic])
    await consumer.seek_to_end(*tps)
    return consumer


async def paced(rate: int, seconds: float, send_tick) -> int:
    """Call ``send_tick(first, count)`` every 10 ms so that ``rate`` items per second go out."""
    total = int(rate * seconds)
    sent = 0
    t0 = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * rate) + 1)
        if due > sent:
            await send_tick(sent, due - sent)
            sent = due
        await asyncio.sleep(0.01)
    return sent


async def timed_hop(producer: AIOKafkaProducer, send_to: str, read_from: str, bootstrap: str, rate: int,
                    seconds: float, payload: bytes, prefix: str) -> list[float]:
    """Publish to ``send_to`` at ``rate`` messages/s and time each one until it is read on ``read_from``."""
    consumer = await consumer_for(bootstrap, read_from)
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []

    async def tick(first: int, count: int) -> None:
        for i in range(first, first + count):
            key = f"{prefix}{i}".encode()
            sent_at[key] = time.perf_counter()
            await producer.send(send_to, payload, key=key)

    async def read(total: int) -> None:
        deadline = time.perf_counter() + seconds + 30
        while len(latencies) < total and time.perf_counter() < deadline:
            for records in (await consumer.getmany(timeout_ms=50)).values():
                now = time.perf_counter()
                latencies.extend(now - sent_at.pop(r.key) for r in records if r.key in sent_at)

    try:
        reader = asyncio.create_task(read(int(rate * seconds)))
        await paced(rate, seconds, tick)
        await reader
    finally:
        await consumer.stop()
    return latencies


async def bare_hop(bootstrap: str, topic: str, rate: int, seconds: float, payload: bytes) -> list[float]:
    """Latency of one publish → consume hop through the broker at ``rate`` messages/s."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=65536)
    await producer.start()
    try:
        return await timed_hop(producer, topic, topic, bootstrap, rate, seconds, payload, "k")
    finally:
        await producer.stop()


async def echo_worker(bootstrap: str, src: str, dst: str, fetch_max_wait_ms: int) -> None:
    """The echo: a plain aiokafka consumer in its own group, set up like routing's (batch fetch of up to
    1,000 records, the same fetch wait, offsets committed per batch), that re-publishes every record to
    ``dst`` through a producer like routing's outbox (linger 5 ms, acks all; acks awaited beside).
    Runs as its own process, as routing does; prints ``ready`` once its partitions are assigned."""
    echo_out = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=65536, acks="all")
    echo_in = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=f"bench-echo-{time.time_ns()}",
                               enable_auto_commit=False, auto_offset_reset="latest", max_poll_records=1000,
                               fetch_max_wait_ms=fetch_max_wait_ms, session_timeout_ms=6000,
                               heartbeat_interval_ms=1000)
    await echo_out.start()
    await echo_in.start()
    while not echo_in.assignment():  # joined, partitions assigned
        await echo_in.getmany(timeout_ms=100)
    for tp in echo_in.assignment():
        await echo_in.position(tp)  # positions at the end before the first record is offered
    print("ready", flush=True)
    acks: set[asyncio.Task] = set()
    try:
        while True:
            batches = await echo_in.getmany(timeout_ms=fetch_max_wait_ms, max_records=1000)
            futures = [await echo_out.send(dst, r.value, key=r.key) for records in batches.values() for r in records]
            if futures:
                task = asyncio.create_task(asyncio.wait(futures))
                acks.add(task)
                task.add_done_callback(acks.discard)
                await echo_in.commit()
    finally:
        await echo_in.stop()
        await echo_out.stop()


async def echo_round_trip(bootstrap: str, topics: tuple[str, str], rate: int, seconds: float, payload: bytes,
                          fetch_max_wait_ms: int) -> list[float]:
    """Latency of a bare round trip at ``rate`` messages/s: publish to ``topics[0]``, the echo process
    (``echo_worker``) re-publishes to ``topics[1]``, measured from the first publish to consuming the
    echo. This is routing's path minus routing's own work (decode, board, PostgreSQL)."""
    src, dst = topics
    worker = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--echo-worker", bootstrap, src, dst, str(fetch_max_wait_ms),
        stdout=asyncio.subprocess.PIPE)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=65536)
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), timeout=60)
        if line.strip() != b"ready":
            raise RuntimeError(f"echo worker did not start: {line!r}")
        await producer.start()
        return await timed_hop(producer, src, dst, bootstrap, rate, seconds, payload, "e")
    finally:
        await producer.stop()
        if worker.returncode is None:
            worker.terminate()
        await worker.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux), to show routing's cost per event beside
    latencies that a shared machine disturbs far more."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def through_routing(bootstrap: str, settings: Settings, rate: int, seconds: float, run: int,
                          pid: int | None = None, chat_share: float = 0.0) -> dict:
    cpu0 = cpu_seconds(pid) if pid else 0.0
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=65536)
    await producer.start()
    consumer = await consumer_for(bootstrap, settings.topic("routing.decisions"))
    topic = settings.topic("contact.events")
    headers = kafka_headers()
    selected_at: dict[str, float] = {}
    latencies: list[float] = []
    chat_latencies: list[float] = []
    chats: set[str] = set()
    events_sent = 0
    decisions = 0
    started = time.perf_counter()

    def event_time():
        return T0 + timedelta(hours=run, seconds=time.perf_counter() - started)

    async def send(events: list[dict]) -> None:
        nonlocal events_sent
        events_sent += len(events)
        for e in events:
            await producer.send(topic, encode_value(e), key=e["partitionkey"].encode(), headers=headers)

    pending_end: list[tuple[float, str]] = []

    async def tick(first: int, count: int) -> None:
        now = time.perf_counter()
        batch = []
        while pending_end and pending_end[0][0] <= now:
            batch.append(ended(pending_end.pop(0)[1], event_time()))
        for i in range(first, first + count):
            cid = f"r{run}-{i}"
            at = event_time()
            channel = channel_of(i, chat_share)
            batch.append(received(cid, at, channel=channel))
            if channel != "phone":
                chats.add(cid)
                if i % 2:
                    batch.append(triaged(cid, ("low", "medium", "high")[i % 3], at))
            batch.append(field_selected(cid, FIELDS[i % len(FIELDS)], at))
            selected_at[cid] = time.perf_counter()
            pending_end.append((now + END_AFTER_S, cid))
        await send(batch)

    async def read(total: int) -> None:
        nonlocal decisions
        deadline = time.perf_counter() + seconds + 60
        while len(latencies) < total and time.perf_counter() < deadline:
            for records in (await consumer.getmany(timeout_ms=50)).values():
                now = time.perf_counter()
                for r in records:
                    decisions += 1
                    event = json.loads(r.value)
                    if event["type"] == "jp.tsunagu.routing.assigned.v1":
                        cid = event["subject"]
                        if cid in selected_at:
                            latencies.append(now - selected_at.pop(cid))
                            if cid in chats:
                                chat_latencies.append(latencies[-1])

    try:
        total = int(rate * seconds)
        reader = asyncio.create_task(read(total))
        t0 = time.perf_counter()
        await paced(rate, seconds, tick)
        offered_seconds = time.perf_counter() - t0
        offered_events = events_sent
        await reader
        drained_seconds = time.perf_counter() - t0
        await send([ended(cid, event_time()) for _, cid in pending_end])
    finally:
        await consumer.stop()
        await producer.stop()
    cpu = cpu_seconds(pid) - cpu0 if pid else float("nan")
    return {"latencies": latencies, "decisions": decisions, "offered_s": offered_seconds, "drained_s": drained_seconds,
            "total": total, "cpu_s": cpu, "events": offered_events, "chat_latencies": chat_latencies}


async def main(args: argparse.Namespace) -> None:
    rates = [int(r) for r in args.rates.split(",")]
    async with private_stack("routing", args.partitions, "bench_routing") as (settings, home):
        bootstrap, dsn = settings.kafka_bootstrap_servers, settings.database_url
        from tsunagu.kafka import create_topics
        await create_topics(bootstrap, ["bench.hop", "bench.echo.in", "bench.echo.out"], args.partitions)
        (home / "desks.yaml").write_text(yaml.safe_dump(registry(args.chat_share)))
        env = {"DATABASE_URL": dsn, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "TSUNAGU_ROUTING_PORT": str(settings.routing_port), "TSUNAGU_LOG_LEVEL": args.log_level,
               "TSUNAGU_ROUTING_DESKS_FILES": str(home / "desks.yaml")}
        routing = ServiceProcess("routing", env, settings.routing_port, home / "routing.log").start()
        payload = encode_value(field_selected("x-0", "loneliness", T0))
        rows = []
        try:
            # warm-up: group joined, caches hot
            await through_routing(bootstrap, settings, 50, 2, run=0, chat_share=args.chat_share)
            for n, rate in enumerate(rates, start=1):
                hop = await bare_hop(bootstrap, "bench.hop", rate, args.seconds, payload)
                echo = await echo_round_trip(bootstrap, ("bench.echo.in", "bench.echo.out"), rate, args.seconds,
                                             payload, FETCH_MAX_WAIT_MS)
                result = await through_routing(bootstrap, settings, rate, args.seconds, run=n, pid=routing.proc.pid,
                                               chat_share=args.chat_share)
                rows.append((rate, hop, echo, result))
                print(f"{rate}/s: hop {len(hop)}, echo {len(echo)}, routing {len(result['latencies'])} of "
                      f"{result['total']}", file=sys.stderr, flush=True)
        finally:
            routing.stop()
            if args.keep_log:
                Path(args.keep_log).write_bytes((home / "routing.log").read_bytes())
        mix = (f"mixed: {args.chat_share:.0%} chat and SNS (half triaged) on {SEATS} seats x {PER_SEAT} per desk"
               if args.chat_share else "phone only")
        print(f"\nrouting benchmark — {mix}; {args.seconds:.0f} s per rate, {args.partitions} partitions, one routing "
              f"process; {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"{'contacts/s':>10} {'events/s':>9} {'decisions/s':>12} {'assigned':>11} {'drain s':>8} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'hop p50':>8} {'hop p99':>8} {'echo p50':>9} {'echo p99':>9} "
              f"{'p50/echo':>9} {'p99/echo':>9} {'p50/hop':>8} {'p99/hop':>8} {'cpu ms/1k':>9}")
        for rate, hop, echo, r in rows:
            lat = r["latencies"]
            p50, p99 = percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000
            h50, h99 = percentile(hop, 0.5) * 1000, percentile(hop, 0.99) * 1000
            e50, e99 = percentile(echo, 0.5) * 1000, percentile(echo, 0.99) * 1000
            print(f"{rate:>10} {r['events'] / r['offered_s']:>9,.0f} {r['decisions'] / r['drained_s']:>12,.0f} "
                  f"{len(lat):>5}/{r['total']:<5} {r['drained_s'] - r['offered_s']:>8.1f} "
                  f"{p50:>7.0f} {p99:>7.0f} {h50:>8.0f} {h99:>8.0f} {e50:>9.0f} {e99:>9.0f} "
                  f"{p50 / e50:>9.2f} {p99 / e99:>9.2f} {p50 / h50:>8.2f} {p99 / h99:>8.2f} "
                  f"{r['cpu_s'] * 1e6 / r['events']:>9.0f}")
            if args.chat_share:
                c = r["chat_latencies"]
                print(f"{'':>10} of them chats: {len(c)}, p50 {percentile(c, 0.5) * 1000:.0f} ms, "
                      f"p99 {percentile(c, 0.99) * 1000:.0f} ms")
        print("events/s = offered contact events (received, triaged, field_selected, ended); drain s = seconds "
              "after the last contact was offered until its assignment was consumed (growing lag shows here); "
              "hop = a bare publish→consume hop at the same contacts/s, same run; echo = a bare round trip at the "
              f"same contacts/s (publish → a plain consumer fetching like routing's, {FETCH_MAX_WAIT_MS} ms fetch "
              "wait → re-publish with linger 5 ms → consume), same run. Goal: p99/echo ≤ 1.5. cpu ms/1k = routing's "
              "CPU time (user + system) per 1,000 contact events offered.")
        print(f"load average after the run: {os.getloadavg()[0]:.2f} (machine shared: compare ratios, not absolutes)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--echo-worker"]:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(echo_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,500,2000", help="offered contacts per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--chat-share", type=float, default=0.0, help="share of contacts that are chat/SNS (0-1)")
    parser.add_argument("--log-level", default="warning", help="routing's log level (debug: per-batch timings)")
    parser.add_argument("--keep-log", default=None, help="copy routing's log here")
    asyncio.run(main(parser.parse_args()))
