"""When a replay has caught up with the topics: decided from offsets alone, on consecutive checks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.metrics.domain.catch_up import CatchUpRule, behind

A, B = ("t.contact.events", 0), ("t.contact.events", 1)


def test_records_behind_are_the_end_offsets_less_what_was_applied_never_below_zero():
    assert behind({A: 10, B: 5}, {A: 4, B: 5}) == 6
    assert behind({A: 10}, {A: 12}) == 0  # an end offset read low counts as nothing behind
    assert behind({A: 3, B: 2}, {}) == 5  # nothing applied: from offset 0


def test_caught_up_only_after_two_consecutive_checks_with_nothing_behind():
    rule = CatchUpRule()
    assert not rule.observe({A: 10, B: 5}, {A: 10, B: 5})
    assert rule.observe({A: 10, B: 5}, {A: 10, B: 5})


def test_a_check_with_records_behind_starts_the_count_again():
    rule = CatchUpRule()
    assert not rule.observe({A: 10}, {A: 10})
    assert not rule.observe({A: 12}, {A: 10})  # more arrived meanwhile
    assert not rule.observe({A: 12}, {A: 12})
    assert rule.observe({A: 12}, {A: 12})


def test_no_partitions_known_is_never_caught_up():
    rule = CatchUpRule()
    for _ in range(5):
        assert not rule.observe({}, {})


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=30))
def test_caught_up_means_the_last_two_checks_found_nothing_behind(checks):
    rule = CatchUpRule()
    said = [rule.observe({A: end}, {A: done}) for end, done in checks]
    for i, yes in enumerate(said):
        assert yes == (i >= 1 and all(done >= end for end, done in checks[i - 1:i + 1]))
