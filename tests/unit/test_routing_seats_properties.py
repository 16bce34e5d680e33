"""Seats that hold several conversations, under random mixed phone and chat traffic (hypothesis).

The published decisions alone must show that no seat ever holds more conversations than the desk's
``conversations_per_seat``, that a call takes a line (or, on a blended desk, a seat holding nothing) and
a chat a seat whose desk takes its channel, that no contact holds two places, and that a desk is only
given contacts it may take (its field and tier, the desk a transfer named, or imminent risk). The board's
own invariants hold after every event, and a board restored from its snapshot, or from the rows a save
writes, is the same board. Triage arrives early or late; transfers move live contacts between desks,
fields and channels; a second registry version cuts seats while conversations are in flight.
"""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    ContactAbandoned,
    ContactAnswered,
    ContactEnded,
    ContactFieldSelected,
    ContactReceived,
    ContactTransferred,
    ContactTriaged,
)
from services.routing.desks import is_open
from services.routing.domain.board import Board
from services.routing.domain.invariants import invariant_violations
from tests.unit.routing_support import T0, registry

FIELDS = ["loneliness", "suicidal", "hardship"]
CHANNELS = ["phone", "chat", "sns"]
RISKS = ["none", "low", "medium", "high", "imminent"]

desk_strategy = st.fixed_dictionaries({
    "fields": st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2, unique=True),
    "lines": st.integers(0, 2),
    "seats": st.integers(0, 3),
    "conversations_per_seat": st.integers(1, 3),
    "seat_channels": st.sampled_from([["chat", "sns"], ["chat"], ["sns"]]),
    "blended": st.booleans(),
    "imminent": st.sampled_from([False, False, True]),
    "tier": st.sampled_from([1, 1, 2]),
})

op_strategy = st.one_of(
    st.tuples(st.just("contact"), st.sampled_from(FIELDS), st.sampled_from(CHANNELS)),
    st.tuples(st.just("triage"), st.integers(0, 40), st.sampled_from(RISKS)),
    st.tuples(st.just("answer"), st.integers(0, 40)),
    st.tuples(st.just("end"), st.integers(0, 40)),
    st.tuples(st.just("abandon"), st.integers(0, 40)),
    st.tuples(st.just("transfer"), st.integers(0, 40), st.integers(0, 5), st.sampled_from([None, *FIELDS]),
              st.sampled_from([None, *CHANNELS])),
    st.tuples(st.just("wait"), st.sampled_from([1, 10, 25, 130, 400])),
)


def _version(desks: list[dict], cut: bool, name: str, after: timedelta):
    """The network's desks; ``cut`` halves every desk's seats and conversations (a later version)."""
    def shrink(d: dict) -> dict:
        return {**d, "seats": d["seats"] // 2, "conversations_per_seat": max(1, d["conversations_per_seat"] - 1)}

    return registry(*[{"id": f"d{i}", "org": f"npo-{i % 2}", **(shrink(d) if cut else d)} for i, d in enumerate(desks)],
                    version=name, effective_from=T0 - timedelta(days=1) + after,
                    overflow_after_s={"default": 30}, ring_timeout_s=20,
                    channels={"chat": {"overflow_after_s": {"default": 120}, "offer_timeout_s": 60}})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(desks=st.lists(desk_strategy, min_size=1, max_size=4), ops=st.lists(op_strategy, min_size=15, max_size=80),
       cut_after=st.sampled_from([None, 60, 600]))
def test_random_mixed_traffic_never_overfills_a_seat_or_books_a_place_twice(desks, ops, cut_after):
    try:
        _play(desks, ops, cut_after)
    except AssertionError as e:  # the failing case in full (hypothesis' own report shortens it)
        raise AssertionError(f"{e}\ndesks={desks!r}\nops={ops!r}\ncut_after={cut_after!r}") from e


def _play(desks, ops, cut_after) -> None:
    versions = [_version(desks, False, "v1", timedelta(0))]
    if cut_after is not None:
        versions.append(_version(desks, True, "v2", timedelta(days=1, seconds=cut_after)))
    board = Board(versions, track_changes=True)
    now = T0
    n = 0
    live: dict[str, tuple[str, int | None]] = {}  # contact -> (desk, seat), from the published decisions
    contacts: dict[str, dict] = {}  # contact -> field, channel, risk, named desk, overflowed, when placed
    stored: dict[str, dict] = {}

    def desk_at(desk_id: str, at):
        return {d.id: d for d in board.registry_at(at).desks}[desk_id]

    def step(kind: str, at, data) -> None:
        decisions = board.apply(kind, at, data)
        if kind in ("contact.ended", "contact.abandoned"):
            live.pop(data.contact_id, None)
        check(decisions)

    def check(decisions) -> None:
        for d in decisions:
            cid = d.contact_id
            c = contacts[cid]
            if d.kind == "routing.assigned":
                assert cid not in live, f"{cid} assigned twice"
                desk = desk_at(d.data.desk_id, d.at)
                assert is_open(desk, d.at)
                allowed = (desk.serves(c["field"]) and (desk.tier == 1 or c["overflowed"]))
                allowed |= desk.id == c["named"] or (c["risk"] == "imminent" and desk.imminent)
                assert allowed, f"{cid} given to {desk.id}, which may not take it"
                assert (d.data.channel or "phone") == c["channel"]
                if c["channel"] == "phone":
                    assert d.data.seat is None or desk.blended
                else:
                    assert d.data.seat is not None and c["channel"] in desk.seat_channels
                    assert d.data.seat_capacity == desk.conversations_per_seat
                live[cid] = (desk.id, d.data.seat)
                c["placed"] = d.at
            elif d.kind == "routing.withdrawn":
                assert live.pop(cid)[0] == d.data.desk_id
                assert d.data.reason == ("ring_timeout" if c["channel"] == "phone" else "offer_timeout")
            elif d.kind == "routing.overflowed":
                c["overflowed"] = True
        # from the decisions alone: no seat over its room, no line over its count (contacts placed under
        # the version in force; an earlier version's keep their places)
        registry = board.registry_at(board.clock)
        per_seat: dict[tuple[str, int], list[str]] = {}
        per_line: dict[str, int] = {}
        for cid, (desk_id, seat) in live.items():
            if contacts[cid]["placed"] < registry.effective_from:
                continue
            if seat is None:
                per_line[desk_id] = per_line.get(desk_id, 0) + 1
            else:
                per_seat.setdefault((desk_id, seat), []).append(cid)
        for desk_id, count in per_line.items():
            assert count <= desk_at(desk_id, board.clock).lines
        for (desk_id, _seat), on in per_seat.items():
            desk = desk_at(desk_id, board.clock)
            calls = [cid for cid in on if contacts[cid]["channel"] == "phone"]
            assert len(on) <= desk.conversations_per_seat
            assert not calls or len(on) == 1
        assert invariant_violations(board) == []
        restored = Board.restore(json.loads(json.dumps(board.snapshot())), versions)
        assert restored.snapshot() == board.snapshot()
        changed, gone = board.take_changes()
        stored.update({c["contact_id"]: json.loads(json.dumps(c)) for c in changed})
        for cid in gone:
            stored.pop(cid, None)
        from_rows = Board.restore({**board.snapshot_header(), "contacts": list(stored.values())}, versions)
        assert from_rows.snapshot() == board.snapshot()
        assert (from_rows.busy, from_rows.on_lines, from_rows.seat_load, from_rows.seat_calls) == (
            board.busy, board.on_lines, board.seat_load, board.seat_calls)

    ids: list[str] = []
    for op in ops:
        if op[0] == "contact":
            n += 1
            cid = f"c{n}"
            ids.append(cid)
            contacts[cid] = {"field": op[1], "channel": op[2], "risk": None, "named": None, "overflowed": False,
                             "placed": None}
            step("contact.received", now, ContactReceived(contact_id=cid, channel=op[2]))
            step("contact.field_selected", now, ContactFieldSelected(contact_id=cid, field=op[1], menu_position=1))
        elif op[0] == "wait":
            now += timedelta(seconds=op[1])
            check(board.tick(now))
        elif ids:
            cid = ids[op[1] % len(ids)]
            if op[0] == "triage":
                contacts[cid]["risk"] = op[2]
                step("contact.triaged", now, ContactTriaged(contact_id=cid, risk=op[2]))
            elif op[0] == "answer":
                desk = live.get(cid, ("d0", None))[0]
                contacts[cid]["named"] = None  # a transfer's desk is sought until someone answers
                step("contact.answered", now, ContactAnswered(contact_id=cid, desk_id=desk, organisation_id="x",
                                                              wait_seconds=0.0))
            elif op[0] == "end":
                step("contact.ended", now, ContactEnded(contact_id=cid, talk_seconds=1.0))
            elif op[0] == "abandon":
                step("contact.abandoned", now, ContactAbandoned(contact_id=cid, stage="queue", wait_seconds=1.0))
            elif op[0] == "transfer":
                to_desk = f"d{op[2]}" if op[2] < len(desks) else None
                to_field = op[3] if op[3] is not None or to_desk is not None else FIELDS[0]
                # the board's own view of where it is: an answer of a waiting contact places it silently
                on_board = board.contacts.get(cid)
                held_at = on_board.desk_id if on_board is not None and on_board.state in ("ringing", "talking") \
                    else None
                if held_at is not None:
                    c = contacts[cid]
                    c["named"], c["overflowed"] = to_desk, False
                    c["field"] = to_field or c["field"]
                    c["channel"] = op[4] or c["channel"]
                    live.pop(cid, None)
                step("contact.transferred", now, ContactTransferred(
                    contact_id=cid, from_desk_id=held_at or "d0", to_desk_id=to_desk,
                    to_field=to_field, to_channel=op[4]))
