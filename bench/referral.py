"""Benchmark referral: consultations per second turned into referrals, and escalations per second.

Runs the referral service as its own process against its own embedded broker and PostgreSQL (temp
dir, free ports), with the event-time clock. Measures (1) consultation records with
``referral_needed`` on ``consultation.events`` → ``referral.created`` on ``referral.events``, and
(2) one jump of event time past every deadline → every ``referral.escalated`` on the topic. Baseline
in the same run: raw aiokafka produce rate of records of the same size to the same broker.
Usage: ``python bench/referral.py [--events N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from datetime import timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scaffold import private_stack  # noqa: E402
from schemas.kafka import kafka_headers  # noqa: E402
from tests.integration.referral_support import consultation  # noqa: E402
from tests.support import T0, ServiceProcess  # noqa: E402
from tsunagu import topics  # noqa: E402


async def produce(bootstrap: str, topic: str, events: list[dict]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=65536)
    await producer.start()
    try:
        t0 = time.perf_counter()
        futures = [await producer.send(topic, json.dumps(e).encode(), key=e["subject"].encode(),
                                       headers=kafka_headers()) for e in events]
        await asyncio.gather(*futures)
        return time.perf_counter() - t0
    finally:
        await producer.stop()


async def count_on_topic(bootstrap: str, topic: str, type_suffix: str, expected: int, timeout: float = 600) -> float:
    """Seconds until ``expected`` distinct events whose type ends with ``type_suffix`` are on ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: set[str] = set()
        t0 = time.perf_counter()
        while len(seen) < expected and time.perf_counter() - t0 < timeout:
            for records in (await consumer.getmany(timeout_ms=100, max_records=10000)).values():
                for r in records:
                    event = json.loads(r.value)
                    if event["type"].endswith(type_suffix):
                        seen.add(event["id"])
        return time.perf_counter() - t0
    finally:
        await consumer.stop()


async def main(args: argparse.Namespace) -> None:
    async with private_stack("referral", args.partitions, "bench") as (settings, home):
        bootstrap, dsn = settings.kafka_bootstrap_servers, settings.database_url
        everyone = ["municipality", "self_reliance_centre", "police"]
        municipalities = ["131016", "011002", "271004", "133035", "401005"]
        events = [consultation(n, consent=everyone, municipality=municipalities[n % 5],
                               at=T0 + timedelta(milliseconds=n)) for n in range(args.events)]
        baseline_seconds = await produce(bootstrap, "bench.baseline", events)

        env = {"DATABASE_URL": dsn, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "TSUNAGU_REFERRAL_PORT": str(settings.referral_port), "TSUNAGU_LOG_LEVEL": "warning",
               "TSUNAGU_REFERRAL_CLOCK": "event_time", "TSUNAGU_REFERRAL_SCAN_SECONDS": "0.2"}
        service = ServiceProcess("referral", env, settings.referral_port, home / "referral.log").start()
        try:
            referral_topic = settings.topic(topics.REFERRAL_EVENTS)
            t0 = time.perf_counter()
            await produce(bootstrap, settings.topic(topics.CONSULTATION_EVENTS), events)
            await count_on_topic(bootstrap, referral_topic, ".created.v1", args.events)
            open_seconds = time.perf_counter() - t0
            # a week later in event time: every standard deadline has passed
            later = consultation(10**9, referral_needed=False, at=T0 + timedelta(days=1, hours=1))
            t0 = time.perf_counter()
            await produce(bootstrap, settings.topic(topics.CONSULTATION_EVENTS), [later])
            await count_on_topic(bootstrap, referral_topic, ".escalated.v1", args.events)
            escalate_seconds = time.perf_counter() - t0
        finally:
            service.stop()
        baseline = args.events / baseline_seconds
        rows = [
            ("raw aiokafka produce (baseline)", baseline),
            ("consultations → referral.created on the topic", args.events / open_seconds),
            ("missed deadlines → referral.escalated on the topic", args.events / escalate_seconds),
        ]
        print(f"\nreferral benchmark — {args.events} referrals, {args.partitions} partitions; "
              f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"{'path':58} {'events/s':>10} {'× baseline':>11}")
        for name, rate in rows:
            print(f"{name:58} {rate:10,.0f} {rate / baseline:11.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=6)
    asyncio.run(main(parser.parse_args()))
