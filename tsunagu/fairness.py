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
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends


@dataclass
class _Org:
    active: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)
    turn: int = 0  # when it was last given a slot: ties go to the organisation served longest ago


class FairGate:
    """``await acquire(org)`` is True when the request may go ahead (then ``release(org)`` once it is
    done), False when it must be refused."""

    def __init__(self, limit: int, per_org: int, queue: int, wait: float) -> None:
        self.limit = limit  # 0 = no gate at all
        self.per_org = min(per_org, limit) if limit else per_org
        self.queue = queue
        self.wait = wait
        self.active = 0
        self._orgs: dict[str, _Org] = {}
        self._queued: dict[str, _Org] = {}  # organisations with waiting requests, in order of arrival
        self._turns = itertools.count(1)

    @property
    def enabled(self) -> bool:
        return self.limit > 0

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
    """The slot one request holds, released however the request ends (``held_slot``)."""

    def __init__(self) -> None:
        self._held: tuple[FairGate, str] | None = None

    async def take(self, gate: FairGate, org: str) -> bool:
        if self._held is not None:
            raise RuntimeError("this request already holds a slot")
        if not await gate.acquire(org):
            return False
        self._held = (gate, org)
        return True

    def release(self) -> None:
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
