"""The board's invariants: what the property tests and the integration checks hold it to."""

from __future__ import annotations

from collections import Counter

from services.routing.desks import Desk
from services.routing.domain.board import Board
from services.routing.domain.records import Contact


def invariant_violations(board: Board) -> list[str]:
    """What is wrong with the board now; empty when every invariant holds."""
    problems: list[str] = []
    at = board.clock
    registry = board.registry_at(at)
    desks = {d.id: d for d in registry.desks} if registry else {}
    since = registry.effective_from if registry else None
    for desk_id, holders in board.busy.items():
        desk = desks.get(desk_id)
        held = [board.contacts[cid] for cid in holders if cid in board.contacts]
        if desk is None or since is None:
            continue
        # Over its room is allowed only with contacts it held before this version cut its lines or seats.
        fresh = [c for c in held if (c.assigned_at or since) >= since]
        problems += _over_capacity(desk, held, fresh)
        problems += _counters(board, desk_id, held)
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
                problems.append(f"contact {c.contact_id} waits while {free[0].id} has room for it")
        if c.state in ("ringing",) and c.desk_id is None:
            problems.append(f"contact {c.contact_id} rings nowhere")
    return problems


def _over_capacity(desk: Desk, held: list[Contact], fresh: list[Contact]) -> list[str]:
    """Lines and seats over what the desk has, counting only contacts placed under the version in force;
    and contacts on a place their channel may not use."""
    problems: list[str] = []
    # A version that cut the desk lets its earlier contacts keep their places until they end: a place
    # over its room is wrong only if it was given to a contact under this version.
    new = {c.contact_id for c in fresh}
    on_lines = [c for c in held if c.seat is None]
    if len(on_lines) > desk.lines and any(c.contact_id in new for c in on_lines):
        problems.append(f"desk {desk.id} holds {len(on_lines)} calls on {desk.lines} lines")
    if any(c.channel != "phone" for c in on_lines):
        problems.append(f"desk {desk.id} holds a chat on a phone line")
    per_seat: dict[int, list[Contact]] = {}
    for c in held:
        if c.seat is not None:
            per_seat.setdefault(c.seat, []).append(c)
    for seat, on in per_seat.items():
        if not any(c.contact_id in new for c in on):
            continue
        if seat > desk.seats:
            problems.append(f"desk {desk.id} uses seat {seat} of {desk.seats}")
        calls = [c for c in on if c.channel == "phone"]
        if calls and (len(on) > 1 or not desk.blended):
            problems.append(f"desk {desk.id} seat {seat} holds a call beside {len(on) - 1} others")
        if len(on) > desk.conversations_per_seat:
            problems.append(f"desk {desk.id} seat {seat} holds {len(on)} of {desk.conversations_per_seat}")
        if any(c.channel != "phone" and c.channel not in desk.seat_channels for c in on):
            problems.append(f"desk {desk.id} seat {seat} holds a channel it does not take")
    return problems


def _counters(board: Board, desk_id: str, held: list[Contact]) -> list[str]:
    """The board's running counts of lines and seats agree with the contacts it holds."""
    lines = sum(1 for c in held if c.seat is None)
    loads = Counter(c.seat for c in held if c.seat is not None and c.channel != "phone")
    calls = {c.seat for c in held if c.seat is not None and c.channel == "phone"}
    if (board.on_lines.get(desk_id, 0) != lines or board.seat_load.get(desk_id, {}) != dict(loads)
            or board.seat_calls.get(desk_id, set()) != calls):
        return [f"desk {desk_id}: the counts of lines and seats disagree with its contacts"]
    return []
