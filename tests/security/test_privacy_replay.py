"""Privacy scan after a replay: the raw caller numbers the simulator sent to intake appear nowhere the
stack keeps or emits — not in any table of any schema, any record (key, value or header) on any topic,
any service's log, or any exported span or metric.

The scan is spelling-proof: every maximal run of digits (hyphens, spaces and ``+`` dropped) that is a
number's 10 digits after its trunk prefix 0, alone or after ``0`` or the country code ``81``, is found:
``090-1234-5678``, ``09012345678``, ``+81 90 1234 5678``, ``819012345678``. A longer run of digits (a
span id, a timestamp) is not a spelling of a phone number, whatever 10 digits it contains.

CI size replays ``scenarios/smoke.yaml``; ``TSUNAGU_VERIFY_SIZE=full`` replays trial 1's whole week.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from tests.security.conftest import FULL
from tests.support import ServiceProcess, service_env
from tsunagu import topics
from tsunagu.kafka import assign_all_partitions
from tsunagu.settings import Settings
from tsunagu_tools.simulate.scenario import load_scenario
from tsunagu_tools.simulate.stack import replay_on_stack
from tsunagu_tools.simulate.truth import GroundTruth

SERVICES = ("intake", "routing", "referral", "metrics")
SCENARIO = "scenarios/trial1.yaml" if FULL else "scenarios/smoke.yaml"
DIGIT_RUN = re.compile(r"\+?[0-9](?:[0-9]|[- ](?=[0-9]))*")


def core(number: str) -> str:
    """The 10 digits after the trunk prefix: ``090-1234-5678`` -> ``9012345678``."""
    digits = re.sub(r"\D", "", number)
    return digits[1:] if digits.startswith("0") else digits.removeprefix("81")


def numbers_in(text: str, cores: set[str]) -> list[str]:
    """Every spelling in ``text`` of a number whose core is in ``cores``."""
    found = []
    for match in DIGIT_RUN.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if digits[-10:] in cores and digits[:-10] in ("", "0", "81"):
            found.append(match.group())
    return found


def test_the_scan_finds_every_spelling_of_a_number_and_nothing_else():
    cores = {core("090-1234-5678")}
    text = ("a 090-1234-5678 b 09012345678 c +819012345678 d 81 90 1234 5678 e +81-90-1234-5678 "
            "f 090-1234-5679 g 2022-07-07T10:00:00+09:00 h 1657155600 i 1795797609012345678 j 9012345678")
    assert numbers_in(text, cores) == ["090-1234-5678", "09012345678", "+819012345678", "81 90 1234 5678",
                                       "+81-90-1234-5678", "9012345678"]


@dataclass
class Replayed:
    settings: Settings
    truth: GroundTruth
    files: list[Path]  # service logs and exported telemetry


@pytest.fixture
async def replayed(make_settings, create_all_topics, tmp_path) -> AsyncIterator[Replayed]:
    settings = make_settings(partitions=2)
    await create_all_topics(settings)
    telemetry = tmp_path / "telemetry"
    env = {**service_env(settings), "TSUNAGU_REFERRAL_CLOCK": "event_time", "TSUNAGU_ROUTING_DESKS_FILES": "",
           "TSUNAGU_REFERRAL_SCAN_SECONDS": "0.5", "TSUNAGU_TELEMETRY_DIR": str(telemetry)}
    started: list[ServiceProcess] = []
    try:
        for name in SERVICES:
            started.append(ServiceProcess(name, env, settings.service_port(name), tmp_path / f"{name}.log").start())
        truth = await replay_on_stack(load_scenario(SCENARIO), settings, settings.kafka_bootstrap_servers or "",
                                      settings.database_url or "")
    finally:
        for process in reversed(started):
            process.stop()  # flushes the exporters
    files = [p.log_path for p in started] + sorted(telemetry.iterdir())
    yield Replayed(settings, truth, files)


async def table_texts(dsn: str) -> AsyncIterator[tuple[str, list[str]]]:
    """Every row of every table outside PostgreSQL's own schemas, as text."""
    connection = await asyncpg.connect(dsn)
    try:
        tables = await connection.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2")
        for t in tables:
            name = f'"{t["table_schema"]}"."{t["table_name"]}"'
            rows = await connection.fetch(f"SELECT x::text AS row FROM {name} x")
            yield name, [r["row"] for r in rows]
    finally:
        await connection.close()


async def topic_texts(bootstrap: str, names: Iterable[str]) -> dict[str, list[str]]:
    """Every record on each topic from the beginning: key, value and headers, as text."""
    # earliest: should the broker answer a fetch from the start "out of range", start again from the start
    # (the default, latest, would skip to the end and read nothing)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                                max_poll_records=5000, auto_offset_reset="earliest")
    await consumer.start()
    try:
        names = list(names)
        tps = await assign_all_partitions(consumer, names, tries=600)  # a loaded broker's metadata may lag
        assert {tp.topic for tp in tps} == set(names), "the broker gave no partitions for some topics"
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[str, list[str]] = {tp.topic: [] for tp in tps}
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for r in records:
                    headers = " ".join(f"{k}={v.decode(errors='replace')}" for k, v in r.headers or ())
                    key = r.key.decode(errors="replace") if r.key else ""
                    out[tp.topic].append(f"{key} {r.value.decode(errors='replace')} {headers}")
        return out
    finally:
        await consumer.stop()


async def test_no_raw_caller_number_is_kept_or_emitted_anywhere_after_a_replay(replayed: Replayed):
    truth, settings = replayed.truth, replayed.settings
    cores = {core(c) for c in truth.caller_ids}
    assert cores and len(cores) == len(truth.caller_ids)
    leaks: dict[str, list[str]] = {}
    seen_rows = 0

    async for table, rows in table_texts(settings.database_url or ""):
        seen_rows += len(rows)
        if found := numbers_in("\n".join(rows), cores):
            leaks[f"table {table}"] = found[:3]
    records = await topic_texts(settings.kafka_bootstrap_servers or "", (settings.topic(n) for n in topics.ALL))
    for topic, texts in records.items():
        if found := numbers_in("\n".join(texts), cores):
            leaks[f"topic {topic}"] = found[:3]
    for path in replayed.files:
        if found := numbers_in(path.read_text(errors="replace"), cores):
            leaks[f"file {path.name}"] = found[:3]

    assert leaks == {}
    # The scan read what the replay left: rows, records on every contact topic, logs, spans and metrics.
    assert seen_rows > len(cores)
    assert sum(len(t) for t in records.values()) > len(cores)
    assert len(records[settings.topic(topics.CONTACT_EVENTS)]) > 0
    assert {p.name for p in replayed.files} >= {f"{s}-spans.jsonl" for s in SERVICES}
    assert all(truth.run in text for text in records[settings.topic(topics.CONTACT_EVENTS)][:10])
