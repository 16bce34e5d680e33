"""The replay against the real services, through their public interfaces only.

- Callers' and counsellors' events go to intake over HTTP (``POST /v1/events``), each with its
  partner organisation's key: the telephony platform's for call events and heartbeats, each
  desk organisation's for its consultation records.
- Routing's decisions are read from ``tsunagu.routing.decisions`` (from the end, at the start).
- Receivers read ``tsunagu.referral.events`` and work their referrals with the referral API.
- The barrier of a synchronisation: every assignment the model predicted has arrived, or
  routing's ``GET /v1/queues`` says its clock reached the heartbeat and nothing more arrived for a
  moment — a short one when the contacts still missing wait in its queues (routing decided
  otherwise than the model), a longer one otherwise (their decisions may be on the way).
- Routing waits only for the telephony platform's events: they are POSTed first, the desks'
  consultation records in the background meanwhile.
- A scenario's chat window is the same platform partner's (source ``/partners/tel-platform/line``):
  its users' events go out with the calls, in one event-time order, as routing needs them.

**Replays side by side.** Routing's clock never goes back, so each replay is moved to its own
week: the scenario's start shifted by whole weeks (same weekday and hour; a week with no Japanese
public holiday) to the first one after routing's clock. Its desks are applied as their own
registry version (``sim.<scenario>.<run>``) effective at the shifted start, and its contact ids
carry the run tag. Metrics then reports it by its own time range (``--from/--to``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import jpholiday
from aiokafka import AIOKafkaConsumer

from services.routing import store as routing_store
from tsunagu import auth, topics
from tsunagu.db import create_pool
from tsunagu.kafka import assign_all_partitions
from tsunagu.settings import Settings
from tsunagu_tools.simulate.engine import Engine
from tsunagu_tools.simulate.router import PLATFORM, Outgoing, Seen
from tsunagu_tools.simulate.scenario import Scenario
from tsunagu_tools.simulate.truth import GroundTruth


async def _through_restarts(call: Callable[[], Awaitable[httpx.Response]], *, patience_s: float = 300.0
                            ) -> httpx.Response:
    """``call()``, retried while the service is unreachable (connection refused or reset, e.g. its
    process restarting), as a partner system retries: every request the replay makes is idempotent."""
    loop = asyncio.get_running_loop()
    give_up, pause = loop.time() + patience_s, 0.05
    while True:
        try:
            return await call()
        except httpx.TransportError:
            if loop.time() > give_up:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)


# The barrier's timing (seconds): when to first ask routing where it is if the predicted assignments
# have not all arrived (most arrive well before), and how long to wait for stragglers once routing's
# clock reached the heartbeat.
CHECK_AFTER_S = 0.08
SETTLE_S = 0.05
REFERRAL_FETCH_WAIT_MS = 100


class LeftoverContacts(RuntimeError):
    """Routing holds live contacts no replay will ever end: a replay needs an empty stack."""


class StackRouter:
    def __init__(self, settings: Settings, bootstrap: str, database_url: str, *, run: str, t0: float) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.run = run
        self.t0 = t0
        self.keys: dict[str, str] = {}
        self.http: dict[str, httpx.AsyncClient] = {}
        self.consumer: AIOKafkaConsumer | None = None  # routing's decisions
        self.referral_consumer: AIOKafkaConsumer | None = None
        self.pool = None
        self._decision_topic = settings.topic(topics.ROUTING_DECISIONS)
        self._referral_topic = settings.topic(topics.REFERRAL_EVENTS)
        self._referrals: list[dict[str, Any]] = []
        self._pending: list[Seen] = []
        self.receiver_errors = 0
        self._background: asyncio.Task[None] | None = None  # consultation records being POSTed

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.settings.service_port(service)}"

    async def start(self) -> None:
        self.pool = await create_pool(self.database_url, attempts=5)
        await auth.migrate_schema(self.pool)
        self.keys["secretariat"] = (await auth.issue_credential(self.pool, "secretariat", "secretariat",
                                                                label=f"simulate {self.run}"))[1]
        for service in ("intake", "routing", "referral"):
            self.http[service] = httpx.AsyncClient(base_url=self.url(service), timeout=60)
        # Decisions are what every synchronisation waits for: a short fetch wait. Referral events only
        # start receivers' work minutes later in event time: a long one spares the broker's CPU.
        self.consumer = await self._tail(self._decision_topic, self.settings.replay_fetch_wait_ms)
        self.referral_consumer = await self._tail(self._referral_topic, REFERRAL_FETCH_WAIT_MS)

    async def _tail(self, topic: str, fetch_wait_ms: int) -> AIOKafkaConsumer:
        """A group-less consumer of every partition of ``topic``, from its end."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=fetch_wait_ms, max_poll_records=5000)
        await consumer.start()
        tps = await assign_all_partitions(consumer, [topic])
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before the first event is sent
            await consumer.position(tp)
        return consumer

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()  # only after a failure: every synchronisation finishes it
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._background
        for consumer in (self.consumer, self.referral_consumer):
            if consumer is not None:
                await consumer.stop()
        for client in self.http.values():
            await client.aclose()
        if self.pool is not None:
            await self.pool.close()

    async def key(self, org: str, role: str = "partner", *, acts_for: list[str] | None = None) -> str:
        """The organisation's key for this replay. A replay is of a past period (the trial's weeks), so a
        partner key may back-fill; the telephony platform's acts for the desks' organisations."""
        if org not in self.keys:
            assert self.pool is not None
            extra = {"acts_for": acts_for or (), "backfill": True} if role == "partner" else {}
            self.keys[org] = (await auth.issue_credential(self.pool, org, role, label=f"simulate {self.run}",
                                                          **extra))[1]
        return self.keys[org]

    async def routing_desks(self) -> dict[str, Any]:
        answer = await _through_restarts(lambda: self.http["routing"].get("/v1/desks",
                                                                          headers=self._auth("secretariat")))
        answer.raise_for_status()
        return answer.json()

    async def routing_clock(self) -> datetime | None:
        at = (await self.routing_desks()).get("at")
        return datetime.fromisoformat(at) if at else None

    async def routing_order(self) -> str:
        """How routing applies what it reads: ``event_time`` lets the replay run ahead, verified."""
        return str((await self.routing_desks()).get("order", "arrival"))

    async def live_contacts(self) -> tuple[int, int]:
        """Routing's lines busy and contacts waiting now (``GET /v1/desks``, ``GET /v1/queues``)."""
        desks = await _through_restarts(lambda: self.http["routing"].get("/v1/desks",
                                                                         headers=self._auth("secretariat")))
        desks.raise_for_status()
        busy = sum(int(d.get("busy") or 0) for d in desks.json().get("desks", []))
        _, waiting = await self.routing_queues()
        return busy, len(waiting)

    async def apply_desks(self, document: dict[str, Any]) -> None:
        assert self.pool is not None
        await routing_store.apply_registry(self.pool, document)

    def _auth(self, org: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[org]}"}

    # --- Router ---------------------------------------------------------------------------

    async def send(self, events: list[Outgoing]) -> None:
        """POST the events to intake, each organisation's with its own key and in order.

        The telephony platform's events are what routing waits for: they go first, in event-time
        order, in as few requests as possible. The desks' consultation records go to other topics
        (referral and metrics read them, each by its own event time), so they are POSTed in the
        background meanwhile, finished by the end of the next synchronisation or send."""
        await self._finish_background()
        await self._post_runs([e for e in events if e.org == PLATFORM])
        others = sorted((e for e in events if e.org != PLATFORM), key=lambda e: e.org)  # stable: in order per org
        if others:
            self._background = asyncio.create_task(self._post_runs(others))

    async def _finish_background(self) -> None:
        task, self._background = self._background, None
        if task is not None:
            await task

    async def _post_runs(self, events: list[Outgoing]) -> None:
        # One request per run of the same organisation (at most max_batch_events), in order.
        i = 0
        while i < len(events):
            org = events[i].org
            j = i
            while j < len(events) and events[j].org == org and j - i < self.settings.max_batch_events:
                j += 1
            await self._post(org, [e.envelope for e in events[i:j]])
            i = j

    async def _post(self, org: str, envelopes: list[dict[str, Any]]) -> None:
        await self.key(org)
        body = json.dumps(envelopes, ensure_ascii=False)
        for _ in range(100):
            answer = await _through_restarts(lambda: self.http["intake"].post(
                "/v1/events", content=body,
                headers={**self._auth(org), "Content-Type": "application/cloudevents-batch+json"}))
            if answer.status_code == 429:
                await asyncio.sleep(float(answer.headers.get("Retry-After", "0.5")))
                continue
            answer.raise_for_status()
            result = answer.json()
            if result.get("rejected"):
                problems = [r for r in result["results"] if r["status"] == "rejected"][:3]
                raise RuntimeError(f"intake rejected {result['rejected']} simulated events: {problems}")
            return
        raise RuntimeError("intake kept answering 429")

    async def _drain(self, timeout_ms: int) -> int:
        assert self.consumer is not None and self.referral_consumer is not None
        for records in (await self.referral_consumer.getmany(timeout_ms=0)).values():
            for r in records:
                event = json.loads(r.value)
                if str(event.get("data", {}).get("contact_id", "")).startswith(self.run):
                    self._referrals.append(event)
        got = 0
        for records in (await self.consumer.getmany(timeout_ms=timeout_ms)).values():
            for r in records:
                event = json.loads(r.value)
                if not event.get("subject", "").startswith(self.run):
                    continue
                got += 1
                data = event.get("data", {})
                self._pending.append(Seen(
                    event["id"], event["type"].removeprefix("jp.tsunagu.").removesuffix(".v1"), event["subject"],
                    datetime.fromisoformat(event["time"]).timestamp() - self.t0,
                    data.get("desk_id"), data.get("organisation_id"), data.get("seat")))
        return got

    async def routing_queues(self) -> tuple[datetime | None, set[str]]:
        """Routing's clock and the contacts waiting in its queues, from ``GET /v1/queues``."""
        answer = await _through_restarts(lambda: self.http["routing"].get("/v1/queues",
                                                                          headers=self._auth("secretariat")))
        answer.raise_for_status()
        body = answer.json()
        waiting = {c["contact_id"] for q in body.get("queues", []) for c in q.get("contacts") or []}
        return (datetime.fromisoformat(body["at"]) if body.get("at") else None), waiting

    async def sync(self, until: float, expect: set[str], model: list[Seen]) -> list[Seen]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        clock_ok_at: float | None = None
        grace = 0.25  # after routing's clock reached the heartbeat: time for its outbox to publish
        last_check = started
        while True:
            got = await self._drain(self.settings.replay_fetch_wait_ms)
            arrived = {d.contact_id for d in self._pending if d.kind == "routing.assigned"}
            missing = expect - arrived
            if expect and not missing:
                break
            now = loop.time()
            if clock_ok_at is None and (not expect or now - last_check > CHECK_AFTER_S):
                last_check = now
                clock, waiting = await self.routing_queues()
                if clock is not None and clock.timestamp() - self.t0 >= until - 1e-6:
                    clock_ok_at = loop.time()
                    if missing and missing <= waiting:
                        # Routing has applied the heartbeat and still queues every contact it did not
                        # assign: it decided otherwise than the model. Only what it published on the
                        # way is still to come, not a decision about them.
                        grace = SETTLE_S
            elif clock_ok_at is not None and got:
                clock_ok_at = loop.time()  # still arriving: give the outbox another moment
            if clock_ok_at is not None and loop.time() - clock_ok_at > (grace if expect else SETTLE_S):
                break
            if now - started > 120:
                raise RuntimeError(f"routing did not reach {until:.0f} s of the replay in 120 s")
        await self._finish_background()
        out, self._pending = self._pending, []
        return out

    async def decisions(self, timeout_ms: int) -> list[Seen]:
        """Routing's decisions read since the last call (run ahead: the engine checks them)."""
        await self._finish_background_if_done()
        await self._drain(timeout_ms)
        out, self._pending = self._pending, []
        return out

    async def settled(self, until: float) -> bool:
        """Routing has applied everything up to ``until`` (its watermark reached it, nothing held),
        and every event of the replay has been sent."""
        await self._finish_background()
        desks = await self.routing_desks()
        mark = desks.get("watermark") or desks.get("at")
        return bool(mark) and datetime.fromisoformat(mark).timestamp() - self.t0 >= until - 1e-6 \
            and not desks.get("held")

    async def _finish_background_if_done(self) -> None:
        task = self._background
        if task is not None and task.done():
            self._background = None
            await task  # its exception, if any

    async def referral_events(self) -> list[dict[str, Any]]:
        out, self._referrals = self._referrals, []
        return out

    async def receiver_action(self, referral_id: str, receiver_id: str, action: str, body: dict | None) -> bool:
        await self.key(receiver_id, "receiver")
        answer = await _through_restarts(lambda: self.http["referral"].post(
            f"/v1/referrals/{referral_id}/{action}", json=body or {}, headers=self._auth(receiver_id)))
        if answer.status_code != 200:
            self.receiver_errors += 1  # e.g. escalated away meanwhile (409/404): the next receiver acts
            return False
        return True


def replay_week(scenario: Scenario, after: datetime | None) -> timedelta:
    """The shift (whole weeks) that puts the scenario after ``after`` in a week with no holiday."""
    weeks = 0
    if after is not None and after >= scenario.start:
        weeks = int((after - scenario.start).total_seconds() // (7 * 86400)) + 1
    while True:
        shift = timedelta(weeks=weeks)
        start = (scenario.start + shift).date()
        days = int(scenario.days) + 1
        if not any(jpholiday.is_holiday(start + timedelta(days=d)) for d in range(days)):
            return shift
        weeks += 1


async def replay_on_stack(scenario: Scenario, settings: Settings, bootstrap: str, database_url: str, *,
                          run: str | None = None, speed: float | None = None,
                          progress: Callable[[float], None] | None = None,
                          shift: timedelta | None = None,
                          before_start: Callable[[Engine], Awaitable[None]] | None = None) -> GroundTruth:
    """Replay ``scenario`` through the running services; returns the simulator's ground truth."""
    run = run or f"{scenario.name[:8]}{secrets.token_hex(2)}"
    probe = StackRouter(settings, bootstrap, database_url, run=run, t0=0.0)
    await probe.start()
    try:
        busy, waiting = await probe.live_contacts()
        if busy or waiting:
            # A replay moves to a week after routing's clock: a contact still live from before is one whose
            # caller and counsellor are gone (an interrupted replay). It would hold lines and queue places
            # the replay's callers need, and routing would decide otherwise than the replay's model.
            raise LeftoverContacts(
                f"routing still holds contacts of an earlier, interrupted replay ({busy} lines busy, {waiting} "
                "contacts waiting): replay on an empty stack — `tsunagu demo --fresh`, or `tsunagu down` and "
                f"remove {settings.home}/pgdata for the embedded PostgreSQL")
        # After routing's clock and after every desk version already stored (ours must be the newest).
        marks = [await probe.routing_clock()]
        pipeline = await probe.routing_order() == "event_time"
        marks += [r.effective_from for r in (await routing_store.load_registries(probe.pool))[1]]
    finally:
        await probe.close()
    if shift is None:
        shift = replay_week(scenario, max((m for m in marks if m is not None), default=None))
    router = StackRouter(settings, bootstrap, database_url, run=run, t0=(scenario.start + shift).timestamp())
    engine = Engine(scenario, router, run=run, shift=shift, speed=speed, progress=progress, pipeline=pipeline)
    await router.start()
    try:
        await router.apply_desks(engine.registry_document)
        await router.key(PLATFORM, acts_for=engine.desk_organisations)
        if before_start is not None:
            await before_start(engine)
        truth = await engine.run_replay()
    finally:
        await router.close()
    return truth
