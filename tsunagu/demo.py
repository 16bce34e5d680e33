"""`tsunagu demo`: the stack up, an hour of trial-1 contacts through intake, and what arrived.

Until the trial replay exists, this is the main job: it shows the only door working — partner
events validated, callers pseudonymised, duplicates and bad events answered clearly — and the
canonical events arriving on their topic, keyed by contact.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
from rich.console import Console
from rich.table import Table

from schemas.codes import FieldCode
from services.metrics.app import periods_of
from services.metrics.cli import period_report, print_report
from services.metrics.domain import resolve_period
from tsunagu import auth, stack, topics
from tsunagu.db import create_pool
from tsunagu.settings import Settings

JST = timezone(timedelta(hours=9))
TRIAL1_START = datetime(2022, 7, 7, 10, 0, tzinfo=JST)
PLATFORM = "tel-platform"  # the telephony platform partner: IVR and call events
DESK_ORG = "npo-kodoku"  # a partner desk: its case system records consultations
# Field mix of trial 1's first week, most chosen first (trial-facts.md); the rest spread thin.
FIELD_WEIGHTS = {"loneliness": 36, "suicidal": 22, "hardship": 16, "women_dv": 7, "under18": 6,
                 "single_mother": 5, "gender": 4, "foreign_language": 4}
MENU_KEY = {"hardship": 1, "foreign_language": 2, "suicidal": 3, "women_dv": 4, "gender": 5,
            "single_mother": 6, "under18": 7, "loneliness": 9}
ANSWER_RATE = {"loneliness": 0.105, "suicidal": 0.869, "hardship": 0.126}  # published; others ~0.3


def _event(org: str, system: str, type_: str, seq: str, subject: str, at: datetime, data: dict) -> dict:
    return {"specversion": "1.0", "id": f"{subject}-{seq}", "source": f"/partners/{org}/{system}",
            "type": f"jp.tsunagu.{type_}.v1", "time": at.isoformat(), "subject": subject, "data": data}


def demo_events(run: str, contacts: int = 40, seed: int = 9999) -> tuple[list[dict], list[dict]]:
    """(telephony platform's events, desk's consultation records) for the first hour of trial 1.

    The same contacts every time (``seed``); ``run`` keeps each run's ids apart, because the
    embedded broker forgets its topics on `tsunagu down` while intake remembers every id.
    """
    rng = random.Random(seed)
    calls: list[dict] = []
    records: list[dict] = []
    fields, weights = zip(*FIELD_WEIGHTS.items(), strict=True)
    prefectures = ["13", "27", "14", "23", "01", "40", "11", "28"]
    for n in range(contacts):
        cid = f"t1-{run}-{n:05d}"
        at = TRIAL1_START + timedelta(seconds=rng.uniform(0, 3600))
        caller = f"0{rng.choice([70, 80, 90])}-{rng.randrange(10000):04d}-{rng.randrange(10000):04d}"
        calls.append(_event(PLATFORM, "telephony", "contact.received", "received", cid, at,
                            {"contact_id": cid, "channel": "phone", "caller_id": caller,
                             "region": rng.choice(prefectures)}))
        if rng.random() < 0.08:  # hung up in the voice menu before choosing
            calls.append(_event(PLATFORM, "telephony", "contact.abandoned", "abandoned", cid,
                                at + timedelta(seconds=15), {"contact_id": cid, "stage": "ivr", "wait_seconds": 15}))
            continue
        field = rng.choices(fields, weights)[0]
        chosen = at + timedelta(seconds=rng.uniform(10, 40))
        calls.append(_event(PLATFORM, "telephony", "contact.field_selected", "field", cid, chosen,
                            {"contact_id": cid, "field": field, "menu_position": MENU_KEY[field]}))
        wait = rng.uniform(5, 120)
        if rng.random() < ANSWER_RATE.get(field, 0.3):
            answered = chosen + timedelta(seconds=wait)
            talk = rng.uniform(300, 2400)
            calls.append(_event(PLATFORM, "telephony", "contact.answered", "answered", cid, answered,
                                {"contact_id": cid, "desk_id": f"desk-{field}", "organisation_id": DESK_ORG,
                                 "wait_seconds": round(wait, 1)}))
            calls.append(_event(PLATFORM, "telephony", "contact.ended", "ended", cid,
                                answered + timedelta(seconds=talk),
                                {"contact_id": cid, "talk_seconds": round(talk, 1)}))
            records.append(_event(DESK_ORG, "casebook", "consultation.recorded", "recorded", cid,
                                  answered + timedelta(seconds=talk + 120),
                                  {"contact_id": cid, "organisation_id": DESK_ORG, "field": field,
                                   "categories": rng.sample(["mental_health", "no_place_to_talk", "living_money",
                                                             "home_family", "loneliness"], 2),
                                   "age_band": rng.choice(["age40s", "age50s", "age60s", "age70plus", "age30s"]),
                                   "risk": "high" if field == "suicidal" else rng.choice(["none", "low", "medium"]),
                                   "referral_needed": False}))
        else:
            calls.append(_event(PLATFORM, "telephony", "contact.abandoned", "abandoned", cid,
                                chosen + timedelta(seconds=wait),
                                {"contact_id": cid, "stage": "queue", "wait_seconds": round(wait, 1)}))
    calls.sort(key=lambda e: e["time"])
    return calls, records


async def _issue_keys(database_url: str) -> dict[str, str]:
    pool = await create_pool(database_url, attempts=5)
    try:
        await auth.migrate_schema(pool)
        return {org: (await auth.issue_credential(pool, org, "partner", label="demo"))[1]
                for org in (PLATFORM, DESK_ORG)}
    finally:
        await pool.close()


def _bad_examples(calls: list[dict]) -> list[dict]:
    no_offset = dict(calls[0], id="demo-bad-1", time="2022-07-07T10:00:00")
    wrong_digit = json.loads(json.dumps(calls[0]))
    wrong_digit.update(id="demo-bad-2")
    wrong_digit["data"]["region"] = "131017"
    unknown_field = dict(calls[1], id="demo-bad-3", data={**calls[1]["data"], "field": "astrology"})
    return [no_offset, wrong_digit, unknown_field, calls[0]]  # the last is a re-send: duplicate


async def _send(url: str, key: str, events: list[dict]) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post("/v1/events", content=json.dumps(events),
                                      headers={"Authorization": f"Bearer {key}",
                                               "Content-Type": "application/cloudevents-batch+json"})
        response.raise_for_status()
        return response.json()


def run_demo(settings: Settings) -> None:
    # Wide enough for the tables when the output is piped (rich assumes 80 columns then).
    console = Console(width=None if sys.stdout.isatty() else 110)
    console.rule("[bold]tsunagu つなぐ — demo")
    stack.up(settings, echo=lambda line: console.print(f"  {line}"))
    runtime = stack.resolve_runtime(settings)
    url = stack.service_url(settings, "intake")
    keys = asyncio.run(_issue_keys(runtime.database_url))
    period = resolve_period(periods_of(settings), "trial1", None, None)
    before = asyncio.run(period_report(runtime.database_url, period))["answer_rate"]["totals"]

    calls, records = demo_events(run=secrets.token_hex(2))
    console.print(f"\nSending the first hour of trial 1 (2022-07-07 10:00 JST): {len(calls)} telephony "
                  f"events and {len(records)} consultation records, as partners would, to {url}/v1/events")
    answer = asyncio.run(_send(url, keys[PLATFORM], calls))
    answer2 = asyncio.run(_send(url, keys[DESK_ORG], records))
    console.print(f"  accepted {answer['accepted'] + answer2['accepted']}, duplicates "
                  f"{answer['duplicate'] + answer2['duplicate']}, rejected {answer['rejected'] + answer2['rejected']}")

    console.print("\nAnd some that are wrong, or sent twice — each answered on its own:")
    bad = asyncio.run(_send(url, keys[PLATFORM], _bad_examples(calls)))
    table = Table("event", "status", "why")
    for r in bad["results"]:
        why = "; ".join(f"{p['path'] or '(event)'}: {p['message']}" for p in r["problems"])
        table.add_row(r["id"], r["status"], why)
    console.print(table)

    expected = len(calls) + len(records)
    sent = {(e["source"], e["id"]) for e in calls + records}
    arrived = asyncio.run(_read_canonical(runtime.bootstrap, settings, sent))
    console.print(f"\nOn the canonical topics, keyed by contact ({len(arrived)} of {expected} arrived):")
    table = Table("time (JST)", "event", "contact", "field 相談分野", "caller key (pseudonym)")
    for e in sorted(arrived, key=lambda e: e["time"])[:12]:
        data = e["data"]
        field = data.get("field")
        table.add_row(datetime.fromisoformat(e["time"]).astimezone(JST).strftime("%m-%d %H:%M:%S"),
                      e["type"].removeprefix("jp.tsunagu.").removesuffix(".v1"), e["subject"],
                      f"{FieldCode(field).ja} ({field})" if field else "",
                      (data.get("caller_key") or "")[:16] + ("…" if data.get("caller_key") else ""))
    console.print(table)
    kinds = Counter(e["type"].removeprefix("jp.tsunagu.").removesuffix(".v1") for e in arrived)
    console.print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) + ", … (first 12 shown)")
    raw_numbers = [e["data"]["caller_id"] for e in calls if e["type"].endswith("contact.received.v1")]
    leaked = sum(1 for e in arrived for raw in raw_numbers if raw in json.dumps(e, ensure_ascii=False))
    console.print(f"  raw caller numbers found in published events: {leaked}")
    received = sum(e["type"].endswith("contact.received.v1") for e in calls)
    answered = sum(e["type"].endswith("contact.answered.v1") for e in calls)
    report = asyncio.run(_report_when_counted(runtime.database_url, period, before, received, answered))
    console.print("\nThe secretariat's report of everything this stack has seen in trial 1's week, as metrics "
                  "counted it by event time (`tsunagu report --period trial1`):")
    print_report(report)
    console.print(f"\nThe stack is still running. Try:\n  curl {url}/health/ready\n  open {url}/docs\n"
                  "  tsunagu status · tsunagu logs intake · tsunagu down")


async def _report_when_counted(dsn: str, period, before: dict, received: int, answered: int) -> dict:
    """The period report once metrics has counted this run's calls (it consumes asynchronously)."""
    for _ in range(120):
        report = await period_report(dsn, period)
        totals = report["answer_rate"]["totals"]
        if (totals.get("attempts", 0) >= before.get("attempts", 0) + received
                and totals.get("connected", 0) >= before.get("connected", 0) + answered):
            return report
        await asyncio.sleep(0.25)
    return report


async def _read_canonical(bootstrap: str, settings: Settings, sent: set[tuple[str, str]]) -> list[dict]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    names = [settings.topic(topics.CONTACT_EVENTS), settings.topic(topics.CONSULTATION_EVENTS)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: dict[tuple[str, str], dict] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(seen) < len(sent) and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    event = json.loads(r.value)
                    if (event["source"], event["id"]) in sent:
                        seen[(event["source"], event["id"])] = event
        return list(seen.values())
    finally:
        await consumer.stop()
