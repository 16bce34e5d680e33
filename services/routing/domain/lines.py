"""The board's queues and lines: a contact joins or leaves its field's queue, a line is taken or
released, and free qualifying lines go to waiting contacts, best-ranked first."""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta

from schemas import RoutingAssigned
from services.routing.desks import Desk, Registry
from services.routing.domain.clock import EPOCH
from services.routing.domain.records import Contact, Decision, Reason, queue_entry
from services.routing.domain.state import BoardState


def enqueue(board: BoardState, c: Contact, now: datetime) -> None:
    c.state = "waiting"
    bisect.insort(board._queues.setdefault(c.field or "", []), queue_entry(c))
    board._watch_the_clock(now)


def dequeue(board: BoardState, c: Contact) -> None:
    q = board._queues.get(c.field or "", [])
    i = bisect.bisect_left(q, queue_entry(c))
    if i < len(q) and q[i][-1] == c.contact_id:
        q.pop(i)
    if not q:
        board._queues.pop(c.field or "", None)


def release(board: BoardState, c: Contact, now: datetime) -> None:
    if c.desk_id is not None:
        holders = board.busy.get(c.desk_id)
        if holders is not None:
            holders.discard(c.contact_id)
            if not holders:
                del board.busy[c.desk_id]
        board.idle_since[c.desk_id] = now
    c.desk_id = None
    c.ring_deadline = None
    c.assigned_at = None


def dispatch(board: BoardState, now: datetime, out: list[Decision]) -> None:
    """Give free qualifying lines to waiting contacts, best-ranked contact first."""
    if not board._queues:
        return
    registry = board.registry_at(now)
    if registry is None:
        return
    while board._queues:
        free = [d for d in board.desks_of(registry) if board.free_lines(d) > 0 and board._is_open(d, now)]
        if not free:
            return
        best: tuple[tuple[int, float, int, str], Contact, list[Desk]] | None = None
        for field_code, q in board._queues.items():
            tier1 = [d for d in free if d.tier == 1 and d.serves(field_code)]
            tier2 = [d for d in free if d.tier != 1 and d.serves(field_code)]
            if not tier1 and not tier2:
                continue
            for entry in q:
                if best is not None and entry >= best[0]:
                    break
                c = board.contacts[entry[-1]]
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
            max(board.idle_since.get(d.id, EPOCH), registry.effective_from),
            d.id,
        ))
        assign(board, c, desk, registry, now, out)


def assign(board: BoardState, c: Contact, desk: Desk, registry: Registry, now: datetime, out: list[Decision]) -> None:
    position = board.queue_position(c)
    dequeue(board, c)
    if c.contact_id == board._arriving:
        reason: Reason = "free_line"
    elif c.rerouted:
        reason = "rerouted"
    elif desk.tier != 1:
        reason = "overflow"
    else:
        reason = "line_freed"
    if board._changed is not None:
        board._changed.add(c.contact_id)
    c.state = "ringing"
    c.desk_id = desk.id
    c.assigned_at = now
    c.ring_deadline = now + timedelta(seconds=registry.rules.ring_timeout_s)
    board._push_timer(c.ring_deadline, now, "ring", c)
    board.busy.setdefault(desk.id, set()).add(c.contact_id)
    out.append(Decision("routing.assigned", now, RoutingAssigned(
        contact_id=c.contact_id, desk_id=desk.id, organisation_id=desk.organisation_id, field=c.field,
        reason=reason, queue_position=None if reason == "free_line" else position)))

