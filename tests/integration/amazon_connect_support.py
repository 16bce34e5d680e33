"""Amazon Connect contact records (CTRs) for the connector's tests: one record built field by field as the
data model describes it, a generated day of a few thousand (transfers, re-deliveries, hang-ups in the flow
and in the queue, chats, outbound calls), the files Firehose and exports hold, and the per-queue figures
counted straight from the raw records — independently of the connector's mapping."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

INSTANCE = "arn:aws:connect:ap-northeast-1:111122223333:instance/a1b2c3d4-0000-4000-8000-000000000001"
QUEUES = {"Loneliness": ("loneliness", 1), "Suicidal": ("suicidal", 2), "Hardship": ("hardship", 3),
          "Women": ("women_dv", 4)}
QUEUE_WEIGHTS = (45, 25, 20, 10)
ANSWERED = {"Loneliness": 0.2, "Suicidal": 0.85, "Hardship": 0.15, "Women": 0.5}
AGENTS = {f"counsellor{n:02d}": f"npo-a-desk-{n}" for n in range(1, 7)}
START = datetime(2022, 7, 7, 1, 0, tzinfo=None)  # 10:00 JST, written as UTC (Z) like Connect


def ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def mapping_doc(org: str = "npo-a") -> dict[str, Any]:
    """The mapping config of the generated instance (every queue by its Name)."""
    return {"organisation": org, "system": "amazon-connect",
            "queues": {q: {"field": f, "key": k} for q, (f, k) in QUEUES.items()}, "agents": dict(AGENTS)}


def ctr(contact_id: str, *, method: str = "INBOUND", channel: str = "VOICE", start: datetime = START,
        end: datetime | None = None, phone: str | None = "+819012340001", queue: str | None = None,
        enqueued: datetime | None = None, agent: str | None = None, connected: datetime | None = None,
        initial: str | None = None, previous: str | None = None, next_id: str | None = None,
        updated: datetime | None = None, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    """One contact record with the data model's fields; times as Connect writes them (UTC, ``Z``)."""
    end = end or start + timedelta(minutes=5)
    dequeued = connected or end
    return {
        "AWSAccountId": "111122223333", "AWSContactTraceRecordFormatVersion": "2017-03-10",
        "Agent": None if agent is None else {
            "ARN": f"{INSTANCE}/agent/{agent}", "Username": agent,
            "ConnectedToAgentTimestamp": ts(connected) if connected else None,
            "AgentInteractionDuration": int((end - connected).total_seconds()) if connected else 0,
            "RoutingProfile": {"ARN": f"{INSTANCE}/routing-profile/rp-1", "Name": "Counsellors"}},
        "AgentConnectionAttempts": 1 if agent else 0, "Attributes": attributes or {},
        "Channel": channel, "ConnectedToSystemTimestamp": ts(start), "ContactId": contact_id,
        "CustomerEndpoint": {"Address": phone, "Type": "TELEPHONE_NUMBER"} if phone else None,
        "DisconnectReason": "CUSTOMER_DISCONNECT", "DisconnectTimestamp": ts(end),
        "InitialContactId": initial, "InitiationMethod": method, "InitiationTimestamp": ts(start),
        "InstanceARN": INSTANCE, "LastUpdateTimestamp": ts(updated or end + timedelta(seconds=30)),
        "NextContactId": next_id, "PreviousContactId": previous,
        "Queue": None if queue is None else {
            "ARN": f"{INSTANCE}/queue/q-{queue.lower()}", "Name": queue,
            "EnqueueTimestamp": ts(enqueued or start + timedelta(seconds=20)), "DequeueTimestamp": ts(dequeued),
            "Duration": int((dequeued - (enqueued or start + timedelta(seconds=20))).total_seconds())},
    }


def generated_ctrs(contacts: int, *, seed: int = 11) -> list[dict[str, Any]]:
    """A day's records for ``contacts`` people reaching the line, plus their transfer segments, outbound
    calls and re-deliveries (some updated later), shuffled as deliveries arrive in no promised order."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(contacts):
        cid = f"{seed:04d}aaaa-0000-4000-8000-{i:012d}"

        def segment(tag: str, i: int = i) -> str:  # another ContactId of the same person's chain
            return f"{seed:04d}{tag}-0000-4000-8000-{i:012d}"

        start = START + timedelta(seconds=36000 * i / contacts + rnd.random())
        chat = rnd.random() < 0.1
        phone = None if chat or rnd.random() < 0.05 else f"+8190{rnd.randrange(400):08d}"
        base = {"channel": "CHAT" if chat else "VOICE", "method": "API" if chat else "INBOUND", "phone": phone}
        if not chat and rnd.random() < 0.08:  # hangs up in the flow before any queue
            out.append(ctr(cid, start=start, end=start + timedelta(seconds=rnd.randint(3, 40)), **base))
            continue
        queue = rnd.choices(list(QUEUES), QUEUE_WEIGHTS)[0]
        enqueued = start + timedelta(seconds=rnd.randint(10, 40))
        wait = timedelta(seconds=rnd.randint(0, 300))
        if rnd.random() < ANSWERED[queue]:
            connected = enqueued + wait
            end = connected + timedelta(seconds=rnd.randint(60, 2400))
            agent = rnd.choice(list(AGENTS))
            if rnd.random() < 0.1:  # the counsellor hands the person on to a colleague
                seg = segment("tr01")
                out.append(ctr(cid, start=start, end=end, queue=queue, enqueued=enqueued, agent=agent,
                               connected=connected, next_id=seg, **base))
                later = end + timedelta(seconds=rnd.randint(5, 30))
                out.append(ctr(seg, method="TRANSFER", channel=base["channel"], phone=phone, start=end,
                               end=later + timedelta(seconds=600), queue=queue, enqueued=end,
                               agent=rnd.choice(list(AGENTS)), connected=later, initial=cid, previous=cid))
            else:
                out.append(ctr(cid, start=start, end=end, queue=queue, enqueued=enqueued, agent=agent,
                               connected=connected, **base))
        elif rnd.random() < 0.2:  # the flow moves the waiting person to the overflow queue
            seg = segment("qt01")
            moved = enqueued + wait
            out.append(ctr(cid, start=start, end=moved, queue=queue, enqueued=enqueued, next_id=seg, **base))
            if rnd.random() < 0.5:
                connected = moved + timedelta(seconds=rnd.randint(0, 120))
                out.append(ctr(seg, method="QUEUE_TRANSFER", channel=base["channel"], phone=phone, start=moved,
                               end=connected + timedelta(seconds=900), queue="Overflow", enqueued=moved,
                               agent=rnd.choice(list(AGENTS)), connected=connected, initial=cid, previous=cid))
            else:
                out.append(ctr(seg, method="QUEUE_TRANSFER", channel=base["channel"], phone=phone, start=moved,
                               end=moved + timedelta(seconds=rnd.randint(5, 200)), queue="Overflow",
                               enqueued=moved, initial=cid, previous=cid))
        else:  # hangs up in the queue
            out.append(ctr(cid, start=start, end=enqueued + wait, queue=queue, enqueued=enqueued, **base))
        if rnd.random() < 0.03:  # a counsellor calls out: not a person reaching the line
            out.append(ctr(segment("ob01"), method="OUTBOUND", phone=f"+8190{rnd.randrange(400):08d}",
                           start=start, agent=rnd.choice(list(AGENTS)), connected=start + timedelta(seconds=9)))
    redelivered = [dict(r) for r in rnd.sample(out, k=len(out) // 10)]
    for r in redelivered[::2]:  # half of them updated after the first delivery (attributes set later)
        r["Attributes"] = {"followUp": "done"}
        r["LastUpdateTimestamp"] = ts(datetime.strptime(r["LastUpdateTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
                                      + timedelta(hours=1))
    out += redelivered
    rnd.shuffle(out)
    return out


def write_files(records: list[dict[str, Any]], folder: Path) -> list[Path]:
    """The records over four files, each a way they are delivered: Firehose's objects back to back (plain
    and gzip), JSON lines, and a JSON array (an export)."""
    folder.mkdir(parents=True, exist_ok=True)
    quarter = -(-len(records) // 4)
    parts = [records[n * quarter:(n + 1) * quarter] for n in range(4)]
    paths = [folder / "firehose-0001", folder / "firehose-0002.gz", folder / "export.jsonl", folder / "export.json"]
    paths[0].write_text("".join(json.dumps(r) for r in parts[0]), encoding="utf-8")
    paths[1].write_bytes(gzip.compress("".join(json.dumps(r) for r in parts[1]).encode()))
    paths[2].write_text("".join(json.dumps(r) + "\n" for r in parts[2]), encoding="utf-8")
    paths[3].write_text(json.dumps(parts[3]), encoding="utf-8")
    return paths


def counts_from_raw(records: list[dict[str, Any]], field_of_queue: dict[str, str]) -> dict[Any, Counter[str]]:
    """Phone attempts, connected and abandoned per field, straight from the raw records: the latest copy
    of each ContactId; a call is each INBOUND voice record; it is connected when any record of its chain
    (InitialContactId) reached an agent; its field is its queue's (None when never queued)."""
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["ContactId"] not in latest or r["LastUpdateTimestamp"] >= latest[r["ContactId"]]["LastUpdateTimestamp"]:
            latest[r["ContactId"]] = r
    reached = {r["InitialContactId"] or r["ContactId"] for r in latest.values()
               if r["Agent"] and r["Agent"]["ConnectedToAgentTimestamp"]}
    counts: dict[Any, Counter[str]] = {}
    for r in latest.values():
        if r["Channel"] == "VOICE" and r["InitiationMethod"] == "INBOUND":
            key = field_of_queue[r["Queue"]["Name"]] if r["Queue"] else None
            answered = r["ContactId"] in reached
            for k in ("total", key):
                c = counts.setdefault(k, Counter())
                c["attempts"] += 1
                c["connected"] += answered
                c["abandoned"] += not answered
    return counts
