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
from services.routing.domain.records import Contact, Entry, QueueKey, queue_entry, queue_key
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
        self.busy: dict[str, set[str]] = {}  # desk id -> contact ids holding one of its lines or seats
        self.on_lines: dict[str, int] = {}  # desk id -> calls on its phone lines
        self.seat_load: dict[str, dict[int, int]] = {}  # desk id -> seat -> conversations on it
        self.seat_calls: dict[str, set[int]] = {}  # desk id -> seats holding a call (blended desks)
        self.idle_since: dict[str, datetime] = {}  # desk id -> when it last released a line
        self.next_seq = 1
        self._queues: dict[QueueKey, list[Entry]] = {}  # (field, channel) -> sorted queue_entry()s
        self._timers: list[Timer] = []
        self._minute_due: datetime | None = None  # the pending "minute" timer, while anyone waits
        self._open_cache: tuple[datetime | None, dict[str, bool]] = (None, {})
        self._arriving: str | None = None  # the contact whose own arrival is being dispatched
        self._event_at: datetime = EPOCH  # the event time of the event being applied
        self._sender: str | None = None  # the organisation that sent it, when known
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
        """Phone lines free (seats a blended desk could give a call are not counted here)."""
        return max(0, desk.lines - self.on_lines.get(desk.id, 0))

    def free_conversations(self, desk: Desk) -> int:
        """Conversations the desk's seats could still take (seats on a call take none)."""
        loads = self.seat_load.get(desk.id, {})
        calls = self.seat_calls.get(desk.id, ())
        return sum(max(0, desk.conversations_per_seat - loads.get(k, 0))
                   for k in range(1, desk.seats + 1) if k not in calls)

    def place_for(self, desk: Desk, channel: str) -> int | None:
        """Where the desk would put a contact of ``channel`` now: 0 for a phone line, a seat number, or
        None when it has no room. A call takes a free line, else (blended desks) a seat holding nothing;
        a chat takes the least-loaded seat with room (the lowest number among equals). The cost follows
        the seats in use, not the seats the desk has."""
        if channel == "phone":
            if desk.lines > self.on_lines.get(desk.id, 0):
                return 0
            return self._empty_seat(desk) if desk.blended else None
        if not desk.seats or channel not in desk.seat_channels:
            return None
        empty = self._empty_seat(desk)
        if empty is not None:
            return empty
        loads = self.seat_load.get(desk.id, {})
        best = min(((load, k) for k, load in loads.items() if k <= desk.seats and load < desk.conversations_per_seat),
                   default=None)
        return best[1] if best is not None else None

    def _empty_seat(self, desk: Desk) -> int | None:
        """The lowest-numbered seat holding nothing, if any."""
        loads = self.seat_load.get(desk.id, {})
        calls = self.seat_calls.get(desk.id, ())
        used = sum(1 for k in loads if k <= desk.seats) + sum(1 for k in calls if k <= desk.seats)
        if used >= desk.seats:
            return None
        k = 1
        while k in loads or k in calls:
            k += 1
        return k

    def occupy(self, c: Contact, desk_id: str, seat: int) -> None:
        """``c`` takes a place at the desk: a line (seat 0) or the seat ``seat``."""
        self.busy.setdefault(desk_id, set()).add(c.contact_id)
        c.desk_id = desk_id
        c.seat = seat or None
        if not seat:
            self.on_lines[desk_id] = self.on_lines.get(desk_id, 0) + 1
        elif c.channel == "phone":
            self.seat_calls.setdefault(desk_id, set()).add(seat)
        else:
            loads = self.seat_load.setdefault(desk_id, {})
            loads[seat] = loads.get(seat, 0) + 1

    def vacate(self, c: Contact) -> None:
        """``c`` leaves its line or seat (its desk's counters follow)."""
        desk_id = c.desk_id
        if desk_id is None:
            return
        holders = self.busy.get(desk_id)
        if holders is not None and c.contact_id in holders:
            holders.discard(c.contact_id)
            if not holders:
                del self.busy[desk_id]
            if c.seat is None:
                self.on_lines[desk_id] -= 1
                if not self.on_lines[desk_id]:
                    del self.on_lines[desk_id]
            elif c.channel == "phone":
                self.seat_calls[desk_id].discard(c.seat)
                if not self.seat_calls[desk_id]:
                    del self.seat_calls[desk_id]
            else:
                loads = self.seat_load[desk_id]
                loads[c.seat] -= 1
                if not loads[c.seat]:
                    del loads[c.seat]
                if not loads:
                    del self.seat_load[desk_id]
        c.desk_id = None
        c.seat = None

    def queue_position(self, contact: Contact) -> int:
        q = self._queues.get(queue_key(contact), [])
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
