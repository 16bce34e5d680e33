"""The board's invariants: what the property tests and the integration checks hold it to."""

from __future__ import annotations

from services.routing.domain.board import Board


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
