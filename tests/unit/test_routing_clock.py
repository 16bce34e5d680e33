"""routing's time when it jumps: a board left decades without an event lives only the last GAP of them
(domain.py, "A jump in time"); below GAP, when time is looked at changes no decision."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import ContactAnswered, ContactEnded, ContactFieldSelected, ContactReceived
from schemas.timezone import JST
from services.routing.domain.board import Board
from services.routing.domain.clock import GAP
from services.routing.domain.invariants import invariant_violations
from tests.unit.routing_support import EVERY_DAY, HOURS, LONELY, REG, Script, at, kinds, registry

YEAR_2100 = datetime(2100, 1, 1, tzinfo=JST)


class CountingBoard(Board):
    """A board that counts the timers it fires: the work a jump costs, whatever the decisions."""

    fired = 0

    def _fire(self, timer, out):  # noqa: ANN001 - the board's own signature
        self.fired += 1
        return super()._fire(timer, out)


def test_a_ringing_contact_and_a_tick_78_years_on_is_withdrawn_once_and_lives_only_the_last_hour():
    s = Script(registry(LONELY, ring_timeout_s=600))
    assert kinds(s.call("c1", "loneliness", t=0)) == [("assigned", "c1", "lonely-1")]
    out = s.tick((YEAR_2100 - at(0)).total_seconds())
    # withdrawn once at its own ring timeout, re-routed when the last hour begins, then rung as an hour
    # of ring timeouts would ring it: 6 rings of 600 s
    rings = int(GAP / timedelta(seconds=600))
    assert len(out) == 2 + 2 * rings
    assert [(d.kind, d.at) for d in out[:2]] == [("routing.withdrawn", at(600)),
                                                 ("routing.assigned", YEAR_2100 - GAP)]
    assert [d.at for d in out[2::2]] == [YEAR_2100 - GAP + timedelta(seconds=600 * k) for k in range(1, rings + 1)]
    assert s.board.clock == YEAR_2100
    # what is saved after the jump decides as the board that made it
    restored = Board.restore(json.loads(json.dumps(s.board.snapshot())), s.board.registries)
    later = YEAR_2100 + timedelta(seconds=700)
    assert [(d.kind, d.at) for d in restored.tick(later)] == [(d.kind, d.at) for d in s.board.tick(later)]


def test_a_jump_costs_decisions_bounded_by_the_gap_whatever_the_ring_timeout_and_the_number_of_years():
    for years in (1, 78):
        s = Script(registry(LONELY, ring_timeout_s=20))  # the trials' ring timeout
        s.call("c1", "loneliness", t=0)
        s.call("c2", "loneliness", t=1)  # waits: its overflow fires once, late
        out = s.tick(years * 365 * 86_400)
        assert len(out) <= 2 + 2 * int(GAP / timedelta(seconds=20)) + 1
        assert [kinds(out).count(k) for k in (("overflowed", "c2"),)] == [1]


def test_a_contact_waiting_for_a_closed_desk_costs_the_minutes_of_the_last_hour_and_is_taken_when_it_opens():
    evening = {"id": "evening", "fields": ["gender"], "lines": 1,
               "hours": [{"days": EVERY_DAY, "open": "17:00", "close": "22:00"}]}
    board = CountingBoard([registry(evening, ring_timeout_s=3600)])  # no ring timeout in the last hour
    board.apply("contact.received", at(0), ContactReceived(contact_id="c1", channel="phone"))
    board.apply("contact.field_selected", at(0), ContactFieldSelected(contact_id="c1", field="gender",
                                                                      menu_position=1))
    out = board.tick(datetime(2100, 1, 4, 17, 30, tzinfo=JST))
    # one minute timer late at 16:30, then one a minute: within the last hour time is lived as always,
    # so the desk opening at 17:00 takes the contact at 17:00 exactly
    assert board.fired <= 2 + 60
    assert [(d.kind, d.at) for d in out if d.kind == "routing.assigned"] == [
        ("routing.assigned", datetime(2100, 1, 4, 17, 0, tzinfo=JST))]
    assert invariant_violations(board) == []


def test_a_timer_firing_late_sets_the_minute_timer_after_the_clock_not_after_its_own_time():
    board = Board([HOURS])
    board.apply("contact.received", at(0), ContactReceived(contact_id="c1", channel="phone"))
    board.apply("contact.field_selected", at(0), ContactFieldSelected(contact_id="c1", field="hardship",
                                                                      menu_position=1))
    board.tick(YEAR_2100 + timedelta(seconds=25))
    assert board.snapshot()["minute_due"] == (YEAR_2100 + timedelta(minutes=1)).isoformat()


# --- below GAP nothing changes ----------------------------------------------------------------

op_strategy = st.one_of(
    st.tuples(st.just("call"), st.sampled_from(["loneliness", "hardship"])),
    st.tuples(st.just("answer"), st.integers(0, 30)),
    st.tuples(st.just("end"), st.integers(0, 30)),
    st.tuples(st.just("heartbeat")),
)


def event_log(ops, gaps):
    """(kind, at, data), times increasing by the gaps: never more than GAP between two events."""
    log, calls, t = [], [], 0.0
    for op, gap in zip(ops, gaps, strict=False):
        t += gap
        if op[0] == "call":
            cid = f"c{len(calls)}"
            calls.append(cid)
            log.append(("contact.received", at(t), ContactReceived(contact_id=cid, channel="phone")))
            log.append(("contact.field_selected", at(t), ContactFieldSelected(contact_id=cid, field=op[1],
                                                                              menu_position=1)))
        elif op[0] == "answer" and calls:
            cid = calls[op[1] % len(calls)]
            log.append(("contact.answered", at(t), ContactAnswered(contact_id=cid, desk_id="a-lonely",
                                                                   organisation_id="npo-a", wait_seconds=1)))
        elif op[0] == "end" and calls:
            log.append(("contact.ended", at(t), ContactEnded(contact_id=calls[op[1] % len(calls)], talk_seconds=1)))
        else:
            log.append(("platform.heartbeat", at(t), None))
    return log, at(t + GAP.total_seconds())


def summary(decisions):
    return [(d.kind, d.contact_id, getattr(d.data, "desk_id", None), d.at) for d in decisions]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, max_size=30),
       gaps=st.lists(st.sampled_from([1, 10, 25, 45, 600, 3000, GAP.total_seconds()]), min_size=30),
       reg=st.sampled_from([REG, HOURS]))
def test_below_the_gap_a_board_fed_only_events_decides_as_one_ticked_at_every_timer(ops, gaps, reg):
    """The replay's model is ticked at every timer it has (tsunagu_tools/simulate/engine.py); routing sees only
    the events. With never more than GAP between two of them, both decide alike."""
    log, end = event_log(ops, gaps)
    events_only, every_timer = Board([reg]), Board([reg])
    got, expected = [], []
    for kind, t, data in [*log, ("platform.heartbeat", end, None)]:
        while (due := every_timer.next_timer_due()) is not None and due <= t:
            expected += summary(every_timer.tick(due))  # fires every timer due by then: the next is later
        got += summary(events_only.apply(kind, t, data) if data is not None else events_only.tick(t))
        expected += summary(every_timer.apply(kind, t, data) if data is not None else every_timer.tick(t))
        assert invariant_violations(events_only) == []
    assert got == expected
