"""What a board holds and the lookups every part of it needs: the registry versions in force, desks'
open hours and free lines, the queues, and the pending timers (``board`` applies events on top of it;
``lines`` and ``timers`` change it)."""

from __future__ import annotations

import bisect
import heapq
from datetime import datetime
from typing import NamedTuple

from services.routing.desks import Desk, Registry, is_open
from services.routing.domain.clock import EPOCH, MINUTE, board_time
from services.routing.domain.records import Contact, queue_entry
from services.routing.domain.streams import Streams


class Timer(NamedTuple):
    # A tuple, compared in C: the heap holds every pending timer (a forget timer per contact for an
    # hour), and a dataclass's generated __lt__ was most of the cost of pushing and popping them.
    # Timers due at the same moment fire in the order they were set (then by the contact's queue
    # number): all of it is in the contacts' state, so a restored board fires them as the live one.
    due: datetime
    set_at: datetime  # when it was set: queued (overflow), assigned (ring), received (forget)
    seq: int  # the contact's queue number (0 before it chose a field)
    kind: str  # overflow | ring | forget
    contact_id: str


class BoardState(Streams):
    """Desks, lines, queues and timers at one moment of event time (``Board`` is one)."""

    def __init__(self, registries: list[Registry] | None = None, *, track_changes: bool = False) -> None:
        super().__init__()
        self.registries: list[Registry] = []
        self.clock: datetime | None = None
        self.contacts: dict[str, Contact] = {}
        self.busy: dict[str, set[str]] = {}  # desk id -> contact ids holding one of its lines
        self.idle_since: dict[str, datetime] = {}  # desk id -> when it last released a line
        self.next_seq = 1
        self._queues: dict[str, list[tuple[int, float, int, str]]] = {}  # field -> sorted queue_entry()s
        self._timers: list[Timer] = []
        self._minute_due: datetime | None = None  # the pending "minute" timer, while anyone waits
        self._open_cache: tuple[datetime | None, dict[str, bool]] = (None, {})
        self._arriving: str | None = None  # the contact whose own arrival is being dispatched
        self._event_at: datetime = EPOCH  # the event time of the event being applied
        # Contacts changed since take_changes(): what a save writes. Off unless asked for, so that a
        # long replay that never saves does not collect every contact id it ever saw.
        self._changed: set[str] | None = set() if track_changes else None
        self.set_registries(registries or [])

    # --- registry -------------------------------------------------------------------------

    def set_registries(self, registries: list[Registry]) -> None:
        self.registries = sorted(registries, key=lambda r: (r.effective_from, r.version))
        self._starts = [board_time(r.effective_from) for r in self.registries]
        self._open_cache = (None, {})
        # Registry.desks builds a new tuple per call; the board asks for it per event.
        self._desks = {id(r): r.desks for r in self.registries}

    def desks_of(self, registry: Registry) -> tuple[Desk, ...]:
        desks = self._desks.get(id(registry))
        return desks if desks is not None else registry.desks

    def registry_at(self, at: datetime | None) -> Registry | None:
        if at is None:
            return None
        i = bisect.bisect_right(self._starts, at)  # the last version in effect (the newest of a moment's)
        return self.registries[i - 1] if i else None

    def _is_open(self, desk: Desk, at: datetime) -> bool:
        when, cache = self._open_cache
        if when != at:
            cache = {}
            self._open_cache = (at, cache)
        if desk.id not in cache:
            cache[desk.id] = is_open(desk, at)
        return cache[desk.id]

    # --- lines and queues -----------------------------------------------------------------

    def free_lines(self, desk: Desk) -> int:
        return max(0, desk.lines - len(self.busy.get(desk.id, ())))

    def queue_position(self, contact: Contact) -> int:
        q = self._queues.get(contact.field or "", [])
        return bisect.bisect_left(q, queue_entry(contact)) + 1

    # --- timers (timers.py fires them) ------------------------------------------------------

    def next_timer_due(self) -> datetime | None:
        """When the earliest pending timer (overflow, ring timeout) falls due, if any. A timer
        that turns out to have nothing to do when it fires is dropped then."""
        return self._timers[0].due if self._timers else None

    def _push_timer(self, due: datetime, set_at: datetime, kind: str, c: Contact) -> None:
        heapq.heappush(self._timers, Timer(due, set_at, c.seq, kind, c.contact_id))

    def _watch_the_clock(self, at: datetime) -> None:
        """While anyone waits, a timer at every whole minute: desks open and close on whole minutes
        (their hours are HH:MM), so a desk opening finds its waiting contacts at that very moment —
        not at whichever event or heartbeat comes next, which would make the decision depend on when
        events happen to be read."""
        if self._minute_due is None:
            # After the clock, not after ``at``: a timer that fires late (after a jump) must not set a
            # minute timer for every minute it missed.
            after = at if self.clock is None or at > self.clock else self.clock
            self._minute_due = after.replace(second=0, microsecond=0) + MINUTE
            heapq.heappush(self._timers, Timer(self._minute_due, self._minute_due, 0, "minute", ""))
