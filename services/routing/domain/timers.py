"""The board's timers: a queued contact's overflow, a ringing assignment's withdrawal, a forgotten
caller, the whole minute; fired in order up to the watermark (the package docstring, "Time")."""

from __future__ import annotations

import heapq
from datetime import datetime

from schemas import RoutingOverflowed, RoutingWithdrawn
from services.routing.domain.clock import GAP
from services.routing.domain.lines import dispatch, enqueue, release
from services.routing.domain.records import FORGET_UNROUTED_AFTER, Decision
from services.routing.domain.state import BoardState, Timer


def advance(board: BoardState, at: datetime, out: list[Decision]) -> datetime:
    """Fire the timers due by ``at`` that the watermark has passed; move the clock to ``at``
    (never back); returns the clock."""
    limit: datetime | None = at
    if board.marks:
        watermark = board.watermark
        limit = None if watermark is None else min(at, watermark)
    if limit is not None and board.clock is not None and limit - board.clock > GAP:
        # A jump: what fell due more than GAP before the limit fires late, once, at its start
        # (the package docstring), instead of every ring timeout and minute being lived through.
        board.clock = limit - GAP
    while board._timers and limit is not None and board._timers[0].due <= limit:
        timer = heapq.heappop(board._timers)
        late = board.clock is not None and timer.due < board.clock
        if not late:
            board.clock = timer.due
        fired = fire(board, timer, out)
        if fired:
            # a timer that fires late (the watermark lagged the clock) re-routes at the clock:
            # lines and desks' hours are as of now
            dispatch(board, board.clock if late else timer.due, out)  # type: ignore[arg-type]
    if board.clock is None or at > board.clock:
        board.clock = at
    return board.clock


def fire(board: BoardState, timer: Timer, out: list[Decision]) -> bool:
    if timer.kind == "minute":
        if timer.due != board._minute_due:
            return False
        board._minute_due = None
        if board._queues:
            board._watch_the_clock(timer.due)
        return True  # dispatch at the minute
    c = board.contacts.get(timer.contact_id)
    if c is None or (c.field is None and timer.kind != "forget"):
        return False
    if board._changed is not None:
        board._changed.add(c.contact_id)
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
            del board.contacts[c.contact_id]
        return False
    if timer.kind == "ring":
        if c.state != "ringing" or c.ring_deadline != timer.due or c.desk_id is None:
            return False
        desk_id = c.desk_id
        organisation = organisation_of(board, desk_id, timer.due)
        ringing = (timer.due - c.assigned_at).total_seconds() if c.assigned_at else 0.0
        release(board, c, timer.due)
        out.append(Decision("routing.withdrawn", timer.due, RoutingWithdrawn(
            contact_id=c.contact_id, desk_id=desk_id, organisation_id=organisation, field=c.field,
            reason="ring_timeout" if c.channel == "phone" else "offer_timeout", ring_seconds=max(0.0, ringing))))
        c.rerouted = True
        c.withdrawn_from = desk_id
        enqueue(board, c, timer.due)
        if not c.overflowed and c.overflow_at is not None:
            # waiting again: it overflows at its time (at once if that has passed while it rang),
            # as a board restored now would have it
            board._push_timer(c.overflow_at, c.queued_at or c.overflow_at, "overflow", c)
        return True
    return False


def organisation_of(board: BoardState, desk_id: str, at: datetime) -> str:
    for registry in [board.registry_at(at), *reversed(board.registries)]:
        if registry is None:
            continue
        for d in board.desks_of(registry):
            if d.id == desk_id:
                return d.organisation_id
    return "unknown"

