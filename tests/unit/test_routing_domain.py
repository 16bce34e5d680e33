"""routing's rules as the secretariat states them, on the pure board (no broker, no database)."""

from __future__ import annotations

from schemas import ContactReceived
from services.routing.domain.board import Board
from tests.unit.routing_support import EVERY_DAY, HARDSHIP_A, HARDSHIP_B, LONELY, Script, at, kinds, registry


def test_a_call_goes_to_the_free_line_of_a_desk_serving_its_field():
    s = Script(registry(LONELY, {"id": "hardship-1", "fields": ["hardship"], "lines": 1}))
    out = s.call("c1", "loneliness")
    assert kinds(out) == [("assigned", "c1", "lonely-1")]
    assert out[0].data.reason == "free_line" and out[0].data.queue_position is None


def test_second_call_waits_when_the_only_line_is_busy():
    s = Script(registry(LONELY))
    s.call("c1", "loneliness")
    out = s.call("c2", "loneliness", t=1)
    assert kinds(out) == [("queued", "c2")]
    assert out[0].data.queue_position == 1


def test_the_longest_waiting_caller_takes_the_line_that_frees():
    s = Script(registry(LONELY))
    s.call("c1", "loneliness")
    s.answer("c1", "lonely-1", 1)
    s.call("c2", "loneliness", t=2)
    s.call("c3", "loneliness", t=3)
    out = s.end("c1", 4)
    assert kinds(out) == [("assigned", "c2", "lonely-1")]
    assert out[0].data.reason == "line_freed" and out[0].data.queue_position == 1


def test_suicidal_and_under18_callers_are_served_first_on_a_shared_desk():
    s = Script(registry({"id": "shared", "fields": ["loneliness", "suicidal", "under18"], "lines": 1}))
    s.call("c1", "loneliness")
    s.call("c2", "loneliness", t=1)
    s.call("c3", "under18", t=2)
    s.call("c4", "suicidal", t=3)
    assert [d.contact_id for d in s.end("c1", 4)] == ["c4"]
    assert [d.contact_id for d in s.end("c4", 5)] == ["c3"]
    assert [d.contact_id for d in s.end("c3", 6)] == ["c2"]


def test_a_desk_in_the_callers_prefecture_is_preferred():
    s = Script(registry({"id": "tokyo", "fields": ["hardship"], "lines": 1, "regions": ["13"]},
                        {"id": "anywhere", "fields": ["hardship"], "lines": 1}))
    assert kinds(s.call("c1", "hardship", prefecture="13")) == [("assigned", "c1", "tokyo")]
    assert kinds(s.call("c2", "hardship", t=1, prefecture="13")) == [("assigned", "c2", "anywhere")]


def test_among_equal_desks_the_one_idle_longest_gets_the_call():
    s = Script(registry(HARDSHIP_A, HARDSHIP_B))
    s.call("c1", "hardship")  # a (never used, id order)
    s.call("c2", "hardship", t=1)  # b
    s.end("c1", 2)  # a idle since 2
    s.end("c2", 3)  # b idle since 3
    assert kinds(s.call("c3", "hardship", t=4)) == [("assigned", "c3", "a")]


def test_a_closed_desk_gets_no_calls_and_takes_its_queue_when_it_opens():
    evening = {"id": "evening", "fields": ["gender"], "lines": 1,
               "hours": [{"days": EVERY_DAY, "open": "17:00", "close": "22:00"}]}
    s = Script(registry(evening))
    assert kinds(s.call("c1", "gender", t=0)) == [("queued", "c1")]  # 10:00 JST
    out = s.tick(7 * 3600)  # 17:00 JST
    assert kinds(out)[-1] == ("assigned", "c1", "evening")


def test_a_caller_waiting_past_the_fields_limit_overflows_to_a_backup_desk():
    s = Script(registry(LONELY, {"id": "backup", "fields": ["loneliness"], "lines": 1, "tier": 2},
                        overflow_after_s={"default": 30, "loneliness": 45}))
    s.call("c1", "loneliness")
    s.answer("c1", "lonely-1", 1)
    s.call("c2", "loneliness", t=1)
    assert s.tick(40) == []
    out = s.tick(46)
    assert kinds(out) == [("overflowed", "c2"), ("assigned", "c2", "backup")]
    assert out[0].data.waited_seconds == 45 and out[0].at == at(46)
    assert out[1].data.reason == "overflow"


def test_an_assignment_not_answered_in_time_is_withdrawn_and_the_caller_rerouted():
    s = Script(registry(HARDSHIP_A, HARDSHIP_B))
    s.call("c1", "hardship")  # a
    s.answer("c1", "a", 1)
    s.call("c2", "hardship", t=2)  # b, never answered
    s.end("c1", 10)
    out = s.tick(23)
    assert kinds(out) == [("withdrawn", "c2", "b"), ("assigned", "c2", "a")]
    assert out[0].data.ring_seconds == 20 and out[1].data.reason == "rerouted"


def test_an_answered_call_is_not_withdrawn():
    s = Script(registry(LONELY))
    s.call("c1", "loneliness")
    s.answer("c1", "lonely-1", 5)
    assert s.tick(100) == []


def test_a_caller_who_hangs_up_leaves_the_queue_and_frees_nothing_else():
    s = Script(registry(LONELY))
    s.call("c1", "loneliness")
    s.call("c2", "loneliness", t=1)
    s.call("c3", "loneliness", t=2)
    s.hang_up("c2", 3)
    assert [d.contact_id for d in s.end("c1", 4)] == ["c3"]


def test_a_new_registry_version_starts_every_desk_level_whatever_they_did_before():
    # Under v1 only a served hardship and released a line; under v2 b joins. Idle time counts from
    # v2's start for both (not "b idle since forever"), so the tie goes to the desk id: a replica fed
    # only v2 (the replay's model) decides the same.
    v1 = registry(HARDSHIP_A, {**HARDSHIP_B, "fields": ["loneliness"]}, version="t1")
    v2 = registry(HARDSHIP_A, HARDSHIP_B, version="t2", effective_from=at(100))
    s = Script(v1, v2)
    s.call("c1", "hardship")  # a
    s.end("c1", 5)  # a idle since 5, before v2
    assert kinds(s.call("c2", "hardship", t=200)) == [("assigned", "c2", "a")]
    fresh = Script(v2)
    assert kinds(fresh.call("c2", "hardship", t=200)) == [("assigned", "c2", "a")]
    s.end("c2", 210)  # a idle since 210, after v2: now b has been idle longer
    assert kinds(s.call("c3", "hardship", t=220)) == [("assigned", "c3", "b")]


def test_the_network_changes_on_the_effective_date_without_losing_contacts_in_flight():
    v1 = registry(LONELY, version="t1")
    v2 = registry({**LONELY, "lines": 3}, version="t2", effective_from=at(100))
    s = Script(v1, v2)
    s.call("c1", "loneliness")
    s.call("c2", "loneliness", t=1)
    s.call("c3", "loneliness", t=2)
    s.answer("c1", "lonely-1", 3)
    out = s.tick(100)
    assert sorted(d.contact_id for d in out if d.kind == "routing.assigned") == ["c2", "c3"]


def test_a_desk_that_loses_lines_keeps_its_calls_but_takes_no_new_one_until_below_its_lines():
    v1 = registry({**LONELY, "lines": 2}, version="t1")
    v2 = registry(LONELY, version="t2", effective_from=at(100))
    s = Script(v1, v2)
    s.call("c1", "loneliness")
    s.call("c2", "loneliness", t=1)
    s.answer("c1", "lonely-1", 2)
    s.answer("c2", "lonely-1", 2)
    s.call("c3", "loneliness", t=101)
    assert [d.kind for d in s.end("c1", 102)] == []  # still 1 of 1 line busy
    assert [d.contact_id for d in s.end("c2", 103)] == ["c3"]


def test_events_older_than_the_clock_are_applied_at_the_clock():
    s = Script(registry(LONELY))
    s.call("c1", "loneliness", t=50)
    out = s.call("c2", "loneliness", t=10)
    assert out[0].at == at(50)


def test_the_board_restored_from_its_snapshot_decides_exactly_as_the_original():
    reg = registry(LONELY, {"id": "backup", "fields": ["loneliness"], "lines": 1, "tier": 2})
    s = Script(reg)
    for i in range(5):
        s.call(f"c{i}", "loneliness", t=i)
    import json
    copy = Board.restore(json.loads(json.dumps(s.board.snapshot())), [reg])
    assert copy.snapshot() == s.board.snapshot()
    a = s.board.tick(at(100))
    b = copy.tick(at(100))
    assert a == b and copy.snapshot() == s.board.snapshot()


def test_a_caller_who_never_chooses_a_field_is_forgotten_after_an_hour():
    s = Script(registry(LONELY))
    s._apply("contact.received", 0, ContactReceived(contact_id="c1", channel="phone"))
    s.tick(3599)
    assert "c1" in s.board.contacts
    s.tick(3600)
    assert "c1" not in s.board.contacts


def test_with_no_desk_registry_every_caller_waits_until_one_takes_effect():
    s = Script()
    assert kinds(s.call("c1", "loneliness")) == [("queued", "c1")]
    s.board.set_registries([registry(LONELY, effective_from=at(10))])
    assert kinds(s.tick(10)) == [("assigned", "c1", "lonely-1")]


def test_a_save_writes_every_contact_a_step_changed_also_the_one_a_freed_line_went_to():
    s = Script(registry(LONELY))
    s.board = Board(s.board.registries, track_changes=True)
    s.call("c1", "loneliness")
    s.call("c2", "loneliness", t=1)
    s.board.take_changes()
    s.end("c1", 2)  # c1 leaves; c2, queued, gets its line
    changed, gone = s.board.take_changes()
    assert gone == ["c1"]
    assert [(c["contact_id"], c["state"], c["desk_id"]) for c in changed] == [("c2", "ringing", "lonely-1")]
    s.tick(30)  # c2 rings out (timeout 20 s): withdrawn, queued again, offered again
    changed, gone = s.board.take_changes()
    assert [c["contact_id"] for c in changed] == ["c2"] and gone == []
    assert s.board.take_changes() == ([], [])


def test_ops_see_per_field_the_lines_open_now_and_how_many_are_free():
    shared = {"id": "pool", "fields": ["loneliness", "hardship"], "lines": 2}
    s = Script(registry(LONELY, shared))
    s.call("c1", "loneliness")
    s.call("c2", "loneliness", t=1)
    assert s.board.lines_by_field() == {"loneliness": (3, 1, 0, 0), "hardship": (2, 1, 0, 0)}
    s.end("c1", 2)
    assert s.board.lines_by_field() == {"loneliness": (3, 2, 0, 0), "hardship": (2, 1, 0, 0)}
