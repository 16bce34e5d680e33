"""The board: desks, lines and queues at one moment of event time, and its one entry point,
``apply`` (the package docstring says how it keeps time and the rules it decides by)."""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from schemas import RoutingQueued
from services.routing.desks import Desk, Registry
from services.routing.domain.clock import board_time, parse_time
from services.routing.domain.lines import candidates, dequeue, dispatch, enqueue, release
from services.routing.domain.records import FORGET_UNROUTED_AFTER, Contact, Decision, Held, queue_entry, queue_key
from services.routing.domain.state import BoardState, Timer
from services.routing.domain.timers import advance, organisation_of


class Board(BoardState):
    """Desks, lines and queues at one moment of event time; ``apply`` moves it forward."""

    # --- queries --------------------------------------------------------------------------

    def waiting(self, field_code: str | None = None, channel: str | None = None) -> list[Contact]:
        """Waiting contacts in queue order (one field's or all fields', one channel's or all channels')."""
        merged = sorted(entry for (f, ch), q in self._queues.items()
                        if field_code in (None, f) and channel in (None, ch) for entry in q)
        return [self.contacts[e[-1]] for e in merged]

    def lines_by_field(self) -> dict[str, tuple[int, int, int, int]]:
        """Per field, (phone lines open now, of them free, conversations the open seats hold at most, of
        them free) over the desks open at the board's clock. A desk serving several fields counts in
        each of them."""
        registry = self.registry_at(self.clock)
        if registry is None or self.clock is None:
            return {}
        lines: dict[str, tuple[int, int, int, int]] = {}
        for desk in self.desks_of(registry):
            if self._is_open(desk, self.clock):
                room = desk.seats * desk.conversations_per_seat
                for code in desk.fields:
                    total, free, seats, free_seats = lines.get(code, (0, 0, 0, 0))
                    lines[code] = (total + desk.lines, free + self.free_lines(desk),
                                   seats + room, free_seats + self.free_conversations(desk))
        return lines

    def qualifying_free_desks(self, contact: Contact, at: datetime | None = None) -> list[Desk]:
        """Desks with room that may take ``contact`` now (open, room for its channel, its field and tier,
        or the desk its transfer named, or one for imminent risk)."""
        at = at or self.clock
        registry = self.registry_at(at)
        if registry is None or contact.field is None or at is None:
            return []
        room = [d for d in self.desks_of(registry)
                if self._is_open(d, at) and self.place_for(d, contact.channel) is not None]
        return candidates(contact, [d for d in room if d.serves(contact.field)], [d for d in room if d.imminent],
                          room)

    # --- the one entry point ----------------------------------------------------------------

    def apply(self, kind: str, at: datetime, data: BaseModel, *, sender: str | None = None) -> list[Decision]:
        """Apply one canonical event (short type, event time, data); returns the decisions. The
        timers due up to its time fire first — those the watermark has passed, when streams are
        observed. ``sender``: the organisation that sent it, where the rules ask (a transfer)."""
        out: list[Decision] = []
        at = board_time(at)
        now = advance(self, at, out)
        handler = _HANDLERS.get(kind)
        self._event_at = at
        self._sender = sender
        if handler is not None:
            if self._changed is not None:
                self._changed.add(data.contact_id)  # type: ignore[attr-defined]
            handler(self, now, data, out)
        dispatch(self, now, out)
        return out

    def tick(self, at: datetime) -> list[Decision]:
        """Let time pass to ``at`` with no event (what a heartbeat does): the timers due by then
        fire (those the watermark has passed, when streams are observed)."""
        out: list[Decision] = []
        now = advance(self, board_time(at) if at is not None else at, out)
        dispatch(self, now, out)
        return out

    # --- events ---------------------------------------------------------------------------

    def _on_received(self, now: datetime, data: Any, out: list[Decision]) -> None:
        c = self.contacts.setdefault(data.contact_id, Contact(data.contact_id))
        c.prefecture = data.prefecture
        c.owner = c.owner or self._sender
        if c.state == "received":
            c.channel = str(data.channel.value if hasattr(data.channel, "value") else data.channel)
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
        overflow_after = registry.rules.overflow_after(c.field, c.channel) if registry else 30.0
        c.overflow_at = now + timedelta(seconds=overflow_after)
        enqueue(self, c, now)
        self._push_timer(c.overflow_at, now, "overflow", c)
        self._arriving = c.contact_id
        try:
            dispatch(self, now, out)
        finally:
            self._arriving = None
        # _dispatch may have moved c on (mypy keeps the state narrowed from before the call)
        if c.state == "waiting":  # type: ignore[comparison-overlap]
            self._queued(c, now, out)

    def _queued(self, c: Contact, now: datetime, out: list[Decision]) -> None:
        out.append(Decision("routing.queued", now, RoutingQueued(
            contact_id=c.contact_id, field=c.field, queue_position=self.queue_position(c), priority=c.priority,
            channel=c.channel, risk=c.risk)))

    def _on_triaged(self, now: datetime, data: Any, out: list[Decision]) -> None:
        """A screening result: the contact's queue place follows its risk at once, also when it comes late."""
        c = self.contacts.setdefault(data.contact_id, Contact(data.contact_id))
        risk = str(data.risk.value if hasattr(data.risk, "value") else data.risk)
        if c.state == "received" and c.received_at is None:
            # triaged before its arrival was read: forgotten like any contact that never chose a field
            c.received_at = now
            self._push_timer(now + FORGET_UNROUTED_AFTER, now, "forget", c)
        if c.state == "waiting":
            dequeue(self, c)
            c.risk = risk
            enqueue(self, c, now)
        else:
            c.risk = risk

    def _on_transferred(self, now: datetime, data: Any, out: list[Decision]) -> None:
        """A desk hands a live contact on. Only a transfer from the desk that holds it moves anything: the
        place there is released and the contact queues again with its first arrival rank, offered to the
        desk named (or its new field's desks), on its new channel."""
        c = self.contacts.get(data.contact_id)
        if c is None or c.state not in ("ringing", "talking") or c.desk_id != data.from_desk_id:
            return
        if self._sender is not None and self._sender not in (c.owner, organisation_of(self, data.from_desk_id, now)):
            return  # only the desk's organisation, or the platform that reported the contact, hands it on
        registry = self.registry_at(now)
        release(self, c, now)
        if data.to_channel is not None:
            c.channel = str(data.to_channel.value if hasattr(data.to_channel, "value") else data.to_channel)
        if data.to_field is not None:
            c.field = str(data.to_field.value if hasattr(data.to_field, "value") else data.to_field)
            if registry is not None:
                c.priority = max(c.priority, registry.rules.priority(c.field))
        c.target_desk = data.to_desk_id
        c.transferred = True
        c.rerouted = c.overflowed = False
        c.withdrawn_from = None
        c.queued_at = now
        assert c.field is not None  # a contact on a desk chose a field
        c.overflow_at = now + timedelta(seconds=registry.rules.overflow_after(c.field, c.channel) if registry else 30.0)
        enqueue(self, c, now)
        self._push_timer(c.overflow_at, now, "overflow", c)
        dispatch(self, now, out)
        if c.state == "waiting":  # type: ignore[comparison-overlap]
            self._queued(c, now, out)

    def _on_answered(self, now: datetime, data: Any, out: list[Decision]) -> None:
        c = self.contacts.get(data.contact_id)
        if c is None:
            return
        c.target_desk = None  # a transfer's desk is sought until someone answers
        c.transferred = False
        if c.state == "ringing":
            c.state = "talking"
            c.ring_deadline = None
        elif c.state == "waiting":
            # The platform connected it although routing had it queued (e.g. an answer that
            # arrived after a withdrawal): it is talking now; it takes a line only if one is free.
            dequeue(self, c)
            c.state = "talking"
            desk = self._desk(data.desk_id, now)
            place = self.place_for(desk, c.channel) if desk is not None else None
            if desk is not None and place is not None:
                c.assigned_at = now
                self.occupy(c, desk.id, place)

    def _on_finished(self, now: datetime, data: Any, out: list[Decision]) -> None:
        c = self.contacts.pop(data.contact_id, None)
        if c is None:
            return
        if c.state == "waiting":
            dequeue(self, c)
        elif c.desk_id is not None:
            release(self, c, now)

    def _desk(self, desk_id: str, at: datetime) -> Desk | None:
        registry = self.registry_at(at)
        if registry is None:
            return None
        return next((d for d in self.desks_of(registry) if d.id == desk_id), None)

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
        board.clock = parse_time(snapshot["clock"]) if snapshot.get("clock") else None
        board.next_seq = int(snapshot.get("next_seq", 1))
        board.idle_since = {k: parse_time(v) for k, v in snapshot.get("idle_since", {}).items()}
        board.marks = {k: parse_time(v) for k, v in snapshot.get("marks", {}).items()}
        if snapshot.get("minute_due"):
            board._minute_due = due = parse_time(snapshot["minute_due"])
            heapq.heappush(board._timers, Timer(due, due, 0, "minute", ""))
        for d in snapshot.get("held", []):
            board.held.setdefault(d["stream"], deque()).append(Held.from_dict(d))
        for d in snapshot.get("contacts", []):
            c = Contact.from_dict(d)
            board.contacts[c.contact_id] = c
            if c.state == "waiting":
                bisect.insort(board._queues.setdefault(queue_key(c), []), queue_entry(c))
                if not c.overflowed and c.overflow_at is not None:
                    board._push_timer(c.overflow_at, c.queued_at or c.overflow_at, "overflow", c)
            if c.desk_id is not None:
                board.occupy(c, c.desk_id, c.seat or 0)
            if c.state == "ringing" and c.ring_deadline is not None:
                board._push_timer(c.ring_deadline, c.assigned_at or c.ring_deadline, "ring", c)
            if c.state == "received" and c.received_at is not None:
                board._push_timer(c.received_at + FORGET_UNROUTED_AFTER, c.received_at, "forget", c)
        if "minute_due" not in snapshot and board._queues and board.clock is not None:
            board._watch_the_clock(board.clock)  # a board saved before the minute timer existed
        return board


_HANDLERS = {
    "contact.received": Board._on_received,
    "contact.field_selected": Board._on_field_selected,
    "contact.answered": Board._on_answered,
    "contact.triaged": Board._on_triaged,
    "contact.transferred": Board._on_transferred,
    "contact.abandoned": Board._on_finished,
    "contact.ended": Board._on_finished,
}

