"""Invariants of the pure routing core under random event sequences (hypothesis).

After every event: no desk holds more contacts than lines; a contact has at most one live
assignment; every assignment is to an open desk serving the contact's field (tier 2 only after
overflow); no contact waits while a qualifying line is free; a board restored from its
snapshot is the same board; and a store that keeps only the contacts each step changed
(``take_changes``, what routing writes per batch) holds that same board.
"""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import ContactAbandoned, ContactAnswered, ContactEnded, ContactFieldSelected, ContactReceived
from services.routing.desks import is_open
from services.routing.domain.board import Board
from services.routing.domain.invariants import invariant_violations
from tests.unit.routing_support import T0, registry

FIELDS = ["loneliness", "suicidal", "hardship", "under18"]
DAYTIME = [{"days": ["mon", "tue", "wed", "thu", "fri"], "open": "09:00", "close": "21:00"}]
NIGHT = [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "open": "21:00", "close": "09:00"}]

desk_strategy = st.fixed_dictionaries({
    "fields": st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True),
    "lines": st.integers(0, 3),
    "tier": st.sampled_from([1, 1, 2]),
    "hours": st.sampled_from(["always", DAYTIME, NIGHT]),
    "regions": st.sampled_from([[], ["13"], ["27", "13"]]),
})

op_strategy = st.one_of(
    st.tuples(st.just("call"), st.sampled_from(FIELDS), st.sampled_from([None, "13", "27"])),
    st.tuples(st.just("answer"), st.integers(0, 50)),
    st.tuples(st.just("end"), st.integers(0, 50)),
    st.tuples(st.just("abandon"), st.integers(0, 50)),
    st.tuples(st.just("wait"), st.sampled_from([1, 5, 15, 25, 40, 3600, 6 * 3600])),
    st.tuples(st.just("late"), st.integers(1, 60)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(desks=st.lists(desk_strategy, min_size=1, max_size=4), ops=st.lists(op_strategy, max_size=60))
def test_random_traffic_never_breaks_the_invariants(desks, ops):
    reg = registry(*[{"id": f"d{i}", "org": f"npo-{i % 2}", **d} for i, d in enumerate(desks)],
                   overflow_after_s={"default": 30, "suicidal": 10}, ring_timeout_s=20)
    by_id = {d.id: d for d in reg.desks}
    board = Board([reg], track_changes=True)
    now = T0
    n = 0
    live: dict[str, str] = {}  # contact -> desk, from the published decisions
    fields: dict[str, str] = {}
    overflowed: set[str] = set()
    calls: list[str] = []
    stored: dict[str, dict] = {}  # contact id -> row, as routing's board_contacts table holds them

    def step(kind: str, at, data) -> None:
        decisions = board.apply(kind, at, data)
        if kind in ("contact.ended", "contact.abandoned"):
            live.pop(data.contact_id, None)  # its line is free before the decisions it causes
        check(decisions)

    def check(decisions) -> None:
        for d in decisions:
            cid = d.contact_id
            if d.kind == "routing.assigned":
                assert cid not in live, f"{cid} assigned twice"
                desk = by_id[d.data.desk_id]
                assert desk.serves(fields[cid]) and is_open(desk, d.at)
                assert desk.tier == 1 or cid in overflowed
                live[cid] = desk.id
            elif d.kind == "routing.withdrawn":
                assert live.pop(cid) == d.data.desk_id
            elif d.kind == "routing.overflowed":
                overflowed.add(cid)
        assert invariant_violations(board) == []
        per_desk: dict[str, int] = {}
        for desk_id in live.values():
            per_desk[desk_id] = per_desk.get(desk_id, 0) + 1
        assert all(count <= by_id[d].lines for d, count in per_desk.items())
        restored = Board.restore(json.loads(json.dumps(board.snapshot())), [reg])
        assert restored.snapshot() == board.snapshot()
        changed, gone = board.take_changes()
        stored.update({c["contact_id"]: json.loads(json.dumps(c)) for c in changed})
        for cid in gone:
            stored.pop(cid, None)
        snapshot = board.snapshot()
        assert stored == {c["contact_id"]: c for c in json.loads(json.dumps(snapshot["contacts"]))}
        from_rows = Board.restore({**board.snapshot_header(), "contacts": list(stored.values())}, [reg])
        assert {c["contact_id"]: c for c in from_rows.snapshot()["contacts"]} == stored
        assert from_rows.snapshot_header() == board.snapshot_header()
        assert [c.contact_id for c in from_rows.waiting()] == [c.contact_id for c in board.waiting()]
        assert from_rows.busy == board.busy

    for op in ops:
        if op[0] == "call":
            n += 1
            cid = f"c{n}"
            fields[cid] = op[1]
            calls.append(cid)
            step("contact.received", now, ContactReceived(contact_id=cid, channel="phone", prefecture=op[2]))
            step("contact.field_selected", now, ContactFieldSelected(contact_id=cid, field=op[1], menu_position=1))
        elif op[0] in ("answer", "end", "abandon") and calls:
            cid = calls[op[1] % len(calls)]
            if op[0] == "answer":
                desk = live.get(cid, "d0")
                step("contact.answered", now, ContactAnswered(contact_id=cid, desk_id=desk, organisation_id="x",
                                                              wait_seconds=0.0))
            elif op[0] == "end":
                step("contact.ended", now, ContactEnded(contact_id=cid, talk_seconds=1.0))
            else:
                step("contact.abandoned", now, ContactAbandoned(contact_id=cid, stage="queue", wait_seconds=1.0))
        elif op[0] == "wait":
            now += timedelta(seconds=op[1])
            check(board.tick(now))
        elif op[0] == "late" and calls:
            # an event stamped earlier than the clock (another partition lagging) is applied at the clock
            n += 1
            cid = f"c{n}"
            fields[cid] = "loneliness"
            calls.append(cid)
            step("contact.field_selected", now - timedelta(seconds=op[1]),
                 ContactFieldSelected(contact_id=cid, field="loneliness", menu_position=9))
