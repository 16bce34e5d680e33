"""The board's queues and lines: a contact joins or leaves its field's queue, a line is taken or
released, and free qualifying lines go to waiting contacts, best-ranked first."""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta

from schemas import RoutingAssigned
from services.routing.desks import Desk, Registry
from services.routing.domain.clock import EPOCH
from services.routing.domain.records import Contact, Decision, Entry, Reason, queue_entry, queue_key
from services.routing.domain.state import BoardState


def enqueue(board: BoardState, c: Contact, now: datetime) -> None:
    c.state = "waiting"
    bisect.insort(board._queues.setdefault(queue_key(c), []), queue_entry(c))
    board._watch_the_clock(now)


def dequeue(board: BoardState, c: Contact) -> None:
    key = queue_key(c)
    q = board._queues.get(key, [])
    i = bisect.bisect_left(q, queue_entry(c))
    if i < len(q) and q[i][-1] == c.contact_id:
        q.pop(i)
    if not q:
        board._queues.pop(key, None)


def release(board: BoardState, c: Contact, now: datetime) -> None:
    if c.desk_id is not None:
        board.idle_since[c.desk_id] = now
    board.vacate(c)
    c.ring_deadline = None
    c.assigned_at = None


def candidates(c: Contact, field_desks: list[Desk], urgent: list[Desk], room: list[Desk]) -> list[Desk]:
    """Of the desks with room for ``c``'s channel (``room``; ``field_desks`` those of them serving its field,
    ``urgent`` those taking imminent risk), the ones that may take ``c``: tier 1 of its field (tier 2 too
    once it overflowed), a desk configured for imminent risk when it was triaged so, and the desk a
    transfer named (only that one until the transfer's wait has passed)."""
    if c.target_desk is not None:
        named = [d for d in room if d.id == c.target_desk]
        if not c.overflowed:
            return named
    else:
        named = []
    found = [d for d in field_desks if d.tier == 1 or c.overflowed]
    if c.risk == "imminent":
        found += [d for d in urgent if d not in found]
    return named + [d for d in found if d not in named] if named else found


def desk_rank(c: Contact, d: Desk, board: BoardState, registry: Registry) -> tuple[object, ...]:
    """Which of the candidates takes ``c``: the desk a transfer named, a desk for imminent risk when it
    is so triaged, then tier, not the desk that let it ring out, the caller's region, idle longest, id."""
    return (
        d.id != c.target_desk,
        not (c.risk == "imminent" and d.imminent),
        d.tier,
        d.id == c.withdrawn_from,
        0 if c.prefecture is not None and c.prefecture in d.regions else 1,
        # idle since it last released a line, or since the registry version in force took
        # effect: a new version (a new network) starts every desk level
        max(board.idle_since.get(d.id, EPOCH), registry.effective_from),
        d.id,
    )


def dispatch(board: BoardState, now: datetime, out: list[Decision]) -> None:
    """Give free qualifying lines and seats to waiting contacts, best-ranked contact first."""
    if not board._queues:
        return
    registry = board.registry_at(now)
    if registry is None:
        return
    while board._queues:
        open_desks = [d for d in board.desks_of(registry) if board._is_open(d, now)]
        room_by_channel: dict[str, list[Desk]] = {}
        best: tuple[Entry, Contact, list[Desk]] | None = None
        for (field_code, channel), q in board._queues.items():
            room = room_by_channel.get(channel)
            if room is None:
                room = room_by_channel[channel] = [d for d in open_desks if board.place_for(d, channel) is not None]
            if not room:
                continue
            field_desks = [d for d in room if d.serves(field_code)]
            urgent = [d for d in room if d.imminent]
            for entry in q:
                if best is not None and entry >= best[0]:
                    break
                c = board.contacts[entry[-1]]
                found = candidates(c, field_desks, urgent, room)
                if found:
                    best = (entry, c, found)
                    break
        if best is None:
            return
        entry, c, found = best
        desk = min(found, key=lambda d: desk_rank(c, d, board, registry))
        assign(board, c, desk, registry, now, out)


def assign(board: BoardState, c: Contact, desk: Desk, registry: Registry, now: datetime, out: list[Decision]) -> None:
    position = board.queue_position(c)
    dequeue(board, c)
    if c.contact_id == board._arriving:
        reason: Reason = "free_line"
    elif c.transferred:
        reason = "transferred"
    elif c.rerouted:
        reason = "rerouted"
    elif desk.tier != 1:
        reason = "overflow"
    else:
        reason = "line_freed"
    if board._changed is not None:
        board._changed.add(c.contact_id)
    seat = board.place_for(desk, c.channel) or 0
    c.state = "ringing"
    c.transferred = False
    c.assigned_at = now
    c.ring_deadline = now + timedelta(seconds=registry.rules.offer_timeout(c.channel))
    board._push_timer(c.ring_deadline, now, "ring", c)
    board.occupy(c, desk.id, seat)
    out.append(Decision("routing.assigned", now, RoutingAssigned(
        contact_id=c.contact_id, desk_id=desk.id, organisation_id=desk.organisation_id, field=c.field,
        reason=reason, queue_position=None if reason == "free_line" else position, channel=c.channel,
        seat=seat or None, seat_capacity=desk.conversations_per_seat if seat else None)))
