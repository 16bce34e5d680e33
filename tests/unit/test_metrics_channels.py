"""Figures by channel and the chat/SNS seats, one sentence each, and the same figures under any order."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.metrics.domain.counting import answer_rate_counts
from services.metrics.domain.facts import fold
from services.metrics.domain.occupancy import SEAT_DIMENSIONS, seat_counts, spells
from services.metrics.domain.periods import Period
from tests.integration.metrics_channel_support import (
    DAY,
    abandoned,
    answered,
    assigned,
    channel_log,
    ended,
    received,
    s,
    transferred,
    triaged,
    withdrawn,
)
from tests.integration.metrics_support import TRIAL1, validated


def counts(log: list[dict[str, Any]], dimension: str | None = None, **kw: Any) -> dict[Any, dict[str, int]]:
    return answer_rate_counts(fold(validated(log)).contacts.values(), DAY, dimension, **kw)


def seats(log: list[dict[str, Any]], dimension: str | None = None, period: Period = DAY,
          **kw: Any) -> dict[Any, dict[str, Any]]:
    facts = fold(validated(log))
    return seat_counts(spells(facts.seat_events.values(), facts.contacts), period, dimension, **kw)


# --- by channel ---------------------------------------------------------------------------------


def test_a_transferred_chat_is_one_attempt_and_one_connection_at_the_desk_that_answered_first():
    log = [received("c1", 0), assigned("c1", 10), answered("c1", 40, 40.0), transferred("c1", 300),
           assigned("c1", 301, desk="chat-b", reason="transferred", n=2), answered("c1", 330, 330.0, "chat-b", n=2),
           ended("c1", 900)]
    total = counts(log, channel="chat")["total"]
    assert (total["attempts"], total["connected"]) == (1, 1)
    assert counts(log, "desk", channel="chat").keys() == {"total", "chat-a"}
    assert fold(validated(log)).contacts["c1"].answered[2] == 40.0  # the first response's wait counts


def test_a_chat_transferred_to_the_phone_stays_a_chat_contact():
    log = [received("c1", 0), assigned("c1", 10), answered("c1", 40, 40.0),
           transferred("c1", 300, to="tel-b", to_channel="phone"),
           assigned("c1", 301, desk="tel-b", seat=None, channel="phone", reason="transferred", n=2),
           answered("c1", 310, 310.0, "tel-b", n=2)]
    by_channel = counts(log, "channel", channel=None)
    assert by_channel.keys() == {"total", "chat"} and by_channel["chat"]["connected"] == 1


def test_attempts_answers_and_abandonments_are_counted_per_channel_and_in_all():
    log = ([received("p1", 0, "phone"), answered("p1", 30, 30.0, "tel-a")]
           + [received("c1", 0), abandoned("c1", 50)] + [received("n1", 0, "sns"), answered("n1", 20, 20.0)])
    by_channel = counts(log, "channel", channel=None)
    assert {k: (v["attempts"], v["connected"], v["abandoned"]) for k, v in by_channel.items()} == {
        "total": (3, 2, 1), "phone": (1, 1, 0), "chat": (1, 0, 1), "sns": (1, 1, 0)}
    assert counts(log, channel="sns")["total"]["attempts"] == 1


def test_the_latest_triage_counts_whatever_order_it_arrives_in():
    log = [received("c1", 0), triaged("c1", 5, "low"), triaged("c1", 9, "imminent", n=2)]
    for order in (log, log[::-1]):
        assert fold(validated(order)).contacts["c1"].triaged[2] == "imminent"


# --- seats --------------------------------------------------------------------------------------


def test_two_overlapping_conversations_on_a_seat_of_two_fill_it_two_thirds():
    log = [received("c1", 0), assigned("c1", 0), answered("c1", 10, 10.0), ended("c1", 1800),
           received("c2", 900, caller=2), assigned("c2", 900), answered("c2", 910, 10.0), ended("c2", 2700)]
    total = seats(log)["total"]
    # in use 10:00–10:45 (2,700 s) of a seat holding 2: capacity 5,400 s; held 1,800 + 1,800 s
    assert total == {"conversations": 2, "held_seconds": 3600.0, "in_use_seconds": 2700.0,
                     "capacity_seconds": 5400.0, "seats": 1}


def test_an_offer_withdrawn_before_a_first_response_holds_the_seat_but_is_no_conversation():
    log = [received("c1", 0), assigned("c1", 0), withdrawn("c1", 120), assigned("c1", 130, seat=2, n=2),
           answered("c1", 140, 140.0), ended("c1", 430)]
    total = seats(log)["total"]
    assert (total["conversations"], total["held_seconds"], total["seats"]) == (1, 120.0 + 300.0, 2)


def test_a_person_who_leaves_before_the_first_response_held_the_seat_but_had_no_conversation():
    log = [received("c1", 0), assigned("c1", 10), abandoned("c1", 70, "ringing")]
    total = seats(log)["total"]
    assert (total["conversations"], total["held_seconds"], total["seats"]) == (0, 60.0, 1)


def test_a_transfer_ends_the_time_at_the_first_seat_and_each_seat_held_a_conversation():
    log = [received("c1", 0), assigned("c1", 0), answered("c1", 30, 30.0), transferred("c1", 600),
           assigned("c1", 600, desk="chat-b", seat=3, reason="transferred", n=2),
           answered("c1", 660, 660.0, "chat-b", n=2), ended("c1", 1200)]
    by_desk = seats(log, "desk")
    assert by_desk["chat-a"]["held_seconds"] == 600.0 and by_desk["chat-b"]["held_seconds"] == 600.0
    assert by_desk["total"]["conversations"] == 2


def test_a_call_taken_at_a_blended_seat_fills_the_whole_seat():
    log = [received("p1", 0, "phone"), assigned("p1", 0, desk="blend-a", seat=1, capacity=3, channel="phone"),
           answered("p1", 5, 5.0, "blend-a"), ended("p1", 600)]
    total = seats(log)["total"]
    assert total["held_seconds"] == total["capacity_seconds"] == 1800.0


def test_a_conversation_still_open_is_not_counted_and_time_is_cut_by_the_hour_it_falls_in():
    log = [received("c1", 3000), assigned("c1", 3000), answered("c1", 3010, 10.0), ended("c1", 4200),
           received("c2", 0, caller=2), assigned("c2", 0, seat=2)]
    by_hour = seats(log, "hour")
    assert by_hour["total"]["conversations"] == 1
    assert (by_hour[10]["in_use_seconds"], by_hour[11]["in_use_seconds"]) == (600.0, 600.0)
    assert (by_hour[10]["conversations"], by_hour[11]["conversations"]) == (1, 0)


def test_a_period_cuts_a_conversation_at_its_edges():
    log = [received("c1", 0), assigned("c1", 0), answered("c1", 10, 10.0), ended("c1", 3600)]
    total = seats(log, period=Period(s(1800), s(7200)))["total"]
    assert (total["conversations"], total["in_use_seconds"]) == (0, 1800.0)


def test_a_partner_sees_only_the_seats_of_its_own_desks():
    log = [received("c1", 0), assigned("c1", 0), ended("c1", 60),
           received("c2", 0, caller=2), assigned("c2", 0, desk="chat-b"), ended("c2", 60)]
    assert seats(log, "desk", organisation="npo-b").keys() == {"total", "chat-b"}


# --- exact under duplicates and any order -------------------------------------------------------


LOG = validated(channel_log(200, seed=23, start=TRIAL1 + timedelta(hours=11)))  # 21:00–03:00 JST


def _seat_figures(facts: Any, dimension: str | None) -> dict[Any, dict[str, Any]]:
    got = seat_counts(spells(facts.seat_events.values(), facts.contacts), DAY, dimension)
    return {k: {n: round(v, 6) if isinstance(v, float) else v for n, v in g.items()} for k, g in got.items()}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), repeats=st.integers(0, 150))
def test_shuffling_and_duplicating_a_mixed_log_never_changes_a_channel_or_seat_figure(seed, repeats):
    rnd = random.Random(seed)
    log = LOG + [rnd.choice(LOG) for _ in range(repeats)]
    rnd.shuffle(log)
    facts = None
    cut = sorted(rnd.sample(range(len(log)), k=5))
    for chunk in (log[a:b] for a, b in zip([0, *cut], [*cut, len(log)], strict=True)):
        facts = fold(chunk, facts)
    reference = fold(LOG)
    assert facts.contacts == reference.contacts and facts.seat_events == reference.seat_events
    for channel in ("phone", "chat", "sns", None):
        for dimension in (None, "channel", "desk", "field", "day", "hour"):
            assert (answer_rate_counts(facts.contacts.values(), DAY, dimension, channel=channel)
                    == answer_rate_counts(reference.contacts.values(), DAY, dimension, channel=channel))
    for dimension in (None, *SEAT_DIMENSIONS):
        assert _seat_figures(facts, dimension) == _seat_figures(reference, dimension)


def test_the_mixed_log_exercises_every_kind_of_seat_spell():
    facts = fold(LOG)
    all_spells = spells(facts.seat_events.values(), facts.contacts)
    assert any(not sp.conversation for sp in all_spells)  # offers withdrawn, people who left
    assert {e.kind for e in facts.seat_events.values()} == {"assigned", "withdrawn", "transferred"}
    total = seat_counts(all_spells, DAY)["total"]
    # each second in use holds at least one conversation (routing, not this log, keeps it within N)
    assert 0 < total["in_use_seconds"] <= total["held_seconds"]
    assert total["conversations"] == sum(sp.conversation for sp in all_spells if DAY.start <= sp.start < DAY.end)


@pytest.mark.parametrize("dimension", SEAT_DIMENSIONS)
def test_groups_add_up_to_the_total(dimension):
    got = _seat_figures(fold(LOG), dimension)
    assert len(got) > 2
    for name in ("conversations", "held_seconds", "in_use_seconds", "capacity_seconds"):
        assert sum(g[name] for k, g in got.items() if k != "total") == pytest.approx(got["total"][name])
