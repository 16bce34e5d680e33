"""routing's rules, pure: the board of desks, lines and queues, and every assignment decision.

``Board.apply(kind, at, data)`` takes one canonical contact event and returns the decisions it
causes (``routing.assigned`` / ``queued`` / ``overflowed`` / ``withdrawn``). No I/O, no clock:
the caller hands in the event's time.

**Time.** The board's clock is the greatest event time it has applied; it never goes back. An
event older than the clock is applied at the clock. Timers (a queued contact's overflow to tier-2
desks, a ringing assignment's withdrawal) fire in order, each at its own due time, but only once
every stream of events has passed it: routing reads ``contact.events`` partition by partition, so
one partition's later events can be read before another's earlier ones (an answer on one
partition behind a heartbeat on another must not be taken for a ring timeout). ``observe(stream,
at)`` records how far each stream (partition) has been read; the **watermark** is the least of
those marks, and a timer fires when the watermark passes its due time. A board fed by ``apply``
alone has one implicit stream, whose watermark is its clock.

Two ways to apply what is read (``routing_order`` in settings):
- *arrival* (live service): each event is applied as soon as it is read — an assignment never
  waits for other partitions — and only the timers wait for the watermark;
- *event time* (replays): each event is held (``hold``) until the watermark passes its time, then
  applied in event-time order across streams (``release``), each stream's own order kept. The
  decisions are then exactly those of the events applied in order, whatever order the partitions
  were read in, which is what a replay checking routing against its own model needs.

When no contact arrives, time advances by the ``platform.heartbeat`` events that partners'
telephony and chat platforms send every few seconds (5 s suggested), which intake publishes to
every partition so that every stream's mark moves; without any event routing's time stands still,
which is what an accelerated or paused replay needs.

**A jump in time.** Time may jump: a platform whose clock is wrong, or live heartbeats after a
replay of a past period. When the limit the timers may fire up to (the watermark, or the event's
time) is more than ``GAP`` (one hour) past the clock, the clock first moves to ``limit - GAP``, and
every timer due before that fires there, late, once: a ringing contact is withdrawn once and
re-routed at that moment, a waiting one overflows once, and the minute timer resumes after the
clock — nothing is re-rung every ring timeout across the gap. Within the last ``GAP`` every timer
fires at its own time, as always. So a board never left more than ``GAP`` without an event decides
exactly as one ticked at every timer (what a replay checking routing against this board as its
model relies on), and the work a jump costs is bounded by ``GAP``, not by the jump.

**Ahead of the wall clock.** The board has no wall clock; routing's handler (handlers.py) has one,
and keeps event times that run ahead of it off the board: an event whose time is more than
``routing_max_clock_lead_s`` (settings) ahead of routing's wall clock moves nothing by its own time.
A ``platform.heartbeat`` that far ahead is ignored: it moves no stream's mark and not the clock. A
contact event that far ahead is applied at the wall clock plus that lead, and its stream's mark
moves no further: its caller is real, and a contact event set aside could leave a caller unrouted
or a line booked forever (a lost ``contact.ended``). So one platform that runs ahead moves the
watermark and the clock at most that lead past the wall clock, however far ahead it runs. A replay
of a past period has every event time behind the wall clock: nothing of it is touched.

**Rules.**
- A contact that chose a field goes to an open tier-1 desk serving the field with a free line:
  preferring a desk whose regions include the caller's prefecture, then the desk idle longest
  (its last line released earliest; a line released before the registry version in force took
  effect counts as released at that moment, so a new version starts every desk level), then the
  desk id. Otherwise it queues.
- Queues are per field, ordered by priority (the version's ``priority_fields``, highest first)
  and then by arrival (FIFO). A desk serving several fields takes the best-ranked contact across
  them.
- Work conservation: after every event, no contact waits while a line that qualifies for it is
  free (an open desk serving its field, tier 1 — or tier 2 once it has overflowed).
- Overflow: after the field's ``overflow_after_s`` in the queue a contact becomes eligible for
  tier-2 desks too (``routing.overflowed``).
- Ring timeout: an assignment not answered within ``ring_timeout_s`` is withdrawn
  (``routing.withdrawn``), its line released, and the contact goes back to its place in the
  queue (it keeps its arrival rank) and is re-routed at once if a line qualifies — to another
  desk of the same tier when one has a free line, else to the same desk again.
- A line is released by ``contact.ended`` or ``contact.abandoned``; ``contact.answered`` turns a
  ringing assignment into a talk (no more ring timeout).
- Registry versions are effective-dated: at each moment the newest version in effect decides.
  Contacts on a desk that a new version shrinks or removes keep their line until they end; no
  new contact is given to a desk while it holds as many contacts as the version gives it lines.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

from schemas import RoutingAssigned, RoutingOverflowed, RoutingQueued, RoutingWithdrawn, event_type
from schemas.timezone import JST
from services.routing.desks import Desk, Registry, is_open

State = Literal["received", "waiting", "ringing", "talking"]
Reason = Literal["free_line", "line_freed", "overflow", "rerouted"]


@dataclass(frozen=True)
class Decision:
    """One event routing publishes: its short type, its event time and its data."""

    kind: str  # routing.assigned, routing.queued, routing.overflowed, routing.withdrawn
    at: datetime
    data: BaseModel

    @property
    def contact_id(self) -> str:
        contact_id: str = self.data.contact_id  # type: ignore[attr-defined]  # every routing event's data has one
        return contact_id


@dataclass
class Contact:
    contact_id: str
    prefecture: str | None = None
    field: str | None = None
    state: State = "received"
    priority: int = 0
    seq: int = 0  # tie-break of the queue order; kept when an assignment is withdrawn
    arrived: float = 0.0  # the field choice's own event time (POSIX seconds): the FIFO order
    queued_at: datetime | None = None
    overflow_at: datetime | None = None
    overflowed: bool = False
    rerouted: bool = False
    withdrawn_from: str | None = None  # the desk that let it ring out: offered elsewhere first
    received_at: datetime | None = None
    desk_id: str | None = None
    assigned_at: datetime | None = None
    ring_deadline: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        # Times as POSIX seconds: this runs for every contact on the board once per batch.
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if v is None or v is False:
                continue
            out[k] = v.timestamp() if type(v) is datetime else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Contact:
        c = cls(**d)
        for name in _TIMES:
            value = getattr(c, name)
            if isinstance(value, (int, float)):
                setattr(c, name, datetime.fromtimestamp(value, JST))
        return c


_TIMES = ("queued_at", "overflow_at", "assigned_at", "ring_deadline", "received_at")
# A contact that never chose a field (and whose end was never reported) is dropped after this.
FORGET_UNROUTED_AFTER = timedelta(hours=1)


class _Timer(NamedTuple):
    # A tuple, compared in C: the heap holds every pending timer (a forget timer per contact for an
    # hour), and a dataclass's generated __lt__ was most of the cost of pushing and popping them.
    # Timers due at the same moment fire in the order they were set (then by the contact's queue
    # number): all of it is in the contacts' state, so a restored board fires them as the live one.
    due: datetime
    set_at: datetime  # when it was set: queued (overflow), assigned (ring), received (forget)
    seq: int  # the contact's queue number (0 before it chose a field)
    kind: str  # overflow | ring | forget
    contact_id: str


class Held(NamedTuple):
    """An event read but not applied yet (event-time order): it waits for the watermark."""

    at: datetime
    kind: str  # short type
    data: BaseModel
    ident: tuple[str, str]  # (source, id): what the decisions it causes are named after

    def as_dict(self, stream: str) -> dict[str, Any]:
        return {"stream": stream, "at": self.at.isoformat(), "kind": self.kind, "ident": list(self.ident),
                "data": self.data.model_dump(mode="json", exclude_none=True)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Held:
        data = event_type(d["kind"]).data_model.model_validate(d["data"])
        return cls(_time(d["at"]), d["kind"], data, (d["ident"][0], d["ident"][1]))


class Board:
    """Desks, lines and queues at one moment of event time; ``apply`` moves it forward."""

    def __init__(self, registries: list[Registry] | None = None, *, track_changes: bool = False) -> None:
        self.registries: list[Registry] = []
        self.clock: datetime | None = None
        self.contacts: dict[str, Contact] = {}
        self.busy: dict[str, set[str]] = {}  # desk id -> contact ids holding one of its lines
        self.idle_since: dict[str, datetime] = {}  # desk id -> when it last released a line
        self.next_seq = 1
        self.marks: dict[str, datetime] = {}  # stream (partition) -> the latest event time read from it
        self.streams: frozenset[str] = frozenset()  # every stream there is (the topic's partitions), if known
        self.held: dict[str, deque[Held]] = {}  # stream -> events read, not applied yet, in read order
        self._watermark: datetime | None = None  # the least mark, kept while no mark moves (see watermark)
        self._watermark_stale = True
        self._queues: dict[str, list[tuple[int, float, int, str]]] = {}  # field -> sorted _entry()s
        self._timers: list[_Timer] = []
        self._minute_due: datetime | None = None  # the pending "minute" timer, while anyone waits
        self._open_cache: tuple[datetime | None, dict[str, bool]] = (None, {})
        self._arriving: str | None = None  # the contact whose own arrival is being dispatched
        self._event_at: datetime = _EPOCH  # the event time of the event being applied
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

    # --- queries --------------------------------------------------------------------------

    def waiting(self, field_code: str | None = None) -> list[Contact]:
        """Waiting contacts in queue order (one field's, or all fields' merged)."""
        if field_code is not None:
            return [self.contacts[e[-1]] for e in self._queues.get(field_code, [])]
        merged = sorted(entry for q in self._queues.values() for entry in q)
        return [self.contacts[e[-1]] for e in merged]

    def free_lines(self, desk: Desk) -> int:
        return max(0, desk.lines - len(self.busy.get(desk.id, ())))

    def lines_by_field(self) -> dict[str, tuple[int, int]]:
        """Per field, (lines open now, of them free) over the desks open at the board's clock. A
        desk serving several fields counts in each of them."""
        registry = self.registry_at(self.clock)
        if registry is None or self.clock is None:
            return {}
        lines: dict[str, tuple[int, int]] = {}
        for desk in self.desks_of(registry):
            if self._is_open(desk, self.clock):
                for code in desk.fields:
                    total, free = lines.get(code, (0, 0))
                    lines[code] = (total + desk.lines, free + self.free_lines(desk))
        return lines

    def qualifying_free_desks(self, contact: Contact, at: datetime | None = None) -> list[Desk]:
        """Desks with a free line that may take ``contact`` now (open, its field, its tier)."""
        at = at or self.clock
        registry = self.registry_at(at)
        if registry is None or contact.field is None or at is None:
            return []
        return [
            d for d in self.desks_of(registry)
            if d.serves(contact.field) and (d.tier == 1 or contact.overflowed)
            and self.free_lines(d) > 0 and self._is_open(d, at)
        ]

    def queue_position(self, contact: Contact) -> int:
        q = self._queues.get(contact.field or "", [])
        return bisect.bisect_left(q, _entry(contact)) + 1

    # --- the one entry point ----------------------------------------------------------------

    def apply(self, kind: str, at: datetime, data: BaseModel) -> list[Decision]:
        """Apply one canonical event (short type, event time, data); returns the decisions. The
        timers due up to its time fire first — those the watermark has passed, when streams are
        observed."""
        out: list[Decision] = []
        at = board_time(at)
        now = self._advance(at, out)
        handler = _HANDLERS.get(kind)
        self._event_at = at
        if handler is not None:
            if self._changed is not None:
                self._changed.add(data.contact_id)  # type: ignore[attr-defined]
            handler(self, now, data, out)
        self._dispatch(now, out)
        return out

    def tick(self, at: datetime) -> list[Decision]:
        """Let time pass to ``at`` with no event (what a heartbeat does): the timers due by then
        fire (those the watermark has passed, when streams are observed)."""
        out: list[Decision] = []
        now = self._advance(board_time(at) if at is not None else at, out)
        self._dispatch(now, out)
        return out

    # --- order across streams -------------------------------------------------------------

    def observe(self, stream: str, at: datetime) -> bool:
        """``stream`` (a partition) has been read up to an event at ``at``; returns whether its mark
        moved. Idempotent: a record read twice moves nothing. A heartbeat's copies on the other
        partitions are duplicates of one event, applied once, but each moves its stream's mark."""
        mark = self.marks.get(stream)
        if mark is None or at > mark:
            self.marks[stream] = board_time(at)
            self._watermark_stale = True
            return True
        return False

    def expect(self, streams: frozenset[str]) -> None:
        """Every stream there is: until each has been read, there is no watermark (a stream never read
        may hold anything)."""
        if streams != self.streams:
            self.streams = streams
            self._watermark_stale = True

    @property
    def watermark(self) -> datetime | None:
        """The least of the streams' marks: every stream has been read past it. None before every
        expected stream has been read. Worked out again only after a mark moved (``observe``): the board
        asks for it before every event it applies."""
        if self._watermark_stale:
            marks = self.marks
            complete = marks and all(stream in marks for stream in self.streams)
            self._watermark = min(marks.values()) if complete else None
            self._watermark_stale = False
        return self._watermark

    def hold(self, stream: str, ident: tuple[str, str], kind: str, at: datetime, data: BaseModel) -> None:
        """Keep an event read from ``stream`` until the watermark passes its time (``release``)."""
        self.held.setdefault(stream, deque()).append(Held(board_time(at), kind, data, ident))

    def release(self, *, everything: bool = False) -> list[Held]:
        """The held events the watermark has passed (or all of them), to apply in this order: merged
        across streams by event time, each stream's read order kept (an event behind a later one of
        its own stream waits for it)."""
        limit = self.watermark
        heads = [(q[0].at, stream) for stream, q in self.held.items() if q]
        heapq.heapify(heads)
        out: list[Held] = []
        while heads and (everything or (limit is not None and heads[0][0] <= limit)):
            _, stream = heapq.heappop(heads)
            q = self.held[stream]
            out.append(q.popleft())
            if q:
                heapq.heappush(heads, (q[0].at, stream))
            else:
                del self.held[stream]
        return out

    # --- time -----------------------------------------------------------------------------

    def next_timer_due(self) -> datetime | None:
        """When the earliest pending timer (overflow, ring timeout) falls due, if any. A timer
        that turns out to have nothing to do when it fires is dropped then."""
        return self._timers[0].due if self._timers else None

    def _advance(self, at: datetime, out: list[Decision]) -> datetime:
        """Fire the timers due by ``at`` that the watermark has passed; move the clock to ``at``
        (never back); returns the clock."""
        limit: datetime | None = at
        if self.marks:
            watermark = self.watermark
            limit = None if watermark is None else min(at, watermark)
        if limit is not None and self.clock is not None and limit - self.clock > GAP:
            # A jump: what fell due more than GAP before the limit fires late, once, at its start
            # (module docstring), instead of every ring timeout and minute being lived through.
            self.clock = limit - GAP
        while self._timers and limit is not None and self._timers[0].due <= limit:
            timer = heapq.heappop(self._timers)
            late = self.clock is not None and timer.due < self.clock
            if not late:
                self.clock = timer.due
            fired = self._fire(timer, out)
            if fired:
                # a timer that fires late (the watermark lagged the clock) re-routes at the clock:
                # lines and desks' hours are as of now
                self._dispatch(self.clock if late else timer.due, out)  # type: ignore[arg-type]
        if self.clock is None or at > self.clock:
            self.clock = at
        return self.clock

    def _push_timer(self, due: datetime, set_at: datetime, kind: str, c: Contact) -> None:
        heapq.heappush(self._timers, _Timer(due, set_at, c.seq, kind, c.contact_id))

    def _watch_the_clock(self, at: datetime) -> None:
        """While anyone waits, a timer at every whole minute: desks open and close on whole minutes
        (their hours are HH:MM), so a desk opening finds its waiting contacts at that very moment —
        not at whichever event or heartbeat comes next, which would make the decision depend on when
        events happen to be read."""
        if self._minute_due is None:
            # After the clock, not after ``at``: a timer that fires late (after a jump) must not set a
            # minute timer for every minute it missed.
            after = at if self.clock is None or at > self.clock else self.clock
            self._minute_due = after.replace(second=0, microsecond=0) + _MINUTE
            heapq.heappush(self._timers, _Timer(self._minute_due, self._minute_due, 0, "minute", ""))

    def _fire(self, timer: _Timer, out: list[Decision]) -> bool:
        if timer.kind == "minute":
            if timer.due != self._minute_due:
                return False
            self._minute_due = None
            if self._queues:
                self._watch_the_clock(timer.due)
            return True  # dispatch at the minute
        c = self.contacts.get(timer.contact_id)
        if c is None or (c.field is None and timer.kind != "forget"):
            return False
        if self._changed is not None:
            self._changed.add(c.contact_id)
        if timer.kind == "overflow":
            if c.state != "waiting" or c.overflowed or c.overflow_at != timer.due:
                return False
            c.overflowed = True
            waited = (timer.due - c.queued_at).total_seconds() if c.queued_at else 0.0
            out.append(Decision("routing.overflowed", timer.due, RoutingOverflowed(
                contact_id=c.contact_id, field=c.field, waited_seconds=max(0.0, waited), tier=2)))
            return True
        if timer.kind == "forget":
            due = c.received_at + FORGET_UNROUTED_AFTER if c.received_at is not None else None
            if c.state == "received" and due == timer.due:
                del self.contacts[c.contact_id]
            return False
        if timer.kind == "ring":
            if c.state != "ringing" or c.ring_deadline != timer.due or c.desk_id is None:
                return False
            desk_id = c.desk_id
            organisation = self._organisation_of(desk_id, timer.due)
            ringing = (timer.due - c.assigned_at).total_seconds() if c.assigned_at else 0.0
            self._release(c, timer.due)
            out.append(Decision("routing.withdrawn", timer.due, RoutingWithdrawn(
                contact_id=c.contact_id, desk_id=desk_id, organisation_id=organisation, field=c.field,
                reason="ring_timeout", ring_seconds=max(0.0, ringing))))
            c.rerouted = True
            c.withdrawn_from = desk_id
            self._enqueue(c, timer.due)
            if not c.overflowed and c.overflow_at is not None:
                # waiting again: it overflows at its time (at once if that has passed while it rang),
                # as a board restored now would have it
                self._push_timer(c.overflow_at, c.queued_at or c.overflow_at, "overflow", c)
            return True
        return False

    def _organisation_of(self, desk_id: str, at: datetime) -> str:
        for registry in [self.registry_at(at), *reversed(self.registries)]:
            if registry is None:
                continue
            for d in self.desks_of(registry):
                if d.id == desk_id:
                    return d.organisation_id
        return "unknown"

    # --- events ---------------------------------------------------------------------------

    def _on_received(self, now: datetime, data: Any, out: list[Decision]) -> None:
        c = self.contacts.setdefault(data.contact_id, Contact(data.contact_id))
        c.prefecture = data.prefecture
        if c.state == "received":
            # A caller who hangs up in the voice menu may never be reported: forget them later.
            c.received_at = now
            self._push_timer(now + FORGET_UNROUTED_AFTER, now, "forget", c)

    def _on_field_selected(self, now: datetime, data: Any, out: list[Decision]) -> None:
        c = self.contacts.setdefault(data.contact_id, Contact(data.contact_id))
        if c.state != "received":
            return  # already routed: a second choice does not re-route a contact
        registry = self.registry_at(now)
        c.field = data.field.value if hasattr(data.field, "value") else str(data.field)
        c.priority = registry.rules.priority(c.field) if registry else 0
        c.seq = self.next_seq
        self.next_seq += 1
        # FIFO by the caller's own choice time, so that contacts on partitions read in a different
        # order (or by another instance) still queue in the order they chose; the wait runs from now.
        c.arrived = self._event_at.timestamp()
        c.queued_at = now
        overflow_after = registry.rules.overflow_after(c.field) if registry else 30.0
        c.overflow_at = now + timedelta(seconds=overflow_after)
        self._enqueue(c, now)
        self._push_timer(c.overflow_at, now, "overflow", c)
        self._arriving = c.contact_id
        try:
            self._dispatch(now, out)
        finally:
            self._arriving = None
        # _dispatch may have moved c on (mypy keeps the state narrowed from before the call)
        if c.state == "waiting":  # type: ignore[comparison-overlap]
            out.append(Decision("routing.queued", now, RoutingQueued(
                contact_id=c.contact_id, field=c.field, queue_position=self.queue_position(c), priority=c.priority)))

    def _on_answered(self, now: datetime, data: Any, out: list[Decision]) -> None:
        c = self.contacts.get(data.contact_id)
        if c is None:
            return
        if c.state == "ringing":
            c.state = "talking"
            c.ring_deadline = None
        elif c.state == "waiting":
            # The platform connected it although routing had it queued (e.g. an answer that
            # arrived after a withdrawal): it is talking now; it takes a line only if one is free.
            self._dequeue(c)
            c.state = "talking"
            desk = self._desk(data.desk_id, now)
            if desk is not None and self.free_lines(desk) > 0:
                c.desk_id = desk.id
                c.assigned_at = now
                self.busy.setdefault(desk.id, set()).add(c.contact_id)

    def _on_finished(self, now: datetime, data: Any, out: list[Decision]) -> None:
        c = self.contacts.pop(data.contact_id, None)
        if c is None:
            return
        if c.state == "waiting":
            self._dequeue(c)
        elif c.desk_id is not None:
            self._release(c, now)

    def _desk(self, desk_id: str, at: datetime) -> Desk | None:
        registry = self.registry_at(at)
        if registry is None:
            return None
        return next((d for d in self.desks_of(registry) if d.id == desk_id), None)

    # --- queues and lines -----------------------------------------------------------------

    def _enqueue(self, c: Contact, now: datetime) -> None:
        c.state = "waiting"
        bisect.insort(self._queues.setdefault(c.field or "", []), _entry(c))
        self._watch_the_clock(now)

    def _dequeue(self, c: Contact) -> None:
        q = self._queues.get(c.field or "", [])
        i = bisect.bisect_left(q, _entry(c))
        if i < len(q) and q[i][-1] == c.contact_id:
            q.pop(i)
        if not q:
            self._queues.pop(c.field or "", None)

    def _release(self, c: Contact, now: datetime) -> None:
        if c.desk_id is not None:
            holders = self.busy.get(c.desk_id)
            if holders is not None:
                holders.discard(c.contact_id)
                if not holders:
                    del self.busy[c.desk_id]
            self.idle_since[c.desk_id] = now
        c.desk_id = None
        c.ring_deadline = None
        c.assigned_at = None

    def _dispatch(self, now: datetime, out: list[Decision]) -> None:
        """Give free qualifying lines to waiting contacts, best-ranked contact first."""
        if not self._queues:
            return
        registry = self.registry_at(now)
        if registry is None:
            return
        while self._queues:
            free = [d for d in self.desks_of(registry) if self.free_lines(d) > 0 and self._is_open(d, now)]
            if not free:
                return
            best: tuple[tuple[int, float, int, str], Contact, list[Desk]] | None = None
            for field_code, q in self._queues.items():
                tier1 = [d for d in free if d.tier == 1 and d.serves(field_code)]
                tier2 = [d for d in free if d.tier != 1 and d.serves(field_code)]
                if not tier1 and not tier2:
                    continue
                for entry in q:
                    if best is not None and entry >= best[0]:
                        break
                    c = self.contacts[entry[-1]]
                    candidates = tier1 + tier2 if c.overflowed else tier1
                    if candidates:
                        best = (entry, c, candidates)
                        break
            if best is None:
                return
            entry, c, candidates = best
            desk = min(candidates, key=lambda d: (
                d.tier,
                d.id == c.withdrawn_from,
                0 if c.prefecture is not None and c.prefecture in d.regions else 1,
                # idle since it last released a line, or since the registry version in force took
                # effect: a new version (a new network) starts every desk level
                max(self.idle_since.get(d.id, _EPOCH), registry.effective_from),
                d.id,
            ))
            self._assign(c, desk, registry, now, out)

    def _assign(self, c: Contact, desk: Desk, registry: Registry, now: datetime, out: list[Decision]) -> None:
        position = self.queue_position(c)
        self._dequeue(c)
        if c.contact_id == self._arriving:
            reason: Reason = "free_line"
        elif c.rerouted:
            reason = "rerouted"
        elif desk.tier != 1:
            reason = "overflow"
        else:
            reason = "line_freed"
        if self._changed is not None:
            self._changed.add(c.contact_id)
        c.state = "ringing"
        c.desk_id = desk.id
        c.assigned_at = now
        c.ring_deadline = now + timedelta(seconds=registry.rules.ring_timeout_s)
        self._push_timer(c.ring_deadline, now, "ring", c)
        self.busy.setdefault(desk.id, set()).add(c.contact_id)
        out.append(Decision("routing.assigned", now, RoutingAssigned(
            contact_id=c.contact_id, desk_id=desk.id, organisation_id=desk.organisation_id, field=c.field,
            reason=reason, queue_position=None if reason == "free_line" else position)))

    # --- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything that is not the registry, as JSON-ready data (``restore`` reads it back)."""
        return {**self.snapshot_header(), "contacts": [c.as_dict() for c in self.contacts.values()]}

    def snapshot_header(self) -> dict[str, Any]:
        """The snapshot without its contacts: what a save writes every time (it is small)."""
        return {
            "clock": self.clock.isoformat() if self.clock else None,
            "next_seq": self.next_seq,
            "idle_since": {k: v.isoformat() for k, v in sorted(self.idle_since.items())},
            "minute_due": self._minute_due.isoformat() if self._minute_due else None,
            "marks": {k: v.isoformat() for k, v in sorted(self.marks.items())},
            "held": [h.as_dict(stream) for stream, q in self.held.items() for h in q],
        }

    def take_changes(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The contacts changed since the last call — (their ``as_dict()``s, ids of those gone) — and
        start counting afresh. A store that holds the header and one row per contact and applies
        these stays equal to ``snapshot()``, at a cost that follows the batch, not the board.
        Needs a board made with ``track_changes=True``."""
        if self._changed is None:
            raise ValueError("this board does not track changes: make it with track_changes=True")
        changed, self._changed = self._changed, set()
        kept = [self.contacts[cid].as_dict() for cid in changed if cid in self.contacts]
        gone = [cid for cid in changed if cid not in self.contacts]
        return kept, gone

    @classmethod
    def restore(cls, snapshot: dict[str, Any] | None, registries: list[Registry], *,
                track_changes: bool = False) -> Board:
        board = cls(registries, track_changes=track_changes)
        if not snapshot:
            return board
        board.clock = _time(snapshot["clock"]) if snapshot.get("clock") else None
        board.next_seq = int(snapshot.get("next_seq", 1))
        board.idle_since = {k: _time(v) for k, v in snapshot.get("idle_since", {}).items()}
        board.marks = {k: _time(v) for k, v in snapshot.get("marks", {}).items()}
        if snapshot.get("minute_due"):
            board._minute_due = due = _time(snapshot["minute_due"])
            heapq.heappush(board._timers, _Timer(due, due, 0, "minute", ""))
        for d in snapshot.get("held", []):
            board.held.setdefault(d["stream"], deque()).append(Held.from_dict(d))
        for d in snapshot.get("contacts", []):
            c = Contact.from_dict(d)
            board.contacts[c.contact_id] = c
            if c.state == "waiting":
                bisect.insort(board._queues.setdefault(c.field or "", []), _entry(c))
                if not c.overflowed and c.overflow_at is not None:
                    board._push_timer(c.overflow_at, c.queued_at or c.overflow_at, "overflow", c)
            if c.desk_id is not None:
                board.busy.setdefault(c.desk_id, set()).add(c.contact_id)
            if c.state == "ringing" and c.ring_deadline is not None:
                board._push_timer(c.ring_deadline, c.assigned_at or c.ring_deadline, "ring", c)
            if c.state == "received" and c.received_at is not None:
                board._push_timer(c.received_at + FORGET_UNROUTED_AFTER, c.received_at, "forget", c)
        if "minute_due" not in snapshot and board._queues and board.clock is not None:
            board._watch_the_clock(board.clock)  # a board saved before the minute timer existed
        return board


def _entry(c: Contact) -> tuple[int, float, int, str]:
    """A contact's place in its field's queue: priority first, then its choice time, then arrival."""
    return (-c.priority, c.arrived, c.seq, c.contact_id)


_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
_MINUTE = timedelta(minutes=1)
# How far past the clock timers still fire each at its own time (module docstring, "A jump in time").
# Long enough that no replay, nor a live network whose platforms send heartbeats every few seconds,
# ever leaves the board that long without an event; short enough that the ring timeouts and minutes
# lived through after a jump stay few (an hour: 180 rings of a 20 s ring timeout, 60 minutes).
GAP = timedelta(hours=1)
# One tzinfo per UTC offset for every time on the board. Two aware datetimes whose tzinfo objects differ
# compare by asking both for their offsets — about ten times the cost of a plain comparison, and pydantic
# gives every time it parses a tzinfo of its own; the board compares times all the time (timers, marks,
# registry versions). Same instant, same offset, so the same text when written: nothing else changes.
_ZONES: dict[timedelta, timezone] = {timedelta(hours=9): JST, timedelta(0): UTC}
_SHARED = {id(zone) for zone in _ZONES.values()}


def board_time(at: datetime) -> datetime:
    """``at`` with the board's one tzinfo for its UTC offset (a naive time is left as it is). The board
    does this to every time handed to it; a caller that hands one time to several calls (``observe``,
    then ``apply``) can do it once."""
    zone = at.tzinfo
    if id(zone) in _SHARED or zone is None:
        return at
    offset = at.utcoffset()
    if offset is None:
        return at
    shared = _ZONES.get(offset)
    if shared is None:
        shared = _ZONES[offset] = timezone(offset)
        _SHARED.add(id(shared))
    return at.replace(tzinfo=shared)


def _time(text: str) -> datetime:
    return board_time(datetime.fromisoformat(text))

_HANDLERS = {
    "contact.received": Board._on_received,
    "contact.field_selected": Board._on_field_selected,
    "contact.answered": Board._on_answered,
    "contact.abandoned": Board._on_finished,
    "contact.ended": Board._on_finished,
}

# --- invariants (the property tests and the integration checks use these) -------------------


def invariant_violations(board: Board) -> list[str]:
    """What is wrong with the board now; empty when every invariant holds."""
    problems: list[str] = []
    at = board.clock
    registry = board.registry_at(at)
    desks = {d.id: d for d in registry.desks} if registry else {}
    for desk_id, holders in board.busy.items():
        desk = desks.get(desk_id)
        if desk is None or len(holders) <= desk.lines or registry is None:
            continue
        # Over its lines is allowed only with contacts it held before this version cut its lines.
        since = registry.effective_from
        if any((board.contacts[cid].assigned_at or since) >= since for cid in holders if cid in board.contacts):
            problems.append(f"desk {desk_id} holds {len(holders)} contacts on {desk.lines} lines")
    holders_of: dict[str, list[str]] = {}
    for desk_id, holders in board.busy.items():
        for cid in holders:
            holders_of.setdefault(cid, []).append(desk_id)
    for cid, ds in holders_of.items():
        if len(ds) > 1:
            problems.append(f"contact {cid} holds lines at {ds}")
        c = board.contacts.get(cid)
        if c is None or c.desk_id != ds[0]:
            problems.append(f"desk {ds[0]} holds {cid}, which does not know it")
    for c in board.contacts.values():
        if c.state == "waiting" and at is not None:
            free = board.qualifying_free_desks(c, at)
            if free:
                problems.append(f"contact {c.contact_id} waits while {free[0].id} has a free line for it")
        if c.state in ("ringing",) and c.desk_id is None:
            problems.append(f"contact {c.contact_id} rings nowhere")
    return problems
