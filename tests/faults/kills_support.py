"""The moving parts of the service-kill test: a killer that SIGKILLs services during a replay and
restarts them, and the end-of-run checks that need more than metrics' report (lines never booked
twice, referrals terminal or escalated on time, topics read back without trusting end offsets).

**Events in flight** at a kill: the partner events intake had accepted (``intake.inbox``) that
metrics, the last service on every path, had not folded yet (``metrics.inbox`` rows from partner
sources), counted in PostgreSQL just before the SIGKILL. It is what the pipeline held between the
front door and the report at that moment: outbox rows not yet published, records not yet consumed
or mid-batch. It does not count routing's decisions or referral's events in flight (their own
sources), so it under-states, never over-states.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from services.routing import store as routing_store
from services.routing.domain.board import Board
from services.routing.domain.invariants import invariant_violations
from tests.support import ServiceProcess
from tsunagu.kafka import assign_all_partitions

SERVICES = ("intake", "routing", "referral", "metrics")
PAIR = "two at once"


# --- the killer ------------------------------------------------------------------------------------


@dataclass
class Kill:
    """One fault injected: which services, when (share of the replay's event time), what was in flight,
    and how long from the SIGKILL until every one of them answered ready again."""

    targets: tuple[str, ...]
    planned_at: float
    progress: float = 0.0
    in_flight: int = 0
    down_s: float = 0.0
    during_replay: bool = True

    @property
    def kind(self) -> str:
        return self.targets[0] if len(self.targets) == 1 else PAIR


def kill_plan(rng: random.Random, repeats: int) -> list[Kill]:
    """Each service alone and a random pair, ``repeats`` times each, in a random order, at random
    moments of the replay (shares of its event time, between 5 % and 80 %)."""
    targets: list[tuple[str, ...]] = []
    for _ in range(repeats):
        targets += [(s,) for s in SERVICES]
        targets.append(tuple(sorted(rng.sample(SERVICES, 2))))
    rng.shuffle(targets)
    moments = sorted(rng.uniform(0.05, 0.8) for _ in targets)
    return [Kill(t, m) for t, m in zip(targets, moments, strict=True)]


async def events_in_flight(pool: asyncpg.Pool) -> int:
    """Partner events intake accepted that metrics has not folded yet (see the module's docstring)."""
    accepted = await pool.fetchval("SELECT count(*) FROM intake.inbox")
    folded = await pool.fetchval("SELECT count(*) FROM metrics.inbox WHERE source LIKE '/partners/%'")
    return max(0, int(accepted) - int(folded))


@dataclass
class Killer:
    """SIGKILLs services at the planned moments of a running replay and restarts them at once.

    The replay reports its progress (``on_progress``, the share of its event time done); the killer
    waits for each kill's moment, then a random fraction of a second more (so a kill lands anywhere
    in a batch, not on the progress tick), kills its targets together and starts them again, each
    in a thread (``ServiceProcess.start`` blocks until ready). Kills left when the replay ends are
    made while the stack settles."""

    processes: dict[str, ServiceProcess]
    pool: asyncpg.Pool
    plan: list[Kill]
    rng: random.Random
    start_timeout: float = 240.0
    progress: float = 0.0
    done: list[Kill] = field(default_factory=list)

    def on_progress(self, share: float) -> None:
        self.progress = share

    async def run(self, replay: asyncio.Task[Any]) -> list[Kill]:
        for kill in self.plan:
            while self.progress < kill.planned_at and not replay.done():
                await asyncio.sleep(0.05)
            await asyncio.sleep(self.rng.uniform(0.0, 0.8))
            kill.during_replay = not replay.done()
            kill.progress = self.progress
            kill.in_flight = await events_in_flight(self.pool)
            started = time.monotonic()
            for name in kill.targets:
                self.processes[name].kill()
            await asyncio.gather(*(asyncio.to_thread(self.processes[name].start, self.start_timeout)
                                   for name in kill.targets))
            kill.down_s = time.monotonic() - started
            self.done.append(kill)
        return self.done


# --- reading topics back -----------------------------------------------------------------------------


async def read_events(bootstrap: str, topic: str, *, expect: int, wanted: Callable[[dict], bool] = lambda e: True,
                      timeout: float = 60.0, linger: float = 0.5) -> list[dict]:
    """Every distinct event (by id, first copy kept) on ``topic`` from the beginning, in each partition's
    order, once ``expect`` wanted ones arrived (or ``timeout``), and ``linger`` seconds more (copies
    and stragglers; with ``expect=0``, how long to look for anything at all).

    Counting distinct ids, not records, and not trusting end offsets (the embedded broker
    under-reports them): a republished copy after a kill is neither missed nor counted twice."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100, max_poll_records=5000)
    await consumer.start()
    try:
        tps = await assign_all_partitions(consumer, [topic])
        await consumer.seek_to_beginning(*tps)
        seen: dict[str, dict] = {}
        got = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_until = None
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    event = json.loads(r.value)
                    if event["id"] not in seen:
                        seen[event["id"]] = event
                        got += wanted(event)
            now = loop.time()
            if got >= expect or now > deadline:
                quiet_until = quiet_until or now + linger
                if now > quiet_until:
                    return list(seen.values())
    finally:
        await consumer.stop()


# --- lines never booked twice ------------------------------------------------------------------------


def _at(event: dict) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def line_violations(decisions: list[dict], contact_events: list[dict], lines: dict[str, int]) -> list[str]:
    """Routing's published decisions against the desks' lines, over the whole replay.

    - A contact never holds two assignments: after ``routing.assigned`` the next decision that moves
      it is a ``routing.withdrawn`` of that desk (decisions are keyed by contact: one partition, in order).
    - No desk ever holds more contacts than it has lines: an assignment holds a line from its time
      (routing's clock) until its withdrawal, or the contact's ``contact.ended`` / ``abandoned``.
      Routing applies an event at ``max(event time, its clock)``, so the event time never comes
      after the real release: the check can miss an overlap, never invent one.
    """
    problems: list[str] = []
    released: dict[str, float] = {}
    for e in contact_events:
        if e["type"] in ("jp.tsunagu.contact.ended.v1", "jp.tsunagu.contact.abandoned.v1"):
            released[e["subject"]] = min(released.get(e["subject"], float("inf")), _at(e))
    live: dict[str, tuple[str, float]] = {}
    holds: list[tuple[str, float, float, str]] = []  # desk, from, until, contact
    for d in decisions:
        kind, cid = d["type"], d["subject"]
        desk = d.get("data", {}).get("desk_id")
        if kind == "jp.tsunagu.routing.assigned.v1":
            if cid in live:
                problems.append(f"{cid} assigned to {desk} while still assigned to {live[cid][0]}")
            live[cid] = (desk, _at(d))
        elif kind == "jp.tsunagu.routing.withdrawn.v1":
            held = live.pop(cid, None)
            if held is None or held[0] != desk:
                problems.append(f"{cid} withdrawn from {desk} while holding {held[0] if held else 'no line'}")
            else:
                holds.append((held[0], held[1], _at(d), cid))
    for cid, (desk, since) in live.items():
        holds.append((desk, since, max(since, released.get(cid, float("inf"))), cid))
    by_desk: dict[str, list[tuple[float, int, str]]] = {}
    for desk, since, until, cid in holds:
        if until <= since:
            continue  # it had ended (in event time) before routing assigned it: held for no time
        by_desk.setdefault(desk, []).extend([(since, 1, cid), (until, -1, cid)])
    for desk, steps in by_desk.items():
        held_now: set[str] = set()
        for at, step, cid in sorted(steps):  # a release at the same moment comes first (-1 < 1)
            if step < 0:
                held_now.discard(cid)
                continue
            held_now.add(cid)
            if len(held_now) > lines.get(desk, 0):
                problems.append(f"desk {desk} held {sorted(held_now)} on {lines.get(desk, 0)} lines at {at:.0f}")
    return problems


async def board_violations(pool: asyncpg.Pool) -> list[str]:
    """routing's own invariants (services.routing.domain.invariants.invariant_violations) on the board as committed."""
    _, registries = await routing_store.load_registries(pool)
    _, snapshot = await routing_store.read_board(pool)
    return invariant_violations(Board.restore(snapshot, registries))


# --- referrals terminal or escalated on time ---------------------------------------------------------

TERMINAL = {"rejected", "completed", "failed", "cancelled"}
AWAITING = {"requested", "received"}


async def referral_problems(pool: asyncpg.Pool) -> tuple[list[str], Counter[str], list[str]]:
    """(problems, referrals by status, ids of every change in the histories).

    Each referral is terminal, or open with no deadline passed by referral's clock (event time:
    ``referral.clock``); its history runs 1..version with no gap or repeat; each escalation happened
    exactly at the deadline it missed, and ``escalations`` counts them."""
    watermark = await pool.fetchval("SELECT watermark FROM referral.clock WHERE id = 1")
    rows = await pool.fetch("SELECT referral_id, status, deadline, escalations, version FROM referral.referral")
    history: dict[str, list[asyncpg.Record]] = {}
    for h in await pool.fetch("SELECT referral_id, version, id, type, at, data FROM referral.history "
                              "ORDER BY referral_id, version"):
        history.setdefault(h["referral_id"], []).append(h)
    problems: list[str] = []
    ids: list[str] = []
    for r in rows:
        rid, status = r["referral_id"], r["status"]
        if status in AWAITING and r["deadline"] is not None and watermark is not None and r["deadline"] <= watermark:
            problems.append(f"{rid} is {status} past its deadline {r['deadline']} (clock {watermark}), not escalated")
        steps = history.get(rid, [])
        ids += [h["id"] for h in steps]
        if [h["version"] for h in steps] != list(range(1, r["version"] + 1)):
            problems.append(f"{rid}: history versions {[h['version'] for h in steps]}, version {r['version']}")
        escalated = 0
        for before, h in zip(steps, steps[1:], strict=False):
            if h["type"] != "referral.escalated":
                continue
            escalated += 1
            due = json.loads(before["data"]).get("deadline")
            if due is None or datetime.fromisoformat(due) != h["at"]:
                problems.append(f"{rid} escalated at {h['at']}, its deadline was {due}")
        if escalated != r["escalations"]:
            problems.append(f"{rid}: {r['escalations']} escalations counted, {escalated} in its history")
    return problems, Counter(r["status"] for r in rows), ids


def set_aside_lines(log_text: str) -> list[str]:
    """Log lines of events a consumer set aside as invalid (tsunagu.consume): none may come from a replay."""
    return [line for line in log_text.splitlines() if "event_set_aside" in line]
