"""Support for metrics' tests and bench: a synthetic, trial-like log of canonical events (as intake,
routing and referral publish them), a publisher onto the canonical topics, the metrics service as its
own process, polling its HTTP answers, and the figures counted straight from the facts that the
rollups are checked against."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from schemas import event_type, validate_event
from schemas.kafka import encode_value, kafka_headers, kafka_key
from services.metrics.domain.counting import DIMENSIONS
from services.metrics.domain.periods import Period
from services.metrics.store.callers import derive_links
from services.metrics.store.sql import (
    CONTACT_DIMENSIONS,
    CONTACTS_VIEW,
    DAY,
    HOUR,
    ROLLUP_MEASURES,
    SCHEMA,
    S,
    grouped_sql,
    split_totals,
)
from tests.support import JST, ServiceProcess, service_env
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.settings import Settings

TRIAL1 = datetime(2022, 7, 7, 10, 0, tzinfo=JST)
FIELDS = ("loneliness", "suicidal", "hardship", "women_dv", "under18", "gender", "single_mother", "foreign_language")
FIELD_WEIGHTS = (40, 20, 15, 8, 6, 4, 4, 3)
ANSWER_PROBABILITY = {"loneliness": 0.105, "suicidal": 0.869, "hardship": 0.126}
ORGANISATION = {f: ("npo-a" if i % 2 == 0 else "npo-b") for i, f in enumerate(FIELDS)}
SOURCES = {
    "partner": "/partners/tel-platform/telephony",
    "routing": "/tsunagu/routing",
    "case": "/partners/{org}/cases",
    "referral": "/tsunagu/referral",
}


def event(type_: str, event_id: str, at: datetime, data: dict[str, Any], source: str) -> dict[str, Any]:
    etype = event_type(type_)
    return {
        "specversion": "1.0", "id": event_id, "source": source, "type": etype.type,
        "time": at.isoformat(), "subject": data[etype.key_field], "data": data,
    }


def caller_key(n: int, channel: str = "phone") -> str:
    """Caller ``n``'s key on a channel: one person's phone and chat accounts have different keys, as intake
    hashes the E.164 number for phones and ``<channel>:<id>`` otherwise."""
    return hashlib.sha256((f"caller-{n}" if channel == "phone" else f"{channel}:caller-{n}").encode()).hexdigest()


def synthetic_log(contacts: int, *, seed: int = 7, start: datetime = TRIAL1, span: timedelta = timedelta(days=7),
                  callers: int | None = None) -> list[dict[str, Any]]:
    """A week-like log: phone (and some chat) contacts, IVR choices and hang-ups, routing decisions,
    answers with waits and talks, abandonments, consultations and referrals with their lifecycle."""
    rnd = random.Random(seed)
    callers = callers or max(1, contacts * 2 // 3)
    out: list[dict[str, Any]] = []
    tel = SOURCES["partner"]
    for i in range(contacts):
        cid = f"c{seed}-{i}"
        at = start + timedelta(seconds=span.total_seconds() * i / contacts + rnd.random())
        channel = "phone" if rnd.random() < 0.95 else "chat"
        received: dict[str, Any] = {"contact_id": cid, "channel": channel,
                                    "caller_key": caller_key(rnd.randrange(callers), channel)}
        prefecture = rnd.choice(["13", "27", "01", None])
        if prefecture:
            received["prefecture"] = prefecture
        out.append(event("contact.received", f"{cid}-r", at, received, tel))
        if rnd.random() < 0.08:  # hangs up in the voice menu before choosing
            out.append(event("contact.abandoned", f"{cid}-a", at + timedelta(seconds=12),
                             {"contact_id": cid, "stage": "ivr", "wait_seconds": 12.0}, tel))
            continue
        field = rnd.choices(FIELDS, FIELD_WEIGHTS)[0]
        chose = at + timedelta(seconds=15 + rnd.random() * 10)
        out.append(event("contact.field_selected", f"{cid}-f", chose,
                         {"contact_id": cid, "field": field, "menu_position": FIELDS.index(field) + 1}, tel))
        org = ORGANISATION[field]
        desk = f"{org}-{field}-{rnd.randrange(2)}"
        answered = rnd.random() < ANSWER_PROBABILITY.get(field, 0.5)
        queued = rnd.random() < 0.6
        if queued:
            out.append(event("routing.queued", f"{cid}-q", chose + timedelta(seconds=1),
                             {"contact_id": cid, "field": field, "queue_position": 1 + rnd.randrange(5),
                              "priority": 0}, SOURCES["routing"]))
        if rnd.random() < 0.05:
            out.append(event("routing.overflowed", f"{cid}-o", chose + timedelta(seconds=30),
                             {"contact_id": cid, "field": field, "waited_seconds": 30.0, "tier": 2},
                             SOURCES["routing"]))
        if not answered:
            wait = round(rnd.expovariate(1 / 90), 1)
            out.append(event("contact.abandoned", f"{cid}-a", chose + timedelta(seconds=wait),
                             {"contact_id": cid, "stage": "queue", "wait_seconds": wait}, tel))
            continue
        wait = round(rnd.expovariate(1 / 40), 1) if queued else 0.0
        ans_at = chose + timedelta(seconds=wait + 1)
        out.append(event("routing.assigned", f"{cid}-s", ans_at - timedelta(seconds=1),
                         {"contact_id": cid, "desk_id": desk, "organisation_id": org, "field": field,
                          "reason": "line_freed" if queued else "free_line"}, SOURCES["routing"]))
        out.append(event("contact.answered", f"{cid}-w", ans_at,
                         {"contact_id": cid, "desk_id": desk, "organisation_id": org, "wait_seconds": wait}, tel))
        talk = round(rnd.expovariate(1 / 900), 1)
        out.append(event("contact.ended", f"{cid}-e", ans_at + timedelta(seconds=talk),
                         {"contact_id": cid, "talk_seconds": talk, "desk_id": desk}, tel))
        if rnd.random() < 0.5:
            risk = rnd.choices(["none", "low", "medium", "high", "imminent"], (30, 30, 25, 10, 5))[0]
            cats = rnd.sample(["mental_health", "no_place_to_talk", "living_money", "home_family",
                               "cohabitant_relations", "wanting_to_die"], k=1 + rnd.randrange(3))
            recorded_at = ans_at + timedelta(seconds=talk + 300)
            out.append(event("consultation.recorded", f"{cid}-c", recorded_at, {
                "contact_id": cid, "organisation_id": org, "desk_id": desk, "field": field, "categories": cats,
                "age_band": rnd.choices(["age19_29", "age30s", "age40s", "age50s", "age60s", "age70plus"],
                                        (5, 10, 25, 30, 20, 10))[0],
                "risk": risk, "referral_needed": risk in ("high", "imminent"),
            }, SOURCES["case"].format(org=org)))
            if risk in ("high", "imminent"):
                rid = f"r{seed}-{i}"
                urgency = "imminent" if risk == "imminent" else "urgent"
                out.append(event("referral.requested", f"{rid}-req", recorded_at + timedelta(seconds=60), {
                    "referral_id": rid, "contact_id": cid, "organisation_id": org, "municipality": "131016",
                    "urgency": urgency, "legal_basis": {"kind": "vital_interest"},
                }, SOURCES["case"].format(org=org)))
                receiver = "police" if urgency == "imminent" else "municipality"
                t = recorded_at + timedelta(seconds=60)
                for step, after in (("received", 120), ("accepted", 600), ("completed", 86400)):
                    if step == "completed" and rnd.random() < 0.3:
                        out.append(event("referral.escalated", f"{rid}-esc", t + timedelta(seconds=3600),
                                         {"referral_id": rid, "contact_id": cid, "reason": "deadline_missed"},
                                         SOURCES["referral"]))
                        break
                    t = t + timedelta(seconds=after)
                    out.append(event(f"referral.{step}", f"{rid}-{step}", t, {
                        "referral_id": rid, "contact_id": cid, "receiver_id": f"{receiver}-13101",
                        "receiver_type": receiver, "urgency": urgency,
                        **({"outcome": "got_help"} if step == "completed" else {}),
                    }, SOURCES["referral"]))
    return out


@dataclass(frozen=True)
class Record:
    """The fields of an aiokafka ConsumerRecord the metrics handler reads."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


def records_of(log: list[dict[str, Any]], topic: str = "tsunagu.contact.events") -> list[Record]:
    return [Record(topic, 0, i, kafka_key(e), encode_value(e)) for i, e in enumerate(log)]


def validated(events: list[dict[str, Any]]) -> list:
    return [validate_event(e) for e in events]


async def publish(settings: Settings, events: list[dict[str, Any]]) -> None:
    """Publish canonical events onto their topics, as intake, routing and referral would."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5,
                                max_batch_size=65536, acks="all")
    await producer.start()
    try:
        headers = kafka_headers()
        futures = [
            await producer.send(settings.topic(event_type(e["type"]).topic), encode_value(e), key=kafka_key(e),
                                headers=headers)
            for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@dataclass
class RunningMetrics:
    process: ServiceProcess
    settings: Settings
    keys: dict[str, str]  # "secretariat", "npo-a", "npo-b" -> API key

    @property
    def url(self) -> str:
        return self.process.url

    def headers(self, who: str = "secretariat", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}", **extra}

    async def get(self, path: str, who: str = "secretariat", **params: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            return await client.get(path, headers=self.headers(who), params=params)

    async def consumed(self) -> int:
        """New events applied so far, read from the service's inbox."""
        pool = await create_pool(self.settings.database_url, max_size=1)
        try:
            return await pool.fetchval("SELECT count(*) FROM metrics.inbox")
        finally:
            await pool.close()

    async def mode(self) -> str | None:
        """'catch_up' while metrics replays a backlog into facts only, 'live' once it derived its rollups."""
        pool = await create_pool(self.settings.database_url, max_size=1)
        try:
            return await pool.fetchval("SELECT mode FROM metrics.fold_mode")
        finally:
            await pool.close()

    async def wait_until_consumed(self, expected: int, timeout: float = 60.0) -> None:
        """Until ``expected`` events are in the inbox and metrics is live (its figures final)."""
        deadline = asyncio.get_running_loop().time() + timeout
        seen, mode = -1, None
        while asyncio.get_running_loop().time() < deadline:
            try:
                seen, mode = await self.consumed(), await self.mode()
            except Exception:  # the schema may not exist yet
                seen = -1
            if seen >= expected and mode == "live":
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"metrics consumed {seen} of {expected} events, mode {mode}:\n{self.process.log_tail()}")


async def issue_keys(settings: Settings) -> dict[str, str]:
    pool = await create_pool(settings.database_url)
    try:
        await auth.migrate_schema(pool)
        keys = {org: (await auth.issue_credential(pool, org, "partner", backfill=True))[1]
                for org in ("npo-a", "npo-b")}
        keys["secretariat"] = (await auth.issue_credential(pool, "secretariat", "secretariat"))[1]
        return keys
    finally:
        await pool.close()


def start_metrics(settings: Settings, keys: dict[str, str], log_path, **env: str) -> RunningMetrics:
    process = ServiceProcess("metrics", {**service_env(settings), **env}, settings.metrics_port, log_path)
    process.start()
    return RunningMetrics(process, settings, keys)


def by_key(groups: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {g["key"]: g for g in groups}


Predicate = Callable[[dict[str, Any]], bool]


# --- exact references: the questions the rollups answer, counted straight from the facts ------------
# The tests check store.reading's answers (rollups plus the edges of a period) against these.

ANSWER_RATE_AGGREGATES = """
    count(*) AS attempts,
    count(*) FILTER (WHERE connected) AS connected,
    count(*) FILTER (WHERE abandon_stage IS NOT NULL) AS abandoned,
    count(*) FILTER (WHERE abandon_stage = 'ivr') AS abandoned_ivr,
    count(*) FILTER (WHERE abandon_stage = 'queue') AS abandoned_queue,
    count(*) FILTER (WHERE abandon_stage = 'ringing') AS abandoned_ringing,
    count(*) FILTER (WHERE overflowed) AS overflowed,
    count(DISTINCT caller_key) AS callers,
    count(DISTINCT caller_key) FILTER (WHERE connected) AS callers_connected
"""


async def answer_rate_from_facts(
    conn: asyncpg.Connection | asyncpg.Pool, period: Period, group_by: str | None,
    channel: str | None = "phone", organisation: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """store.reading.answer_rate, distinct callers included, counted from the facts."""
    key = CONTACT_DIMENSIONS[group_by] if group_by else None
    sql = grouped_sql(CONTACTS_VIEW, ANSWER_RATE_AGGREGATES, key)
    return split_totals(await conn.fetch(sql, period.start, period.end, channel, organisation))


CONSULTATION_DIMENSIONS = {
    "field": "field", "organisation": "organisation_id", "desk": "desk_id", "age_band": "age_band",
    "risk": "risk", "hour": HOUR.format(t="recorded_at"), "day": DAY.format(t="recorded_at"),
}
CONSULTATIONS_VIEW = f"""
    SELECT * FROM "{SCHEMA}".consultations
     WHERE recorded_at >= $1 AND recorded_at < $2 AND ($3::text IS NULL OR organisation_id = $3)
"""


async def consultations_from_facts(
    conn: asyncpg.Connection | asyncpg.Pool, period: Period, group_by: str | None, organisation: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[tuple[str, int]]]]:
    """(totals, groups, breakdowns): breakdowns ranks categories, age bands and risk levels."""
    aggregates = (
        "count(*) AS consultations, count(*) FILTER (WHERE referral_needed) AS referral_needed, "
        "count(*) FILTER (WHERE risk IN ('high', 'imminent')) AS high_risk"
    )
    key = CONSULTATION_DIMENSIONS[group_by] if group_by else None
    args = (period.start, period.end, organisation)
    totals, groups = split_totals(await conn.fetch(grouped_sql(CONSULTATIONS_VIEW, aggregates, key), *args))
    breakdowns: dict[str, list[tuple[str, int]]] = {}
    for name, expr in (("categories", "unnest(categories)"), ("age_bands", "age_band"), ("risks", "risk")):
        rows = await conn.fetch(
            f"SELECT code, count(*) AS n FROM (SELECT {expr} AS code FROM ({CONSULTATIONS_VIEW}) v) c "
            "GROUP BY code ORDER BY n DESC, code", *args,
        )
        breakdowns[name] = [(r["code"], r["n"]) for r in rows]
    return totals, groups, breakdowns


ROLLUP_TABLES = {  # table -> its counts (a row whose counts are all zero says nothing)
    "contact_rollup": ROLLUP_MEASURES,
    "contact_hist": ["n"],
    "consultation_rollup": ["consultations", "referral_needed", "high_risk"],
    "caller_rollup": ["n"],
}


async def rollup_rows(conn: Any) -> dict[str, set[tuple[Any, ...]]]:
    """Every non-zero rollup row, per table — to compare the rollups of two runs (the pending links
    derived first, as every read of them does)."""
    await derive_links(conn)
    out = {}
    for table, counts in ROLLUP_TABLES.items():
        rows = await conn.fetch(f"SELECT * FROM {S}.{table} WHERE {' OR '.join(f'{c} <> 0' for c in counts)}")
        out[table] = {tuple(r) for r in rows}
    out["caller_links"] = {tuple(tuple(v) if isinstance(v, list) else v for v in r)
                           for r in await conn.fetch(f"SELECT * FROM {S}.caller_links")}
    return out


async def answers(metrics, who="secretariat"):
    """Every figure the API gives for trial 1, for comparing two runs."""
    out = {}
    for path, dims in (("answer-rate", DIMENSIONS), ("waits", DIMENSIONS),
                       ("consultations", ("field", "age_band", "risk", "organisation", "day")),
                       ("referrals", ("receiver_type", "state", "urgency", "organisation", "day"))):
        for dim in (None, *dims):
            params = {"period": "trial1", **({"group_by": dim} if dim else {})}
            response = await metrics.get(f"/v1/metrics/{path}", who, **params)
            assert response.status_code == 200, response.text
            out[(path, dim)] = response.json()
    return out
