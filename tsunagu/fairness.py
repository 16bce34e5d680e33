"""Fair shares of a saturated intake: per-organisation concurrency under a shared in-flight cap.

The token bucket (``tsunagu.ratelimit``) bounds how much a partner sends over time; it cannot keep
a partner that stays under its rate from filling a host that processes less than the sum of the
rates. This gate bounds what each organisation has *in progress* in one process at a time:

- at most ``per_org`` requests of one organisation are processed at once;
- at most ``limit`` requests of all organisations together; while other organisations wait for a
  slot, one organisation keeps at most ``max(1, limit // organisations present)`` of them, and a
  freed slot goes to the waiting organisation with the fewest requests in progress (max-min fair
  shares: a flood takes what the others leave, never their turn);
- a request that finds no slot waits at most ``wait`` seconds, behind at most ``queue`` others of its
  organisation; otherwise it is refused (the caller answers 429 with ``Retry-After``, storing nothing).

A waiting request costs no CPU, so a partner flooding with many connections mostly waits instead of
competing with the others for the event loop and the database. State is per process and holds only
organisations with a request in progress or waiting (at most one entry per open connection).

Slots bound how many requests run; precedence decides whose work runs first among them. A request is
*urgent* when its organisation has nothing else in progress or waiting and has sent no more than the
average organisation lately (events, decayed over ``USAGE_TAU_S``): a quiet partner's request, never a
flood's, even a flood of one connection sending batch after batch. While an urgent request is in
progress, everything else — a flood's batch between turns of validation, before it stores and before
it answers, the Kafka door's batches, the outbox's publishing — gives way at its next turn
(``give_way``) for at most ``GIVE_WAY_S`` each time: the quiet request waits behind at most one turn of
another's work instead of all of it, and a steady stream of urgent requests can slow the rest but never
stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends

# Lately: an organisation's events count with weight exp(-age / USAGE_TAU_S).
USAGE_TAU_S = 1.0
# How long non-urgent work waits for urgent requests at one turn, by default: a few urgent requests'
# worth (a single event takes ~5 ms here), so a flood's turn is delayed, never held
# (TSUNAGU_INTAKE_GIVE_WAY_S).
GIVE_WAY_S = 0.05


@dataclass
class _Org:
    active: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)
    turn: int = 0  # when it was last given a slot: ties go to the organisation served longest ago


class FairGate:
    """``await acquire(org)`` is True when the request may go ahead (then ``release(org)`` once it is
    done), False when it must be refused."""

    def __init__(self, limit: int, per_org: int, queue: int, wait: float, give_way_s: float = GIVE_WAY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit  # 0 = no gate at all
        self.per_org = min(per_org, limit) if limit else per_org
        self.queue = queue
        self.wait = wait
        self.active = 0
        self._orgs: dict[str, _Org] = {}
        self._queued: dict[str, _Org] = {}  # organisations with waiting requests, in order of arrival
        self._turns = itertools.count(1)
        self._clock = clock
        self.give_way_s = give_way_s
        self._usage: dict[str, tuple[float, float]] = {}  # organisation -> (decayed events, as of)
        self._urgent = 0  # urgent requests in progress
        self._no_urgent = asyncio.Event()
        self._no_urgent.set()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def usage(self, org: str) -> float:
        """``org``'s events lately (decayed)."""
        value, at = self._usage.get(org, (0.0, 0.0))
        return value * math.exp(-(self._clock() - at) / USAGE_TAU_S) if value else 0.0

    def charge(self, org: str, events: int) -> None:
        """Count ``events`` of ``org``'s (a request's, once its size is known). Organisations whose usage
        has decayed to nothing are forgotten on the way: at most one entry per active organisation."""
        now = self._clock()
        self._usage[org] = (self.usage(org) + events, now)
        if len(self._usage) > 1:
            for other, (value, at) in list(self._usage.items()):
                if value * math.exp(-(now - at) / USAGE_TAU_S) < 0.01:
                    del self._usage[other]

    def shared(self, org: str) -> bool:
        """Another organisation than ``org`` sent something lately (an event or more, decayed): work
        that can be cut into parts is, so that it goes in turns with theirs."""
        return any(other != org and self.usage(other) >= 1.0 for other in self._usage)

    def urgent_for(self, org: str) -> bool:
        """A request of ``org`` that gets a slot now is urgent: the organisation has nothing else in
        progress or waiting, and has sent no more than the average organisation lately (within an
        event)."""
        if org in self._orgs:
            return False
        if not self._usage:
            return True
        mean = sum(self.usage(o) for o in self._usage) / len(self._usage)
        return self.usage(org) <= mean + 1.0  # within one event of the average counts as average

    def begin_urgent(self) -> None:
        self._urgent += 1
        self._no_urgent.clear()

    def end_urgent(self) -> None:
        self._urgent -= 1
        if self._urgent == 0:
            self._no_urgent.set()

    async def give_way(self) -> None:
        """Work that is not urgent calls this at each turn: it returns at once unless an urgent request
        is in progress, then when none is, or after ``give_way_s`` seconds at the latest."""
        if self._urgent and self.give_way_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.give_way_s):
                    await self._no_urgent.wait()
        else:
            await asyncio.sleep(0)  # a turn for the others all the same

    def in_progress(self, org: str) -> int:
        state = self._orgs.get(org)
        return state.active if state else 0

    def _share(self, org: str) -> int:
        """Slots ``org`` may take now: its own bound when it is alone, else its fair part of the cap
        among the organisations with requests in progress or waiting."""
        return min(self.per_org, max(1, self.limit // len(self._orgs)))

    def _grant(self, org: str, state: _Org) -> None:
        state.active += 1
        self.active += 1
        state.turn = next(self._turns)

    async def acquire(self, org: str) -> bool:
        if not self.enabled:
            return True
        state = self._orgs.get(org)
        if state is None:
            state = self._orgs[org] = _Org()
        if not state.waiting and self.active < self.limit and state.active < self._share(org):
            self._grant(org, state)
            return True
        if len(state.waiting) >= self.queue or self.wait <= 0:
            self._forget(org, state)
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiting.append(waiter)
        self._queued.setdefault(org, state)
        try:
            async with asyncio.timeout(self.wait):
                await waiter
            return True
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # the slot was handed over just as the wait ended
                if isinstance(exc, TimeoutError):
                    return True
                self.release(org)
                raise
            self._leave(org, state, waiter)
            if isinstance(exc, TimeoutError):
                return False
            raise

    def release(self, org: str) -> None:
        if not self.enabled:
            return
        state = self._orgs[org]
        state.active -= 1
        self.active -= 1
        self._forget(org, state)
        self._dispatch()

    def _leave(self, org: str, state: _Org, waiter: asyncio.Future[None]) -> None:
        try:
            state.waiting.remove(waiter)
        except ValueError:
            pass
        if not state.waiting:
            self._queued.pop(org, None)
        self._forget(org, state)
        self._dispatch()  # one waiter fewer may raise the others' shares

    def _forget(self, org: str, state: _Org) -> None:
        if state.active == 0 and not state.waiting:
            self._orgs.pop(org, None)

    def _dispatch(self) -> None:
        """Hand free slots to waiting requests: first to the organisation with the fewest in progress."""
        while self.active < self.limit and self._queued:
            eligible = [(s.active, s.turn, org) for org, s in self._queued.items() if s.active < self._share(org)]
            if not eligible:
                return
            _, _, org = min(eligible)
            state = self._queued[org]
            waiter = state.waiting.popleft()
            if not state.waiting:
                del self._queued[org]
            if waiter.done():  # cancelled meanwhile; its task cleans up after itself
                continue
            self._grant(org, state)
            waiter.set_result(None)


class HeldSlot:
    """The slot one request holds, and whether it is urgent, given back however the request ends
    (``held_slot``)."""

    def __init__(self) -> None:
        self._held: tuple[FairGate, str] | None = None
        self._urgent_at: FairGate | None = None

    @property
    def urgent(self) -> bool:
        return self._urgent_at is not None

    def expedite(self, gate: FairGate, org: str) -> None:
        """Urgent from now on if a request of ``org`` would be: called before the request is
        authenticated, with the organisation its key was last seen to belong to, so that its credential
        lookup already goes first. Precedence only — who the caller is, and its slot, come after."""
        if self._urgent_at is None and gate.enabled and gate.urgent_for(org):
            self._urgent_at = gate
            gate.begin_urgent()

    async def take(self, gate: FairGate, org: str) -> bool:
        if self._held is not None:
            raise RuntimeError("this request already holds a slot")
        urgent = gate.enabled and gate.urgent_for(org)
        if not await gate.acquire(org):
            return False
        self._held = (gate, org)
        if urgent and self._urgent_at is None:
            self._urgent_at = gate
            gate.begin_urgent()
        return True

    def charge(self, events: int) -> None:
        """This request carries ``events`` events (its organisation's usage: ``FairGate.charge``)."""
        if self._held is not None:
            self._held[0].charge(self._held[1], events)

    async def give_way(self) -> None:
        """A turn of this request's work: an urgent request goes on; any other gives way to urgent ones."""
        if self._held is None or self.urgent:
            await asyncio.sleep(0)
        else:
            await self._held[0].give_way()

    def release(self) -> None:
        if self._urgent_at is not None:
            gate, self._urgent_at = self._urgent_at, None
            gate.end_urgent()
        if self._held is not None:
            gate, org = self._held
            self._held = None
            gate.release(org)


async def held_slot() -> AsyncIterator[HeldSlot]:
    """A FastAPI dependency (``FairSlot``): the route takes a slot when it knows the organisation; it
    is given back when the route returns or raises, before the answer is sent."""
    held = HeldSlot()
    try:
        yield held
    finally:
        held.release()


# A route's parameter: ``slot: FairSlot``.
FairSlot = Annotated[HeldSlot, Depends(held_slot, scope="function")]
