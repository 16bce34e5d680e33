"""The secretariat's definitions, one sentence each, on hand-made contacts."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.metrics.domain.counting import DIMENSIONS, answer_rate_counts
from services.metrics.domain.facts import fold
from services.metrics.domain.periods import JST, Period, PeriodError, hours_by_hour_of_day, resolve_period
from services.metrics.domain.rollups import GRAINS, bin_bounds, bin_of, cover, quantiles_from_bins, within_from_bins
from services.metrics.periods_file import load_periods
from tests.integration.metrics_support import TRIAL1, caller_key, event, synthetic_log, validated

TEL = "/partners/tel-platform/telephony"
WEEK = Period(TRIAL1, TRIAL1 + timedelta(days=7))


def contact(n: int, at: datetime = TRIAL1, *, channel: str = "phone", field: str | None = "loneliness",
            answered: bool = False, ivr_hangup: bool = False, caller: int | None = None) -> list[dict]:
    cid = f"c-{n}"
    key = caller_key(n if caller is None else caller, channel)
    events = [event("contact.received", f"{cid}-r", at, {"contact_id": cid, "channel": channel, "caller_key": key},
                    TEL)]
    if ivr_hangup:
        events.append(event("contact.abandoned", f"{cid}-a", at + timedelta(seconds=10),
                            {"contact_id": cid, "stage": "ivr", "wait_seconds": 10.0}, TEL))
        return events
    if field:
        events.append(event("contact.field_selected", f"{cid}-f", at + timedelta(seconds=20),
                            {"contact_id": cid, "field": field, "menu_position": 9}, TEL))
    if answered:
        events.append(event("contact.answered", f"{cid}-w", at + timedelta(seconds=60),
                            {"contact_id": cid, "desk_id": "desk-1", "organisation_id": "npo-a", "wait_seconds": 40.0},
                            TEL))
    return events


def counts(events: list[dict], dimension: str | None = None, period: Period = WEEK, **kw) -> dict:
    return answer_rate_counts(fold(validated(events)).contacts.values(), period, dimension, **kw)


def test_call_attempts_are_phone_contacts_received_in_the_period():
    events = contact(1) + contact(2, channel="chat") + contact(3, TRIAL1 - timedelta(seconds=1)) + contact(4)
    assert counts(events)["total"]["attempts"] == 2


def test_connected_counts_the_answer_of_an_attempt_even_when_it_comes_after_the_period():
    end = TRIAL1 + timedelta(minutes=1)
    events = contact(1, end - timedelta(seconds=5), answered=True)
    assert counts(events, period=Period(TRIAL1, end))["total"] | {} == counts(events)["total"]
    assert counts(events, period=Period(TRIAL1, end))["total"]["connected"] == 1


def test_an_answer_without_its_contact_received_is_not_counted_until_the_contact_arrives():
    events = contact(1, answered=True)[1:]
    assert counts(events) == {}


def test_answer_rate_per_field_is_among_the_contacts_that_chose_it():
    events = (contact(1, field="suicidal", answered=True) + contact(2, field="suicidal")
              + contact(3, field="loneliness"))
    by_field = counts(events, "field")
    assert (by_field["suicidal"]["attempts"], by_field["suicidal"]["connected"]) == (2, 1)
    assert (by_field["loneliness"]["attempts"], by_field["loneliness"]["connected"]) == (1, 0)


def test_a_hang_up_in_the_voice_menu_before_choosing_is_an_attempt_with_no_field():
    by_field = counts(contact(1, ivr_hangup=True) + contact(2), "field")
    assert by_field["total"]["attempts"] == 2
    assert by_field[None] == by_field[None] | {"attempts": 1, "abandoned_ivr": 1, "connected": 0}


def test_per_caller_rate_counts_callers_who_got_through_at_least_once():
    events = contact(1, caller=100) + contact(2, caller=100, answered=True) + contact(3, caller=200)
    total = counts(events)["total"]
    assert (total["attempts"], total["callers"], total["callers_connected"]) == (3, 2, 1)


def test_a_contact_counts_in_the_hour_and_day_of_its_event_time_in_japan():
    late = datetime.fromisoformat("2022-07-07T14:59:59+00:00")  # 23:59:59 JST
    by_hour = counts(contact(1, late), "hour")
    by_day = counts(contact(1, late), "day")
    assert 23 in by_hour and "2022-07-07" in by_day


def test_the_last_field_chosen_counts_whatever_order_the_choices_arrive_in():
    first = event("contact.field_selected", "f1", TRIAL1 + timedelta(seconds=5),
                  {"contact_id": "c-1", "field": "hardship", "menu_position": 1}, TEL)
    then = event("contact.field_selected", "f2", TRIAL1 + timedelta(seconds=9),
                 {"contact_id": "c-1", "field": "suicidal", "menu_position": 3}, TEL)
    received = contact(1, field=None)
    assert counts(received + [first, then], "field").keys() == {"total", "suicidal"}
    assert counts(received + [then, first], "field").keys() == {"total", "suicidal"}


def test_a_referral_stands_at_its_latest_step_and_was_acknowledged_at_its_first():
    log = validated(synthetic_log(400, seed=3))
    referrals = fold(log).referrals
    assert referrals
    for r in referrals.values():
        assert r.state is not None and r.requested is not None
        if r.acknowledged_at is not None:
            assert r.acknowledged_at >= r.requested[0]


def test_trial1_is_the_first_week_from_10_oclock_japan_time():
    periods = load_periods(Path(__file__).parents[2] / "config" / "periods.yaml")
    assert periods["trial1"].start.isoformat() == "2022-07-07T10:00:00+09:00"
    assert periods["trial1"].end.isoformat() == "2022-07-14T10:00:00+09:00"
    assert "trial2" in periods


def test_a_date_means_a_day_in_japan_and_to_includes_that_day():
    p = resolve_period({}, None, "2022-07-07", "2022-07-07")
    assert (p.start.isoformat(), p.end.isoformat()) == ("2022-07-07T00:00:00+09:00", "2022-07-08T00:00:00+09:00")


@pytest.mark.parametrize("args", [("nope", None, None), (None, "2022-07-07", None), (None, "2022-07-08", "2022-07-07"),
                                  (None, "2022-07-07T10:00:00", "2022-07-08"), ("trial1", "2022-07-07", None)])
def test_a_period_that_cannot_be_understood_is_refused_with_the_reason(args):
    with pytest.raises(PeriodError):
        resolve_period({"trial1": WEEK}, *args)


def test_hours_of_day_cover_the_period_exactly():
    hours = hours_by_hour_of_day(Period(TRIAL1 + timedelta(minutes=30), TRIAL1 + timedelta(days=1, minutes=30)))
    assert sum(hours.values()) == pytest.approx(24)
    assert hours[10] == pytest.approx(1.0)


LOG = validated(synthetic_log(300, seed=11, span=timedelta(hours=6)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), repeats=st.integers(0, 200))
def test_shuffling_and_duplicating_the_event_log_never_changes_any_figure(seed, repeats):
    rnd = random.Random(seed)
    log = LOG + [rnd.choice(LOG) for _ in range(repeats)]
    rnd.shuffle(log)
    # split into arbitrary batches, folded one after another as the consumer would
    facts = None
    cut = sorted(rnd.sample(range(len(log)), k=min(5, len(log))))
    for chunk in (log[a:b] for a, b in zip([0, *cut], [*cut, len(log)], strict=True)):
        facts = fold(chunk, facts)
    reference = fold(LOG)
    assert facts.contacts == reference.contacts
    assert facts.consultations == reference.consultations
    assert facts.referrals == reference.referrals
    for dimension in [None, *DIMENSIONS]:
        assert (answer_rate_counts(facts.contacts.values(), WEEK, dimension)
                == answer_rate_counts(reference.contacts.values(), WEEK, dimension))


def test_heartbeats_withdrawn_assignments_and_created_referrals_never_disturb_a_figure():
    log = synthetic_log(50, seed=2)
    extra = [
        event("platform.heartbeat", "hb-1", TRIAL1, {"platform_id": "tel-platform"}, TEL),
        event("routing.withdrawn", "wd-1", TRIAL1 + timedelta(seconds=30),
              {"contact_id": "c2-3", "desk_id": "d", "organisation_id": "npo-a", "field": "loneliness",
               "reason": "ring_timeout", "ring_seconds": 20.0}, "/tsunagu/routing"),
    ]
    referral = next(e for e in log if e["type"].endswith("referral.requested.v1"))["data"]
    extra.append(event("referral.created", "rc-1", TRIAL1 + timedelta(days=1),
                       {"referral_id": referral["referral_id"], "contact_id": referral["contact_id"]},
                       "/tsunagu/referral"))
    with_extra, plain = fold(validated(log + extra)), fold(validated(log))
    assert with_extra.contacts == plain.contacts and with_extra.consultations == plain.consultations
    assert set(with_extra.referrals) == set(plain.referrals)


@settings(max_examples=200, deadline=None)
@given(start=st.datetimes(datetime(2021, 1, 1), datetime(2023, 12, 31)),
       length=st.timedeltas(timedelta(seconds=1), timedelta(days=500)), coarsest=st.sampled_from(GRAINS))
@example(start=datetime(2022, 7, 7, 0, 0, 0, 500000), length=timedelta(days=1, microseconds=200000), coarsest="m")
def test_a_period_is_covered_by_whole_buckets_and_its_edges_exactly_once(start, length, coarsest):
    period = Period(start.replace(tzinfo=JST), start.replace(tzinfo=JST) + length)
    c = cover(period, coarsest)
    pieces = sorted([(lo, hi) for _, lo, hi in c.buckets] + list(c.edges))
    assert pieces[0][0] == period.start and pieces[-1][1] == period.end
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))  # no gap, no overlap
    assert all(lo < hi for lo, hi in pieces)
    assert all(hi - lo < timedelta(days=1) for lo, hi in c.edges)
    for grain, *bounds in c.buckets:
        assert GRAINS.index(grain) <= GRAINS.index(coarsest)
        for local in (t.astimezone(JST) for t in bounds):
            assert (local.minute, local.second, local.microsecond) == (0, 0, 0)
            assert local.hour == 0 and (grain == "d" or local.day == 1)


def test_answered_within_n_seconds_is_exact_on_every_bucket_edge_and_refused_elsewhere():
    waits = [0.0, 0.4, 5.0, 19.9, 20.0, 20.1, 29.9, 59.5, 60.0, 61.0, 299.0, 3600.0, 90000.0]
    bins: dict[int, int] = {}
    for w in waits:
        bins[bin_of(w)] = bins.get(bin_of(w), 0) + 1
    for n in (0, 5, 20, 30, 60, 120, 300, 600, 3600, 86400):
        assert within_from_bins(bins, n) == sum(w <= n for w in waits), n
    assert within_from_bins(bins, 21) is None


def test_a_percentile_from_the_bins_lies_in_the_bin_of_the_value_of_its_rank():
    rnd = random.Random(5)
    values = sorted(round(rnd.expovariate(1 / 60), 1) for _ in range(501))
    bins: dict[int, int] = {}
    for v in values:
        bins[bin_of(v)] = bins.get(bin_of(v), 0) + 1
    for q, got in zip((0.5, 0.9, 0.99), quantiles_from_bins(bins, (0.5, 0.9, 0.99)), strict=True):
        lo, hi = bin_bounds(values[int(q * (len(values) - 1))])
        assert lo <= got <= hi
    assert quantiles_from_bins({}, (0.5,)) is None
