"""Support for the connectors' end-to-end tests: reading every topic at once (to look for raw phone
numbers), and, for Asterisk, a generated queue_log week and the per-queue figures counted straight
from the raw lines by the documented queue_log semantics — independently of the connector's mapping."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests.support import read_topic, values
from tsunagu import topics
from tsunagu.settings import Settings

# --- every topic -----------------------------------------------------------------------------------


async def all_topic_values(settings: Settings, bootstrap: str) -> dict[str, list[dict[str, Any]]]:
    """Every record on every tsunagu topic, decoded, by short topic name."""
    out = {}
    for short in topics.ALL:
        records = await read_topic(bootstrap, settings.topic(short), expect=0, timeout=2.0)
        out[short] = values(records)
    return out


async def raw_text_of_all_topics(settings: Settings, bootstrap: str) -> str:
    """Keys, values and headers of every record on every topic, as one text to search for numbers."""
    parts = []
    for short in topics.ALL:
        for r in await read_topic(bootstrap, settings.topic(short), expect=0, timeout=2.0):
            parts.append(repr((r.key, r.value, r.headers)))
    return "\n".join(parts)


# --- Asterisk: a generated week --------------------------------------------------------------------

NO_CALL_IDS = {"NONE", "MANAGER", "REALTIME", ""}
LEFT_UNANSWERED = {"ABANDON", "EXITWITHTIMEOUT", "EXITWITHKEY", "EXITEMPTY", "JOINEMPTY", "JOINUNAVAIL"}


@dataclass(frozen=True)
class WeekShape:
    """What the generated week holds: queues (with the overflow queue a timed-out caller may enter next),
    members, and how callers fare."""

    queues: tuple[str, ...] = ("q-lonely", "q-dying", "q-money", "q-young")
    overflow: str = "q-overflow"
    members: tuple[str, ...] = tuple(f"PJSIP/{n}" for n in range(201, 209))
    answered: tuple[tuple[str, float], ...] = (  # each queue's share answered, far apart like the trial's fields
        ("q-lonely", 0.15), ("q-dying", 0.85), ("q-money", 0.3), ("q-young", 0.6), ("q-overflow", 0.5))
    # of the callers not answered:
    abandoned: float = 0.55  # hang up in the queue (a fifth of them while a desk rings)
    timed_out: float = 0.25  # the queue's timeout (a third of them enter the overflow queue next)
    key_exit: float = 0.12  # press a key to leave (e.g. for a call-back)
    # the rest: EXITEMPTY (no reachable member)


def week_of_calls(start: datetime, calls: int, *, seed: int = 9, shape: WeekShape = WeekShape()) -> list[str]:
    """A week of queue_log lines as Asterisk writes them (time order, pipe-separated), with the non-call
    lines around them; caller numbers are Japanese mobiles or withheld."""
    rnd = random.Random(seed)
    t0 = int(start.timestamp())
    span = 7 * 86400 - 4 * 3600  # the last calls end inside the week
    lines: list[tuple[int, int, str]] = [(t0, 0, f"{t0}|NONE|NONE|NONE|QUEUESTART|")]
    seq = 1

    def put(t: int, callid: str, queue: str, agent: str, event: str, *data: object) -> None:
        nonlocal seq
        lines.append((t, seq, "|".join([str(t), callid, queue, agent, event, *map(str, data)])))
        seq += 1

    for q in (*shape.queues, shape.overflow):
        for m in shape.members:
            put(t0, "MANAGER", q, m, "ADDMEMBER", "")
    for n in range(calls):
        t = t0 + 60 + span * n // calls + rnd.randrange(30)
        callid = f"{t - 2}.{n}"
        queue = rnd.choice(shape.queues)
        caller = "anonymous" if rnd.random() < 0.1 else f"090{rnd.randrange(10**8):08d}"
        _one_visit(put, rnd, shape, t, callid, queue, caller, may_overflow=True)
        if rnd.random() < 0.01:
            m = rnd.choice(shape.members)
            put(t + 1, "NONE", queue, m, "PAUSE", "break")
            put(t + 900, "NONE", queue, m, "UNPAUSE", "")
    return [text for _t, _s, text in sorted(lines)]


def _one_visit(put: Any, rnd: random.Random, shape: WeekShape, t: int, callid: str, queue: str, caller: str,
               *, may_overflow: bool) -> None:
    put(t, callid, queue, "NONE", "ENTERQUEUE", "", caller, 1 + rnd.randrange(4))
    wait = 1 + int(rnd.expovariate(1 / 40))
    member = rnd.choice(shape.members)
    if wait > 15:
        put(t + 15, callid, queue, member, "RINGNOANSWER", 15000)
    answered = dict(shape.answered)[queue]
    fate = rnd.random()
    unanswered = (fate - answered) / (1 - answered)  # where among the unanswered, when not answered
    if fate < answered:
        put(t + wait, callid, queue, member, "CONNECT", wait, f"{callid}-b", min(wait, 15))
        talk = 30 + int(rnd.expovariate(1 / 600))
        end = rnd.choice(["COMPLETECALLER", "COMPLETEAGENT", "COMPLETECALLER", "TRANSFER", "BLINDTRANSFER",
                          "ATTENDEDTRANSFER"])
        data: tuple[object, ...] = (
            (wait, talk, 1) if end.startswith("COMPLETE")
            else ("BRIDGE", f"{callid}-x", wait, talk, 1) if end == "ATTENDEDTRANSFER"
            else ("2000", "from-internal", wait, talk, 1))
        put(t + wait + talk, callid, queue, member, end, *data)
    elif unanswered < shape.abandoned:
        if rnd.random() < 0.2:
            put(t + wait, callid, queue, member, "RINGCANCELED", 3000)
        put(t + wait, callid, queue, "NONE", "ABANDON", 1, 1, wait)
    elif unanswered < shape.abandoned + shape.timed_out:
        put(t + 120, callid, queue, "NONE", "EXITWITHTIMEOUT", 1, 1, 120)
        if may_overflow and rnd.random() < 1 / 3:
            _one_visit(put, rnd, shape, t + 121, callid, shape.overflow, caller, may_overflow=False)
    elif unanswered < shape.abandoned + shape.timed_out + shape.key_exit:
        put(t + wait, callid, queue, "NONE", "EXITWITHKEY", rnd.choice("19*#"), 1, 1, wait)
    else:
        put(t + 2, callid, queue, "NONE", "EXITEMPTY", 1, 1, 2)


# --- Asterisk: the independent count --------------------------------------------------------------


def count_per_queue(lines: list[str]) -> dict[str, dict[str, Any]]:
    """Attempts, connected, abandoned and answer rate per queue, straight from the raw lines: a call is a
    callid that entered a queue, counted in the queue it entered last; connected when any CONNECT was
    logged for it; abandoned when it left a queue unanswered (ABANDON, EXITWITHTIMEOUT, EXITWITHKEY,
    EXITEMPTY, or turned away by JOINEMPTY/JOINUNAVAIL) and was never connected."""
    queue_of: dict[str, str] = {}
    connected: set[str] = set()
    left: set[str] = set()
    for line in lines:
        f = line.split("|")
        if len(f) < 5 or f[1] in NO_CALL_IDS:
            continue
        callid, queue, event = f[1], f[2], f[4]
        if event in ("ENTERQUEUE", "JOINEMPTY", "JOINUNAVAIL"):
            queue_of[callid] = queue
        if event == "CONNECT":
            connected.add(callid)
        if event in LEFT_UNANSWERED:
            left.add(callid)
    attempts = Counter(queue_of.values())
    answered = Counter(queue_of[c] for c in connected if c in queue_of)
    abandoned = Counter(queue_of[c] for c in left - connected if c in queue_of)
    return {q: {"attempts": attempts[q], "connected": answered[q], "abandoned": abandoned[q],
                "answer_rate": round(answered[q] / attempts[q], 6)} for q in attempts}


def totals(per_queue: dict[str, dict[str, Any]]) -> dict[str, Any]:
    attempts = sum(v["attempts"] for v in per_queue.values())
    connected = sum(v["connected"] for v in per_queue.values())
    return {"attempts": attempts, "connected": connected,
            "abandoned": sum(v["abandoned"] for v in per_queue.values()),
            "answer_rate": round(connected / attempts, 6) if attempts else None}


def callers_of(lines: list[str]) -> set[str]:
    """The raw caller numbers in ENTERQUEUE lines (to prove none reaches a topic)."""
    return {f[6] for f in (line.split("|") for line in lines) if len(f) > 6 and f[4] == "ENTERQUEUE"
            and f[6][:1].isdigit()}
