"""Chat and SNS on the board: seats holding several conversations, blended desks, triage order, imminent
risk across fields, the text channels' own clock, and transfers."""

from __future__ import annotations

from schemas import ContactFieldSelected, ContactReceived, ContactTransferred, ContactTriaged
from tests.unit.routing_support import Script, at, kinds, registry


class Chats(Script):
    def chat(self, cid: str, field: str, t: float = 0, channel: str = "chat") -> list:
        self._apply("contact.received", t, ContactReceived(contact_id=cid, channel=channel))
        return self._apply("contact.field_selected", t, ContactFieldSelected(contact_id=cid, field=field,
                                                                               menu_position=1))

    def triage(self, cid: str, risk: str, t: float) -> list:
        return self._apply("contact.triaged", t, ContactTriaged(contact_id=cid, risk=risk))

    def transfer(self, cid: str, t: float, **where) -> list:
        return self._apply("contact.transferred", t, ContactTransferred(contact_id=cid, **where))


def seats(decisions) -> list[tuple]:
    return [(d.data.contact_id, d.data.desk_id, d.data.seat) for d in decisions if d.kind == "routing.assigned"]


LINE_WINDOW = {"id": "line", "fields": ["loneliness"], "lines": 0, "seats": 2, "conversations_per_seat": 2}
PHONE = {"id": "phone", "fields": ["loneliness"], "lines": 1}


def test_chats_fill_the_least_loaded_seat_and_never_more_than_n_per_seat():
    s = Chats(registry(LINE_WINDOW, PHONE))
    for i in range(5):
        s.chat(f"m{i}", "loneliness", t=i)
    assert seats(s.decisions) == [("m0", "line", 1), ("m1", "line", 2), ("m2", "line", 1), ("m3", "line", 2)]
    assert kinds(s.decisions)[-1] == ("queued", "m4")
    assert s.decisions[0].data.seat_capacity == 2 and s.decisions[0].data.channel == "chat"
    s.end("m1", 10)  # seat 2 has room again: the waiting chat takes it, not the phone line
    assert seats(s.decisions[-1:]) == [("m4", "line", 2)]


def test_a_call_never_takes_a_seat_unless_the_desk_is_blended_and_the_seat_holds_nothing():
    s = Chats(registry({**LINE_WINDOW, "blended": False}))
    s.call("p1", "loneliness")
    assert kinds(s.decisions) == [("queued", "p1")]

    b = Chats(registry({**LINE_WINDOW, "blended": True}))
    b.chat("m1", "loneliness", t=0)
    b.call("p1", "loneliness", t=1)  # seat 2 holds nothing: the call takes it whole
    b.chat("m2", "loneliness", t=2)  # seat 1 has room; seat 2 is on a call
    b.chat("m3", "loneliness", t=3)  # no seat has room
    assert seats(b.decisions) == [("m1", "line", 1), ("p1", "line", 2), ("m2", "line", 1)]
    assert kinds(b.decisions)[-1] == ("queued", "m3")
    b.end("p1", 10)
    assert seats(b.decisions[-1:]) == [("m3", "line", 2)]


def test_a_text_channel_the_seats_do_not_take_waits_for_one_that_does():
    s = Chats(registry({**LINE_WINDOW, "seat_channels": ["sns"]},
                       {"id": "web", "fields": ["loneliness"], "lines": 0, "seats": 1}))
    s.chat("m1", "loneliness", channel="chat")
    s.chat("l1", "loneliness", channel="sns")
    assert seats(s.decisions) == [("m1", "web", 1), ("l1", "line", 1)]


def test_triage_orders_the_queue_before_priority_and_a_late_triage_reorders_it():
    s = Chats(registry({"id": "one", "fields": ["loneliness", "suicidal"], "lines": 0, "seats": 1}))
    s.chat("busy", "loneliness", t=0)
    s.chat("a", "suicidal", t=1)  # a priority field, not triaged (ranks as medium)
    s.chat("b", "loneliness", t=2)
    s.chat("c", "loneliness", t=3)
    s.triage("a", "low", 4)  # screening says low: behind the untriaged
    s.triage("c", "high", 5)  # late, and high: first
    assert [c.contact_id for c in s.board.waiting()] == ["c", "b", "a"]
    assert s.board.waiting()[0].risk == "high"
    s.end("busy", 10)
    assert seats(s.decisions[-1:]) == [("c", "one", 1)]


def test_imminent_risk_reaches_a_desk_configured_for_it_from_any_field():
    s = Chats(registry(LINE_WINDOW, {"id": "crisis", "fields": ["suicidal"], "lines": 0, "seats": 1,
                                     "imminent": True}))
    for i in range(4):
        s.chat(f"m{i}", "loneliness", t=i)
    s.chat("m4", "loneliness", t=4)
    assert kinds(s.decisions)[-1] == ("queued", "m4")
    s.triage("m4", "imminent", 5)
    assert seats(s.decisions[-1:]) == [("m4", "crisis", 1)]


def test_a_chat_waits_minutes_before_overflow_and_is_withdrawn_after_its_offer_timeout():
    backup = {"id": "backup", "fields": ["loneliness"], "lines": 1, "seats": 1, "tier": 2}
    s = Chats(registry({**LINE_WINDOW, "seats": 1, "conversations_per_seat": 1}, backup,
                       channels={"chat": {"overflow_after_s": {"default": 240}, "offer_timeout_s": 90}}))
    s.chat("m1", "loneliness", t=0)
    s.chat("m2", "loneliness", t=1)
    s.call("p1", "loneliness", t=1)
    s.tick(40)  # the call overflows after 30 s; the chat does not
    assert ("overflowed", "p1") in kinds(s.decisions) and ("overflowed", "m2") not in kinds(s.decisions)
    s.tick(89)
    assert ("withdrawn", "m1", "line") not in kinds(s.decisions)
    s.tick(91)  # m1 had no first response within 90 s
    withdrawn = [(d.data.contact_id, d.data.reason, d.at) for d in s.decisions if d.kind == "routing.withdrawn"]
    assert ("m1", "offer_timeout", at(90)) in withdrawn and ("p1", "ring_timeout", at(51)) in withdrawn
    s.tick(250)
    assert ("overflowed", "m2") in kinds(s.decisions)


def test_a_transfer_moves_a_live_chat_to_the_phone_keeping_its_place_and_names_the_new_assignment():
    s = Chats(registry(LINE_WINDOW, PHONE, {"id": "phone-2", "fields": ["loneliness"], "lines": 1}))
    s.call("p0", "loneliness", t=0)
    s.call("p1", "loneliness", t=1)
    s.chat("m1", "loneliness", t=2)
    s.call("p2", "loneliness", t=3)  # waits for a line
    s.answer("m1", "line", 4)
    s.transfer("m1", 5, from_desk_id="line", to_field="loneliness", to_channel="phone")
    # m1 chose its field before p2 called: it is first in the phone queue, and its seat is free
    assert [c.contact_id for c in s.board.waiting()] == ["m1", "p2"]
    assert s.board.seat_load == {}
    s.end("p0", 6)
    assigned = s.decisions[-1]
    assert (assigned.data.contact_id, assigned.data.reason, assigned.data.channel, assigned.data.seat) == (
        "m1", "transferred", "phone", None)


def test_a_transfer_to_a_named_desk_waits_for_it_and_one_from_a_desk_that_does_not_hold_the_contact_moves_nothing():
    s = Chats(registry(LINE_WINDOW, {"id": "specialist", "fields": ["hardship"], "lines": 0, "seats": 1,
                                     "conversations_per_seat": 1}))
    s.chat("x", "hardship", t=0)  # holds the specialist's only seat
    s.chat("m1", "loneliness", t=1)
    before = s.board.snapshot()
    assert s.transfer("m1", 2, from_desk_id="specialist", to_desk_id="line") == []
    assert s.board.snapshot()["contacts"] == before["contacts"]
    s.transfer("m1", 3, from_desk_id="line", to_desk_id="specialist")
    assert kinds(s.decisions)[-1] == ("queued", "m1")  # the seat at line is free, but the transfer named specialist
    s.end("x", 5)
    assert seats(s.decisions[-1:]) == [("m1", "specialist", 1)]
    assert s.decisions[-1].data.reason == "transferred"


def test_only_the_desk_s_organisation_or_the_contact_s_platform_hands_a_contact_on():
    s = Chats(registry({**LINE_WINDOW, "org": "npo-line"}, {**PHONE, "org": "npo-phone"}))
    s.board.apply("contact.received", at(0), ContactReceived(contact_id="m1", channel="chat"), sender="platform")
    s.chat("m1", "loneliness", t=0)
    s.answer("m1", "line", 1)
    move = ContactTransferred(contact_id="m1", from_desk_id="line", to_desk_id="phone", to_channel="phone")
    # another organisation that once held it (or never did) moves nothing
    assert s.board.apply("contact.transferred", at(2), move, sender="npo-phone") == []
    assert s.board.contacts["m1"].desk_id == "line"
    assert [d.kind for d in s.board.apply("contact.transferred", at(3), move, sender="npo-line")] == [
        "routing.assigned"]
    back = ContactTransferred(contact_id="m1", from_desk_id="phone", to_desk_id="line", to_channel="chat")
    assert [d.data.desk_id for d in s.board.apply("contact.transferred", at(4), back, sender="platform")] == ["line"]
