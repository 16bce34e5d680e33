"""Benchmark intake: accepted events per second through HTTP batches and the ingress topic.

Runs against its own embedded broker and PostgreSQL (temp dir, free ports) so figures are not
disturbed by a running stack. Baseline in the same run: raw aiokafka produce rate of events of
the same size to the same broker. Usage: ``make bench`` or ``python bench/intake.py [--events N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scaffold import private_stack  # noqa: E402
from tests.support import ServiceProcess, contact_received, field_selected  # noqa: E402
from tsunagu import auth, topics  # noqa: E402
from tsunagu.db import create_pool  # noqa: E402
from tsunagu.settings import Settings  # noqa: E402


def events(org: str, start: int, count: int) -> list[dict]:
    """Half contact.received (with a phone number to pseudonymise), half contact.field_selected."""
    out = []
    for n in range(start, start + count // 2):
        out.append(contact_received(org, n))
        out.append(field_selected(org, n))
    return out


async def raw_produce_rate(bootstrap: str, topic: str, payload: bytes, count: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=65536)
    await producer.start()
    try:
        t0 = time.perf_counter()
        futures = [await producer.send(topic, payload, key=f"k{i}".encode()) for i in range(count)]
        await asyncio.gather(*futures)
        return count / (time.perf_counter() - t0)
    finally:
        await producer.stop()


async def wait_on_topic(bootstrap: str, topic: str, expected: int, timeout: float = 300) -> float:
    """Seconds until ``expected`` records are on ``topic`` (counted by end offsets of records read)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50,
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        t0 = time.perf_counter()
        while seen < expected and time.perf_counter() - t0 < timeout:
            for records in (await consumer.getmany(timeout_ms=100, max_records=10000)).values():
                seen += len(records)
        return time.perf_counter() - t0
    finally:
        await consumer.stop()


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client: the load generator shares the 2 cores with intake,
    so it must cost as little as possible (httpx costs about as much CPU as intake's handler)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode() + body)
        assert self.reader is not None
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def http_rate(url: str, key: str, total: int, batch: int, concurrency: int) -> tuple[float, int]:
    bodies = [json.dumps(events("npo-bench", i, batch)).encode() for i in range(0, total, batch)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents-batch+json"}
    host, port = url.removeprefix("http://").split(":")
    accepted = 0
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def worker() -> None:
        nonlocal accepted
        client = RawHttp(host, int(port))
        try:
            while not queue.empty():
                status, answer = await client.post("/v1/events", queue.get_nowait(), headers)
                if status != 200:
                    raise RuntimeError(f"intake answered {status}: {answer[:300]!r}")
                accepted += json.loads(answer)["accepted"]
        finally:
            client.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, accepted


async def worker_warmup(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    body = json.dumps(events("npo-bench", 10_000_000, 10)).encode()
    (await client.post("/v1/events", content=body, headers=headers)).raise_for_status()


async def ingress_rate(bootstrap: str, settings: Settings, total: int, already: int) -> tuple[float, float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=65536)
    await producer.start()
    payloads = [json.dumps(e).encode() for e in events("npo-ingress", 0, total)]
    try:
        t0 = time.perf_counter()
        futures = [await producer.send(settings.topic(topics.INGRESS), p) for p in payloads]
        await asyncio.gather(*futures)
        produced = time.perf_counter() - t0
    finally:
        await producer.stop()
    elapsed = await wait_on_topic(bootstrap, settings.topic(topics.CONTACT_EVENTS), already + total)
    return produced, elapsed + produced


async def main(args: argparse.Namespace) -> None:
    async with private_stack("intake", args.partitions, "bench") as (settings, home):
        bootstrap, dsn = settings.kafka_bootstrap_servers, settings.database_url
        pool = await create_pool(dsn)
        await auth.migrate_schema(pool)
        key = (await auth.issue_credential(pool, "npo-bench", "partner", backfill=True))[1]
        await auth.issue_credential(pool, "npo-ingress", "partner", backfill=True)
        await pool.close()

        sample = json.dumps(contact_received("npo-bench", 1)).encode()
        baseline = await raw_produce_rate(bootstrap, "bench.baseline", sample, args.events)

        env = {"DATABASE_URL": dsn, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "TSUNAGU_INTAKE_PORT": str(settings.intake_port), "TSUNAGU_LOG_LEVEL": "warning",
               "TSUNAGU_CALLER_KEY_SECRET": "bench-secret-0123456789abcdef0123456789",
               "TSUNAGU_WORKERS": str(args.workers)}
        intake = ServiceProcess("intake", env, settings.intake_port, home / "intake.log").start()
        try:
            async with httpx.AsyncClient(base_url=intake.url, timeout=60) as client:
                await worker_warmup(client, {"Authorization": f"Bearer {key}",
                                             "Content-Type": "application/cloudevents-batch+json"})
            t0 = time.perf_counter()
            http_seconds, accepted = await http_rate(intake.url, key, args.events, args.batch, args.concurrency)
            # the outbox drains behind the answers; reading back is part of the measured time
            await wait_on_topic(bootstrap, settings.topic(topics.CONTACT_EVENTS), accepted + 10)
            to_topic_seconds = time.perf_counter() - t0
            produced, ingress_seconds = await ingress_rate(bootstrap, settings, args.events, accepted + 10)
        finally:
            intake.stop()

        rows = [
            ("raw aiokafka produce (baseline)", baseline),
            (f"HTTP batches of {args.batch}, accepted (2xx)", accepted / http_seconds),
            (f"HTTP batches of {args.batch}, through to the canonical topic", accepted / to_topic_seconds),
            ("ingress topic, through to the canonical topic", args.events / ingress_seconds),
        ]
        print(f"\nintake benchmark — {args.events} events of ~{len(sample)} bytes, {args.partitions} partitions, "
              f"{args.concurrency} concurrent HTTP clients, {args.workers} intake workers; "
          f"{platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}")
        print(f"{'path':58} {'events/s':>10} {'× baseline':>11}")
        for name, rate in rows:
            print(f"{name:58} {rate:10,.0f} {rate / baseline:11.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2, help="intake worker processes")
    asyncio.run(main(parser.parse_args()))
