"""The replay engine: plays callers, the telephony platform, counsellors and receivers against
routing, in simulated time, and keeps the ground truth of every contact's fate.

**Time.** Routing's clock is the greatest event time it has seen; an event older than the clock
is applied at the clock. So the engine sends events strictly in event-time order and must never
send an event before it knows every routing decision that could change it. Decisions reach the
callers only through an assignment, and a counsellor needs at least ``pickup_s[0]`` (the
*lookahead*, > 0) to pick up a ringing call; so an event at time ``t`` depends only on the
assignments made up to ``t - lookahead``. The engine keeps a model of routing — routing's own
pure core, ``services.routing.domain.board.Board``, fed the same events in the same order — and
synchronises (sends what it has plus a ``platform.heartbeat`` at ``t``, then waits for routing's
decisions) only when the model says an assignment was made that an action at ``t`` could depend
on. Quiet stretches and busy desks with no free line therefore cost no round trip at all.

The decisions that drive the callers are routing's real ones (from ``tsunagu.routing.decisions``);
the model only says when to wait and for which contacts. Where the real service decided
otherwise (another contact, another moment — e.g. events of one window applied in another order
across partitions), the engine follows the real decision, and counts it: ``late`` reactions (an
assignment learnt after the engine had passed the moment a counsellor would pick up: answered
at once, at the time already reached) and ``unmatched`` predictions.

**Run ahead, verified** (``pipeline``: when routing applies events in event-time order,
``TSUNAGU_ROUTING_ORDER=event_time``, as ``tsunagu up --replay`` runs it). Then routing's decisions
do not depend on how its partitions are read: they are exactly the model's, fed the same events.
So the engine does not wait at each decision point; it drives the callers by the model's decisions
at once, sends events as fast as intake takes them (each send ending with a heartbeat at the last
event's time, so routing's watermark follows), and checks every real decision read from
``tsunagu.routing.decisions`` against a prediction (kind, contact, desk, time to the millisecond).
It waits only when more than ``AHEAD_LIMIT`` predictions are still unconfirmed, and at the end
until all are. A prediction routing never made, or a decision it made that was not predicted, is
counted ``unmatched`` — and the replay's report check then fails, as it should.

**Chat and SNS** (a scenario's ``chat:``). A chat user opens the talk (``contact.received`` with the
window's channel), writes a first message after a typing delay (``contact.field_selected``: the
conversation queues), and the platform's screening result follows (``contact.triaged``, some of it
late). Routing offers the conversation to a seat (``routing.assigned`` names the seat); the
counsellor's first response, slower at a seat already holding conversations, is ``contact.answered``
(its ``wait_seconds``: time to the first response), or routing withdraws the offer after its offer
timeout. A user waits minutes, not seconds, and leaves without a word: the platform reports
``contact.abandoned`` only after its inactivity timeout — and a counsellor who responds before
that answers someone already gone (counted connected, as the platform counts it; the ground truth
marks it). Some conversations are handed to the phone desk (``contact.transferred`` with
``to_channel: phone``); the phone desk's pick-up is a second ``contact.answered``. The seat's room
is routing's business: the engine only keeps count of the conversations it has put on each seat,
for their timing. The lookahead is the shorter of the pick-up delay and the first response.

The in-process dry run uses the model as the router (its decisions are the real ones): the same
engine, no I/O — for fitting a scenario quickly. Published figures come from the real services.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas import (
    ContactAbandoned,
    ContactAnswered,
    ContactEnded,
    ContactFieldSelected,
    ContactReceived,
    ContactTransferred,
    ContactTriaged,
)
from schemas.timezone import JST
from services.routing.domain.board import Board
from services.routing.domain.records import Decision
from tsunagu_tools.simulate.router import PLATFORM, DryRouter, Outgoing, Router, Seen
from tsunagu_tools.simulate.scenario import Scenario
from tsunagu_tools.simulate.truth import Fate, GroundTruth
from tsunagu_tools.simulate.world import MAX_RINGS, Plan, build_chat_plans, build_plans

# Run ahead (pipeline): how many predictions may wait for routing's confirmation before the engine
# waits, and how long routing may go without confirming any before the replay gives up.
AHEAD_LIMIT = 4000
STALL_S = 60.0


def _key(d: Seen) -> tuple[str, str, str | None, float, int | None]:
    return (d.kind, d.contact_id, d.desk_id, round(d.at, 3), d.seat)


@dataclass
class _State:
    plan: Plan
    status: str = "ivr"  # ivr | waiting | ringing | talking | done
    selected_at: float = 0.0
    offers: int = 0
    token: int = 0  # invalidates a scheduled answer when the ring is withdrawn
    desk: tuple[str, str] | None = None
    # a chat's: the seat holding it, the conversations there with it, when the person left without a
    # word, the first response, the hand-over to the phone, the phone desk and its offers
    seat: tuple[str, int] | None = None
    load: int = 1
    gone_at: float | None = None
    answered_at: float = 0.0
    transfer_at: float = 0.0
    chat_desk: str | None = None
    phone_offers: int = 0


class Engine:
    def __init__(self, scenario: Scenario, router: Router, *, run: str, shift: timedelta = timedelta(0),
                 speed: float | None = None, progress: Callable[[float], None] | None = None,
                 batch: int = 500, pipeline: bool = False) -> None:
        self.scenario = scenario
        self.router = router
        self.run = run
        self.start = scenario.start + shift
        self.end = scenario.end + shift
        self.t0 = self.start.timestamp()
        self.span = (self.end - self.start).total_seconds()
        self.version = f"sim.{scenario.name}.{run}"
        self.registry_document = scenario.registry_document(self.version, self.start)
        registry = scenario.registry(self.version, self.start)
        # the telephony platform reports its desks' answers: its key acts for their organisations
        self.desk_organisations = sorted(o.id for o in registry.organisations)
        self.model = Board([registry])
        menu = {field.value: key for key, field in registry.menu.items()}
        self.plans = build_plans(scenario, run, menu) + build_chat_plans(scenario, run, menu)
        self.lookahead = scenario.platform.pickup_s[0]
        if self.lookahead <= 0:
            raise ValueError("platform.pickup_s must start above 0 s: it is the replay's lookahead")
        if scenario.chat is not None:
            self.lookahead = min(self.lookahead, scenario.chat.first_response_s[0])
            if self.lookahead <= 0:
                raise ValueError("chat.first_response_s must start above 0 s: it is the replay's lookahead")
        self._seat_load: Counter[tuple[str, int]] = Counter()  # conversations the engine put on each seat
        # a first response later than this never comes: routing has withdrawn the offer by then
        self._offer_timeout_s = registry.rules.offer_timeout(scenario.chat.channel) if scenario.chat else 0.0
        self.speed = speed
        self.progress = progress
        self.batch = batch
        self.pipeline = pipeline
        self._expected: Counter[tuple[str, str, str | None, float, int | None]] = Counter()  # predicted, not seen
        self._surprises: Counter[tuple[str, str, str | None, float, int | None]] = Counter()  # seen, not predicted
        self.truth = GroundTruth(scenario.name, run, self.start, self.end, self.version)
        self._heap: list[tuple[float, int, str, str, Any]] = []
        self._seq = 0
        self._buffer: list[Outgoing] = []
        self._sent_until = 0.0  # event time of the latest event sent (seconds from start)
        self._predicted: dict[str, float] = {}  # contact -> the model's assignment time, not yet seen for real
        self._model_out: list[Seen] = []
        self._seen_ids: set[str] = set()
        self._states: dict[str, _State] = {}
        self._hb = 0
        self._model_n = 0
        self._referrals: set[str] = set()

    # --- helpers ----------------------------------------------------------------------------

    def at(self, t: float) -> datetime:
        return datetime.fromtimestamp(self.t0 + t, JST)

    def _push(self, t: float, kind: str, cid: str, arg: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, cid, arg))

    def _envelope(self, org: str, system: str, type_: str, ident: str, subject: str, t: float,
                  data: dict[str, Any]) -> dict[str, Any]:
        return {"specversion": "1.0", "id": ident, "source": f"/partners/{org}/{system}",
                "type": f"jp.tsunagu.{type_}.v1", "time": self.at(t).isoformat(), "subject": subject, "data": data}

    def _model(self, decisions: list[Decision]) -> None:
        for d in decisions:
            self._model_n += 1
            seen = Seen(f"model-{self._model_n}", d.kind, d.contact_id, d.at.timestamp() - self.t0,
                        getattr(d.data, "desk_id", None), getattr(d.data, "organisation_id", None),
                        getattr(d.data, "seat", None))
            self._model_out.append(seen)
            if d.kind == "routing.assigned":
                self._predicted[d.contact_id] = seen.at

    def _emit_contact(self, kind: str, t: float, model_data: Any, wire: dict[str, Any], cid: str, step: str,
                      system: str = "telephony") -> None:
        envelope = self._envelope(PLATFORM, system, kind, f"{cid}-{step}", cid, t, wire)
        self._buffer.append(Outgoing(PLATFORM, envelope))
        self._sent_until = max(self._sent_until, t)
        self._model(self.model.apply(kind, self.at(t), model_data))

    # --- the run ----------------------------------------------------------------------------

    async def run_replay(self) -> GroundTruth:
        wall0 = time.perf_counter()
        for plan in self.plans:
            self._states[plan.contact_id] = _State(plan)
            self.truth.fates[plan.contact_id] = Fate(plan.contact_id, plan.field,
                                                     channel=plan.chat.channel if plan.chat else "phone")
            self._push(plan.arrive, "arrive", plan.contact_id)
        last_progress = -1.0
        while self._heap:
            t = self._heap[0][0]
            due = self._due_decisions(t)
            if due is not None:
                if self.pipeline:
                    await self._run_ahead(max(due, self._sent_until))
                else:
                    await self._sync(max(due, self._sent_until))
                continue
            if self.speed:
                ahead = t / self.speed - (time.perf_counter() - wall0)
                if ahead > 0.05:
                    await self._flush()
                    await asyncio.sleep(ahead)
            _, _, kind, cid, arg = heapq.heappop(self._heap)
            await self._act(t, kind, cid, arg)
            if len(self._buffer) >= self.batch:
                await self._flush()
            if self.progress and t - last_progress >= 600:
                last_progress = t
                self.progress(min(1.0, t / self.span))
        if self.pipeline:
            await self._run_ahead(max(self._sent_until, self.span))
            await self._confirm_all(max(self._sent_until, self.span))
        else:
            await self._sync(max(self._sent_until, self.span))
        if self.progress:
            self.progress(1.0)
        self.truth.wall_s = time.perf_counter() - wall0
        return self.truth

    def _due_decisions(self, t: float) -> float | None:
        """The earliest predicted assignment an action at ``t`` could depend on, if any: then the
        engine must learn routing's decisions up to it before going on.

        The model's timers (overflow, ring timeout) are fired one at a time, each at its own due
        time, so that the model never runs past an assignment whose answer it has not been told.
        (It asks the board when its next timer falls due.)
        """
        horizon = t - self.lookahead
        while True:
            if self._predicted:
                first = min(self._predicted.values())
                if first <= horizon:
                    return first
            due = self.model.next_timer_due()
            if due is None or due.timestamp() - self.t0 > horizon:
                return None
            self._model(self.model.tick(due))
            if self.model.next_timer_due() == due and self.model.clock is not None and self.model.clock >= due:
                return None  # not due after all (never expected): do not spin

    async def _flush(self) -> None:
        if self._buffer:
            if self.pipeline:  # routing's watermark follows what was sent
                self._heartbeat(self._sent_until)
            events, self._buffer = self._buffer, []
            self.truth.events_sent += len(events)
            await self.router.send(events)
        if self.pipeline:
            await self._confirm()

    def _heartbeat(self, until: float) -> None:
        self._hb += 1
        self._buffer.append(Outgoing(PLATFORM, self._envelope(
            PLATFORM, "telephony", "platform.heartbeat", f"{self.run}-hb-{self._hb}", PLATFORM, until,
            {"platform_id": PLATFORM})))
        self._sent_until = max(self._sent_until, until)

    # --- run ahead, verified ----------------------------------------------------------------

    async def _run_ahead(self, until: float) -> None:
        """A decision point without waiting: the model's decisions up to ``until`` drive the callers
        now, and are kept to be checked against routing's real ones."""
        if self.model.clock is None or until > self.model.clock.timestamp() - self.t0:
            self._model(self.model.tick(self.at(until)))
        model_out, self._model_out = self._model_out, []
        for d in model_out:
            key = _key(d)
            if self._surprises[key]:
                self._surprises[key] -= 1
                if not self._surprises[key]:
                    del self._surprises[key]
            else:
                self._expected[key] += 1
            self._on_decision(d)
        for cid in [cid for cid, ta in self._predicted.items() if ta <= until]:
            del self._predicted[cid]  # the model's own assignments: learnt at once
        if sum(self._expected.values()) > AHEAD_LIMIT:
            await self._flush()
            await self._confirm(wait_below=AHEAD_LIMIT // 2)

    def _check(self, real: list[Seen]) -> int:
        matched = 0
        for d in real:
            if d.id in self._seen_ids:
                continue  # at-least-once: a decision may arrive twice
            self._seen_ids.add(d.id)
            key = _key(d)
            if self._expected[key]:
                self._expected[key] -= 1
                if not self._expected[key]:
                    del self._expected[key]
                matched += 1
            else:
                self._surprises[key] += 1
        return matched

    async def _confirm(self, wait_below: int | None = None) -> None:
        """Take in routing's decisions read so far (and referral's events); with ``wait_below``,
        wait until fewer predictions than that are unconfirmed."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            if self._check(await self.router.decisions(0 if wait_below is None else 20)):
                last = loop.time()
            for ev in await self.router.referral_events():
                self._on_referral(ev)
            if wait_below is None or sum(self._expected.values()) < wait_below:
                return
            self.truth.syncs += 1
            if loop.time() - last > STALL_S:
                raise RuntimeError(f"routing confirmed none of {sum(self._expected.values())} predicted "
                                   f"decisions in {STALL_S:.0f} s")

    async def _confirm_all(self, until: float) -> None:
        """The end: wait for every prediction (or until routing has applied everything up to ``until``
        and nothing more comes); what is left over either way is unmatched."""
        self._heartbeat(until)  # routing's timers up to the end, as the model's
        await self._flush()
        loop = asyncio.get_running_loop()
        t0, last = loop.time(), loop.time()
        settled = await self.router.settled(until)
        while self._expected or self._surprises or not settled:
            if self._check(await self.router.decisions(20)):
                last = loop.time()
            for ev in await self.router.referral_events():
                self._on_referral(ev)
            settled = await self.router.settled(until)
            quiet = loop.time() - last
            if (settled and quiet > 1.0) or quiet > STALL_S:  # routing has applied it all, nothing more comes
                break
        self.truth.sync_wall_s += loop.time() - t0
        self.truth.unmatched += sum(self._expected.values()) + sum(self._surprises.values())
        self.truth.unmatched_examples = [("predicted", *k) for k in list(self._expected)[:5]] + \
            [("not predicted", *k) for k in list(self._surprises)[:5]]
        self._expected.clear()
        self._surprises.clear()

    async def _sync(self, until: float) -> None:
        t0 = time.perf_counter()
        if self.model.clock is None or until > self.model.clock.timestamp() - self.t0:
            self._model(self.model.tick(self.at(until)))
        self._heartbeat(until)
        await self._flush()
        expect = {cid for cid, ta in self._predicted.items() if ta <= until}
        model_out, self._model_out = self._model_out, []
        real = await self.router.sync(until, expect, model_out)
        self.truth.syncs += 1
        for d in real:
            self._on_decision(d)
        for cid in [cid for cid, ta in self._predicted.items() if ta <= until]:
            del self._predicted[cid]
            self.truth.unmatched += 1
        for ev in await self.router.referral_events():
            self._on_referral(ev)
        self.truth.sync_wall_s += time.perf_counter() - t0

    # --- routing's decisions and referral's events -----------------------------------------

    def _on_decision(self, d: Seen) -> None:
        if d.id in self._seen_ids:
            return  # at-least-once: a decision may arrive twice
        self._seen_ids.add(d.id)
        s = self._states.get(d.contact_id)
        if s is None:
            return
        self.truth.decisions += 1
        if d.kind == "routing.assigned":
            self._predicted.pop(d.contact_id, None)
        if s.plan.chat is not None:
            self._on_chat_decision(s, d)
            return
        if d.kind == "routing.assigned":
            if s.status != "waiting":
                return
            s.status = "ringing"
            s.desk = (d.desk_id or "", d.organisation_id or "")
            ring_s, picked = s.plan.rings[min(s.offers, MAX_RINGS - 1)]
            s.offers += 1
            self.truth.fates[d.contact_id].offers = s.offers
            s.token += 1
            if picked:
                due = d.at + ring_s
                if due < self._sent_until:
                    self.truth.late += 1
                    due = self._sent_until
                self._push(due, "answer", d.contact_id, s.token)
        elif d.kind == "routing.withdrawn" and s.status == "ringing":
            s.status = "waiting"
            s.token += 1

    def _on_chat_decision(self, s: _State, d: Seen) -> None:
        """A chat offered to a seat (its first response drawn, slower at a fuller seat) or withdrawn; a
        handed-over chat offered to a phone line (picked up after a ring) or withdrawn."""
        chat = s.plan.chat
        assert chat is not None
        cid = d.contact_id
        if d.kind == "routing.assigned" and s.status == "waiting":
            s.status = "offered"
            s.desk = (d.desk_id or "", d.organisation_id or "")
            s.seat = (d.desk_id or "", d.seat or 0)
            self._seat_load[s.seat] += 1
            s.load = self._seat_load[s.seat]
            delay, responded = chat.responses[min(s.offers, MAX_RINGS - 1)]
            s.offers += 1
            self.truth.fates[cid].offers = s.offers
            s.token += 1
            delay *= self._slower(s.load)
            if responded and delay < self._offer_timeout_s:
                self._push_reaction(d.at + delay, "c_respond", cid, s.token)
        elif d.kind == "routing.assigned" and s.status == "transferring":
            s.status = "phone_ringing"
            s.desk = (d.desk_id or "", d.organisation_id or "")
            ring_s, picked = s.plan.rings[min(s.phone_offers, MAX_RINGS - 1)]
            s.phone_offers += 1
            s.token += 1
            if picked:
                self._push_reaction(d.at + ring_s, "c_phone_answer", cid, s.token)
        elif d.kind == "routing.withdrawn" and s.status == "offered":
            s.status = "waiting"
            s.token += 1
            self._free_seat(s)
        elif d.kind == "routing.withdrawn" and s.status == "phone_ringing":
            s.status = "transferring"
            s.token += 1

    def _push_reaction(self, due: float, kind: str, cid: str, token: int) -> None:
        """A reaction to a decision, at its time — or at once, counted late, if the replay is past it."""
        if due < self._sent_until:
            self.truth.late += 1
            due = self._sent_until
        self._push(due, kind, cid, token)

    def _slower(self, load: int) -> float:
        """How much slower a counsellor writes at a seat holding ``load`` conversations (this one included)."""
        chat = self.scenario.chat
        return 1.0 + (chat.slowdown_per_conversation if chat else 0.0) * max(0, load - 1)

    def _free_seat(self, s: _State) -> None:
        if s.seat is not None:
            self._seat_load[s.seat] -= 1
            if self._seat_load[s.seat] <= 0:
                del self._seat_load[s.seat]
            s.seat = None

    def _on_referral(self, ev: dict[str, Any]) -> None:
        data = ev.get("data", {})
        rid, receiver = data.get("referral_id"), data.get("receiver_id")
        kind = ev.get("type", "").removeprefix("jp.tsunagu.").removesuffix(".v1")
        if kind not in ("referral.created", "referral.escalated") or not rid or not receiver:
            return
        if receiver == "secretariat" or (rid, receiver) in self._referrals:
            return
        cid = data.get("contact_id", "")
        s = self._states.get(cid)
        if s is None:
            return
        self._referrals.add((rid, receiver))
        at = datetime.fromisoformat(ev["time"]).timestamp() - self.t0
        ack, accept, complete = s.plan.receiver_delays
        steps = [("acknowledge", ack, None), ("accept", ack + accept, None), ("start", ack + accept + 1, None),
                 ("complete", ack + accept + complete, {"outcome": s.plan.outcome})]
        for action, delay, body in steps:
            if at + delay <= self.span:
                self._push(max(at + delay, self._sent_until), "receiver", cid, (rid, receiver, action, body))

    # --- the callers, the platform, the counsellors -----------------------------------------

    async def _act(self, t: float, kind: str, cid: str, arg: Any) -> None:
        s = self._states[cid]
        p = s.plan
        fate = self.truth.fates[cid]
        if p.chat is not None and kind not in ("record", "receiver"):
            self._act_chat(t, kind, cid, s, fate, arg)
        elif kind == "arrive":
            self.truth.caller_ids.add(p.caller_id)
            self._emit_contact("contact.received", t, ContactReceived(contact_id=cid, channel="phone",
                                                                      prefecture=p.region),
                               {"contact_id": cid, "channel": "phone", "caller_id": p.caller_id, "region": p.region},
                               cid, "received")
            self._push(t + p.ivr_s, "ivr_abandon" if p.ivr_abandon else "select", cid)
        elif kind == "ivr_abandon":
            s.status, fate.outcome = "done", "ivr"
            wire = {"contact_id": cid, "stage": "ivr", "wait_seconds": round(p.ivr_s, 3)}
            self._emit_contact("contact.abandoned", t, ContactAbandoned(**wire), wire, cid, "abandoned")
        elif kind == "select":
            s.status, s.selected_at = "waiting", t
            wire = {"contact_id": cid, "field": p.field, "menu_position": p.menu_key}
            self._emit_contact("contact.field_selected", t, ContactFieldSelected(**wire), wire, cid, "field")
            self._push(t + p.patience_s, "patience", cid)
        elif kind == "patience":
            if s.status not in ("waiting", "ringing"):
                return
            stage = "ringing" if s.status == "ringing" else "queue"
            s.status, fate.outcome, fate.wait_s = "done", stage, round(t - s.selected_at, 3)
            wire = {"contact_id": cid, "stage": stage, "wait_seconds": fate.wait_s}
            self._emit_contact("contact.abandoned", t, ContactAbandoned(**wire), wire, cid, "abandoned")
        elif kind == "answer":
            if s.status != "ringing" or arg != s.token or s.desk is None:
                return
            s.status = "talking"
            desk, org = s.desk
            fate.outcome, fate.desk_id, fate.organisation_id = "answered", desk, org
            fate.wait_s = round(t - s.selected_at, 3)
            wire = {"contact_id": cid, "desk_id": desk, "organisation_id": org, "wait_seconds": fate.wait_s}
            self._emit_contact("contact.answered", t, ContactAnswered(**wire), wire, cid, "answered")
            self._push(t + p.talk_s, "end", cid)
        elif kind == "end":
            s.status = "done"
            fate.talk_s = round(p.talk_s, 3)
            wire = {"contact_id": cid, "talk_seconds": fate.talk_s, "desk_id": fate.desk_id}
            self._emit_contact("contact.ended", t, ContactEnded(**wire), wire, cid, "ended")
            self._push(t + p.wrapup_s, "record", cid)
        elif kind == "record":
            self._record(t, s, fate)
        elif kind == "receiver":
            rid, receiver, action, body = arg
            ok = await self.router.receiver_action(rid, receiver, action, body)
            if ok and action == "acknowledge":
                self.truth.acknowledged += 1

    # --- the chat users, the platform, the counsellors at the keyboard --------------------------

    def _act_chat(self, t: float, kind: str, cid: str, s: _State, fate: Fate, arg: Any) -> None:
        p, chat = s.plan, self.scenario.chat
        assert p.chat is not None and chat is not None
        if kind == "arrive":
            self.truth.caller_ids.add(p.caller_id)
            self._emit_chat("contact.received", t, ContactReceived(contact_id=cid, channel=p.chat.channel,
                                                                   prefecture=p.region),
                            {"contact_id": cid, "channel": p.chat.channel, "caller_id": p.caller_id,
                             "region": p.region}, cid, "received")
            if p.chat.silent:  # opens the talk, never writes: the platform gives up after its inactivity timeout
                self._push(t + chat.inactivity_timeout_s, "c_silent", cid)
            else:
                self._push(t + p.chat.typing_s, "c_message", cid)
        elif kind == "c_silent":
            s.status, fate.outcome = "done", "ivr"
            wire = {"contact_id": cid, "stage": "ivr", "wait_seconds": round(t - p.arrive, 3)}
            self._emit_chat("contact.abandoned", t, ContactAbandoned(**wire), wire, cid, "abandoned")
        elif kind == "c_message":
            s.status, s.selected_at = "waiting", t
            wire = {"contact_id": cid, "field": p.field, "menu_position": p.menu_key}
            self._emit_chat("contact.field_selected", t, ContactFieldSelected(**wire), wire, cid, "field")
            self._push(t + p.patience_s, "c_leave", cid)
            if p.chat.triage is not None:
                self._push(t + p.chat.triage[0], "c_triage", cid)
        elif kind == "c_triage":
            self._triage(t, cid, s)
        elif kind == "c_leave":
            s.gone_at = t  # nobody sees it: the platform notices after its inactivity timeout
            if s.status in ("waiting", "offered"):
                self._push(t + chat.inactivity_timeout_s, "c_report", cid)
        elif kind == "c_report":
            self._reported_gone(t, cid, s, fate)
        else:
            self._conversation(t, kind, cid, s, fate, arg)

    def _emit_chat(self, kind: str, t: float, model_data: Any, wire: dict[str, Any], cid: str, step: str) -> None:
        self._emit_contact(kind, t, model_data, wire, cid, step, system="line")

    def _triage(self, t: float, cid: str, s: _State) -> None:
        if s.status == "done" or s.plan.chat is None or s.plan.chat.triage is None:
            return
        wire: dict[str, Any] = {"contact_id": cid, "risk": s.plan.chat.triage[1]}
        instrument = self.scenario.chat.triage.instrument if self.scenario.chat else None
        if instrument:
            wire["instrument"] = instrument
        self._emit_chat("contact.triaged", t, ContactTriaged(**wire), wire, cid, "triaged")

    def _reported_gone(self, t: float, cid: str, s: _State, fate: Fate) -> None:
        """The platform's inactivity timeout: a user who left before any first response is abandoned."""
        if s.status not in ("waiting", "offered"):
            return
        stage = "ringing" if s.status == "offered" else "queue"
        self._free_seat(s)
        s.status, fate.outcome, fate.wait_s = "done", stage, round(t - s.selected_at, 3)
        wire = {"contact_id": cid, "stage": stage, "wait_seconds": fate.wait_s}
        self._emit_chat("contact.abandoned", t, ContactAbandoned(**wire), wire, cid, "abandoned")

    def _conversation(self, t: float, kind: str, cid: str, s: _State, fate: Fate, token: Any) -> None:
        """The first response, the conversation, the hand-over to the phone and the end (a response or a
        pick-up with an old ``token`` was meant for an offer routing has withdrawn since)."""
        p, chat = s.plan, self.scenario.chat
        assert p.chat is not None and chat is not None
        if kind == "c_respond":
            if s.status != "offered" or token != s.token or s.desk is None:
                return
            s.status, s.answered_at = "talking", t
            desk, org = s.desk
            s.chat_desk = desk
            fate.outcome, fate.desk_id, fate.organisation_id = "answered", desk, org
            fate.wait_s = round(t - s.selected_at, 3)
            wire = {"contact_id": cid, "desk_id": desk, "organisation_id": org, "wait_seconds": fate.wait_s}
            self._emit_chat("contact.answered", t, ContactAnswered(**wire), wire, cid, "answered")
            if s.gone_at is not None:  # nobody reads it: the platform closes the talk after its timeout
                fate.gone = True
                self._push(t + chat.inactivity_timeout_s, "c_end", cid)
                return
            length = p.chat.conversation_s * self._slower(s.load)
            after = p.chat.transfer_after_s
            if after is not None and after < length:
                self._push(t + after, "c_transfer", cid)
            else:
                self._push(t + length, "c_end", cid)
        elif kind == "c_transfer" and s.status == "talking":
            self._hand_over(t, cid, s, fate)
        elif kind == "c_phone_answer":
            if s.status != "phone_ringing" or token != s.token or s.desk is None:
                return
            s.status = "phone_talking"
            desk, org = s.desk
            wire = {"contact_id": cid, "desk_id": desk, "organisation_id": org,
                    "wait_seconds": round(t - s.transfer_at, 3)}
            self._emit_contact("contact.answered", t, ContactAnswered(**wire), wire, cid, "answered-phone")
            s.transfer_at = t  # the phone desk's part of the talk runs from here
            self._push(t + p.talk_s, "c_end", cid)
        elif kind == "c_end" and s.status in ("talking", "phone_talking"):
            self._end(t, cid, s, fate, s.desk[0] if s.desk else None,
                      t - (s.transfer_at if s.status == "phone_talking" else s.answered_at))
        elif kind == "c_transfer_giveup" and s.status in ("transferring", "phone_ringing"):
            # the person gave up waiting for the phone counsellor: the chat desk closes the conversation
            self._end(t, cid, s, fate, s.chat_desk, t - s.transfer_at)

    def _hand_over(self, t: float, cid: str, s: _State, fate: Fate) -> None:
        transfer = self.scenario.chat.transfer if self.scenario.chat else None
        assert transfer is not None and s.chat_desk is not None
        wire: dict[str, Any] = {"contact_id": cid, "from_desk_id": s.chat_desk, "to_channel": "phone"}
        if transfer.to_desk is not None:
            wire["to_desk_id"] = transfer.to_desk
        if transfer.to_field is not None:
            wire["to_field"] = transfer.to_field
        self._free_seat(s)
        s.status, s.transfer_at, fate.transferred = "transferring", t, True
        self._emit_chat("contact.transferred", t, ContactTransferred(**wire), wire, cid, "transferred")
        self._push(t + transfer.patience_s, "c_transfer_giveup", cid)

    def _end(self, t: float, cid: str, s: _State, fate: Fate, desk: str | None, part_s: float) -> None:
        """The conversation ends (``talk_seconds``: the ending desk's part); a record follows unless
        nobody was there."""
        self._free_seat(s)
        s.status = "done"
        fate.talk_s = round(t - s.answered_at, 3)
        wire: dict[str, Any] = {"contact_id": cid, "talk_seconds": round(max(0.0, part_s), 3), "desk_id": desk}
        self._emit_chat("contact.ended", t, ContactEnded(**wire), wire, cid, "ended")
        if not fate.gone:
            self._push(t + s.plan.wrapup_s, "record", cid)

    def _record(self, t: float, s: _State, fate: Fate) -> None:
        c = s.plan.consultation
        assert c is not None and fate.organisation_id is not None
        cid = s.plan.contact_id
        data: dict[str, Any] = {
            "contact_id": cid, "organisation_id": fate.organisation_id, "desk_id": fate.desk_id,
            "field": s.plan.field, "categories": c.categories, "age_band": c.age_band, "risk": c.risk,
            "referral_needed": c.referral_needed, "municipality": c.municipality, "talk_seconds": fate.talk_s}
        # A handoff is asked for only with a basis: consent, or imminent danger to life (vital interest).
        if c.consent or (c.referral_needed and c.risk != "imminent"):
            data["consent"] = {"given": True, "scope": ["municipality", "self_reliance_centre", "police", "npo"],
                               "recorded_by": f"staff-{fate.desk_id}", "recorded_at": self.at(t).isoformat()}
        org = fate.organisation_id
        self._buffer.append(Outgoing(org, self._envelope(org, "casebook", "consultation.recorded", f"{cid}-recorded",
                                                         cid, t, data)))
        self._sent_until = max(self._sent_until, t)
        self.truth.consultations.append({"at": t, "categories": c.categories, "age_band": c.age_band, "risk": c.risk,
                                         "referral_needed": c.referral_needed})
        self.truth.referrals_needed += c.referral_needed


def dry_run(scenario: Scenario, *, run: str = "dry", progress: Callable[[float], None] | None = None) -> GroundTruth:
    """The scenario against routing's pure core in this process (no services): for fitting."""
    return asyncio.run(Engine(scenario, DryRouter(), run=run, progress=progress).run_replay())
