"""Routing's order across partitions (services/routing/domain/, "Time"): timers wait until every
stream has been read past them, and in event-time order the decisions do not depend on the order
the streams are read in."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import ContactAnswered, ContactEnded, ContactFieldSelected, ContactReceived, PlatformHeartbeat
from services.routing.domain.board import Board
from services.routing.domain.invariants import invariant_violations
from tests.unit.routing_support import HOURS, REG, T0

STREAMS = ["0", "1", "2"]


def s(seconds: float):
    return T0 + timedelta(seconds=seconds)


def heartbeat(at):
    return ("platform.heartbeat", at, PlatformHeartbeat(platform_id="tel-platform"))


def summary(decisions):
    return [(d.kind, d.contact_id, d.at, d.data.model_dump(mode="json")) for d in decisions]


def test_a_ring_timeout_waits_for_the_stream_behind():
    """The bug this prevents: an answer read after another partition's later heartbeat."""
    board = Board([REG])
    board.expect(frozenset(["0", "1"]))
    board.observe("0", s(0))
    board.observe("1", s(0))
    out = board.apply("contact.received", s(0), ContactReceived(contact_id="c1", channel="phone"))
    out += board.apply("contact.field_selected", s(0),
                       ContactFieldSelected(contact_id="c1", field="loneliness", menu_position=1))
    assert [d.kind for d in out] == ["routing.assigned"]
    board.observe("1", s(25))  # partition 1's heartbeat at 25 s is read first ...
    assert board.apply(*heartbeat(s(25))) == [] and board.tick(board.watermark) == []
    assert board.clock == s(25) and board.watermark == s(0)
    board.observe("0", s(5))  # ... partition 0's answer at 5 s after it
    board.apply("contact.answered", s(5), ContactAnswered(contact_id="c1", desk_id=out[0].data.desk_id,
                                                          organisation_id="npo-a", wait_seconds=5))
    board.observe("0", s(25))
    assert board.tick(board.watermark) == [], "answered in time: nothing withdrawn"
    assert board.contacts["c1"].state == "talking"


def test_a_timer_the_watermark_passes_late_re_routes_at_the_clock():
    board = Board([REG])
    board.expect(frozenset(STREAMS))
    for stream in STREAMS:
        board.observe(stream, s(0))
    board.apply("contact.received", s(0), ContactReceived(contact_id="c1", channel="phone"))
    board.apply("contact.field_selected", s(0), ContactFieldSelected(contact_id="c1", field="loneliness",
                                                                     menu_position=1))
    board.observe("1", s(40))
    board.observe("2", s(40))
    board.apply(*heartbeat(s(40)))
    board.observe("0", s(40))
    out = board.tick(board.watermark)
    assert [(d.kind, d.at) for d in out] == [("routing.withdrawn", s(20)), ("routing.assigned", s(40))]
    assert invariant_violations(board) == []


# --- event-time order: reading order does not matter -------------------------------------------

op_strategy = st.one_of(
    st.tuples(st.just("call"), st.sampled_from(["loneliness", "hardship"])),
    st.tuples(st.just("answer"), st.integers(0, 30)),
    st.tuples(st.just("end"), st.integers(0, 30)),
    st.tuples(st.just("heartbeat")),
)


def event_log(ops, gaps):
    """(stream, kind, at, data) in event-time order, times strictly increasing; a contact's events on
    the stream of its id, heartbeats on every stream."""
    log, calls, t = [], [], 0.0
    for op, gap in zip(ops, gaps, strict=False):
        t += gap
        if op[0] == "call":
            cid = f"c{len(calls)}"
            calls.append(cid)
            stream = STREAMS[len(calls) % len(STREAMS)]
            log.append((stream, "contact.received", s(t), ContactReceived(contact_id=cid, channel="phone")))
            t += 0.5
            log.append((stream, "contact.field_selected", s(t),
                        ContactFieldSelected(contact_id=cid, field=op[1], menu_position=1)))
        elif op[0] in ("answer", "end") and calls:
            i = op[1] % len(calls)
            stream, cid = STREAMS[(i + 1) % len(STREAMS)], calls[i]
            data = (ContactAnswered(contact_id=cid, desk_id="a-lonely", organisation_id="npo-a", wait_seconds=1)
                    if op[0] == "answer" else ContactEnded(contact_id=cid, talk_seconds=1))
            log.append((stream, f"contact.{op[0]}ed" if op[0] == "answer" else "contact.ended", s(t), data))
        else:
            log += [(stream, *heartbeat(s(t))) for stream in STREAMS]
    t += 600
    log += [(stream, *heartbeat(s(t))) for stream in STREAMS]  # the end: every stream read past it all
    return log


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, max_size=40), gaps=st.lists(st.sampled_from([1, 3, 10, 25, 45]), min_size=40),
       picks=st.lists(st.integers(0, 2), min_size=300), batches=st.lists(st.integers(1, 7), min_size=300),
       reg=st.sampled_from([REG, HOURS]))
def test_held_events_give_the_decisions_of_the_log_applied_in_order(ops, gaps, picks, batches, reg):
    log = event_log(ops, gaps)
    reference = Board([reg])
    expected = []
    for _, kind, at, data in log:
        expected += summary(reference.apply(kind, at, data))

    # The streams read in a random interleaving (each stream's own order kept), in random batches,
    # the board saved and restored between batches as the service does.
    queues = {stream: [e for e in log if e[0] == stream] for stream in STREAMS}
    reading = []
    for pick in picks:
        live = [q for q in queues.values() if q]
        if not live:
            break
        reading.append(live[pick % len(live)].pop(0))
    reading += [e for q in queues.values() for e in q]
    board, got, i, n = Board([reg]), [], 0, 0
    while i < len(reading):
        board.expect(frozenset(STREAMS))
        size = batches[n % len(batches)]
        n += 1
        for stream, kind, at, data in reading[i:i + size]:
            board.observe(stream, at)
            board.hold(stream, ("/partners/tel-platform/telephony", f"e{i}"), kind, at, data)
        i += size
        for held in board.release():
            got += summary(board.apply(held.kind, held.at, held.data))
        got += summary(board.tick(board.watermark))
        assert invariant_violations(board) == []
        board = Board.restore(json.loads(json.dumps(board.snapshot())), [reg])
    assert not board.held
    assert got == expected


def test_no_timer_fires_before_every_stream_was_read():
    board = Board([REG])
    board.expect(frozenset(STREAMS))
    board.observe("0", s(0))
    board.apply("contact.received", s(0), ContactReceived(contact_id="c1", channel="phone"))
    board.apply("contact.field_selected", s(0), ContactFieldSelected(contact_id="c1", field="loneliness",
                                                                     menu_position=1))
    board.observe("1", s(100))
    assert board.watermark is None and board.tick(s(100)) == []
    board.observe("2", s(100))
    assert board.watermark == s(0)
    board.observe("0", s(100))
    assert [d.kind for d in board.tick(board.watermark)][:2] == ["routing.withdrawn", "routing.assigned"]


def test_when_time_is_looked_at_between_events_changes_no_decision():
    """A desk opening at 10:03 takes the contact waiting since 10:02 at 10:03:00 — not at whatever
    moment a heartbeat or a batch's watermark happens to fall on."""
    def run(ticks):
        board, out = Board([HOURS]), []
        out += board.apply("contact.received", s(110), ContactReceived(contact_id="c1", channel="phone"))
        out += board.apply("contact.field_selected", s(120),
                           ContactFieldSelected(contact_id="c1", field="hardship", menu_position=1))
        for t in ticks:
            out += board.tick(s(t))
        out += board.apply(*heartbeat(s(240)))
        return summary(out)

    plain = run([])
    assert [(kind, at) for kind, _, at, _ in plain][:3] == [
        ("routing.queued", s(120)), ("routing.overflowed", s(150)), ("routing.assigned", s(180))]  # 10:03:00
    for ticks in ([150], [185], [181.5, 190], [179.999, 200.25]):
        assert run(ticks) == plain
