"""The chat-seat model against Erlang-A where it must equal it, and against a discrete-event simulation
(simpy, fixed seeds) of seats that each keep their own conversations, least-loaded placement, patience
and a first-response delay."""

from __future__ import annotations

import math
import random
from collections import deque

import pytest
import simpy

from services.metrics.erlang import ErlangA
from services.metrics.reports import SeatAim, seat_hour, seat_inputs
from services.metrics.seats_plan import ChatDesk, holding_rate, seats_needed

# 60 contacts an hour, 20-minute conversations alone on a seat, 10 minutes' patience, 5 minutes' target
LAM, MU1, THETA, X = 1 / 60, 1 / 1200, 1 / 600, 300.0


def simulate(desk: ChatDesk, within: float, *, contacts: int = 40_000, seed: int = 11) -> tuple[float, float]:
    """Shares of contacts with a first response, and with one within ``within`` seconds.

    Unlike the model, every seat keeps its own count: a conversation is work (exponential, mean 1/μ1)
    done at speed k^(−α) while its seat holds k, so seats drift apart as conversations end.
    """
    rnd = random.Random(seed)
    env = simpy.Environment()
    n_seats, per_seat, alpha, delay = desk.seats, desk.per_seat, desk.slowdown, desk.response_delay
    load = [0] * n_seats  # conversations on each seat, the ones still awaiting a first response included
    talking: list[dict[int, float]] = [{} for _ in range(n_seats)]  # conversation -> work left
    wake = [env.event() for _ in range(n_seats)]
    last = [0.0] * n_seats  # when each seat's work was last brought up to date
    queue: deque[simpy.Event] = deque()
    counts = {"responded": 0, "within": 0}

    def advance(seat: int) -> None:
        """Do the seat's work since ``last`` at the speed its count gave; call before the count changes."""
        k = load[seat]
        done = (env.now - last[seat]) * (k**-alpha if k else 0.0)
        last[seat] = env.now
        for c in talking[seat]:
            talking[seat][c] -= done

    def poke(seat: int) -> None:
        if not wake[seat].triggered:
            wake[seat].succeed()

    def free_slot(seat: int) -> None:
        advance(seat)
        load[seat] -= 1
        if queue:  # anyone waiting implies every seat full: the head takes this slot
            load[seat] += 1
            queue.popleft().succeed(seat)
        poke(seat)

    def seat_loop(seat: int):
        while True:
            wake[seat] = env.event()
            conv = talking[seat]
            if conv:
                yield env.timeout(min(conv.values()) * load[seat] ** alpha) | wake[seat]
            else:
                yield wake[seat]
            advance(seat)
            for c in [c for c, left in conv.items() if left <= 1e-7]:
                del conv[c]
                free_slot(seat)

    def person(cid: int):
        arrived = env.now
        patience = rnd.expovariate(desk.abandon_rate) if desk.abandon_rate else math.inf
        room = [i for i in range(n_seats) if load[i] < per_seat]
        if room:
            seat = min(room, key=lambda i: (load[i], i))
            advance(seat)
            load[seat] += 1
            poke(seat)
        else:
            given = env.event()
            queue.append(given)
            yield given | env.timeout(patience)
            if not given.triggered:
                queue.remove(given)
                return
            seat = given.value
        waited = env.now - arrived
        if patience < waited + delay:  # leaves while the first response is being typed
            yield env.timeout(patience - waited)
            free_slot(seat)
            return
        yield env.timeout(delay)
        counts["responded"] += 1
        counts["within"] += env.now - arrived <= within
        advance(seat)
        talking[seat][cid] = rnd.expovariate(desk.conversation_rate)
        poke(seat)

    def arrivals():
        for cid in range(contacts):
            yield env.timeout(rnd.expovariate(desk.arrival_rate))
            env.process(person(cid))

    for seat in range(n_seats):
        env.process(seat_loop(seat))
    env.run(until=env.process(arrivals()))
    env.run(until=env.now + 50 / desk.conversation_rate)  # let the last contacts finish
    return counts["responded"] / contacts, counts["within"] / contacts


def test_independent_slots_are_erlang_a_with_seats_times_conversations():
    desk = ChatDesk(LAM, MU1, THETA, seats=6, per_seat=3, slowdown=0.0)
    lines = ErlangA(LAM, MU1, THETA, lines=18)
    assert desk.p_responded() == pytest.approx(lines.p_served(), abs=1e-12)
    assert desk.p_responded_within(X) == pytest.approx(lines.p_served_within(X), abs=1e-12)
    assert desk.p_wait() == pytest.approx(lines.p_wait(), abs=1e-12)


def test_one_conversation_per_seat_is_erlang_a_whatever_the_slowdown():
    desk = ChatDesk(LAM, MU1, THETA, seats=17, per_seat=1, slowdown=0.7)
    lines = ErlangA(LAM, MU1, THETA, lines=17)
    assert desk.p_responded_within(X) == pytest.approx(lines.p_served_within(X), abs=1e-12)


def test_a_slower_counsellor_answers_fewer_in_time():
    rates = [ChatDesk(LAM, MU1, THETA, 6, 3, slowdown=a).p_responded_within(X) for a in (0.0, 0.3, 0.6, 1.0)]
    assert rates == sorted(rates, reverse=True)
    assert rates[0] - rates[-1] > 0.1


def test_the_first_response_delay_costs_the_patience_lost_while_typing():
    base = ChatDesk(LAM, MU1, THETA, 8, 3)
    slow = ChatDesk(LAM, MU1, THETA, 8, 3, response_delay=60)
    assert slow.p_responded() == pytest.approx(base.p_responded() * math.exp(-THETA * 60), rel=1e-12)
    assert slow.p_responded_within(59) == 0.0
    assert slow.p_responded_within(10_000) == pytest.approx(slow.p_responded(), abs=1e-9)


# (seats, per seat, slowdown, response delay): 60 contacts an hour, mostly near the 80 % target. Exact cases
# (α = 0 or N = 1, with d = 0) differ from the simulation by its noise only; 0 < α adds the even-split
# approximation and d > 0 the exponential holding time, both measured well under 0.01 here — so one
# tolerance, 0.02 absolute on each share, holds the noise (about ±0.01 at 60 000 contacts) and the gap.
GRID = [
    (6, 3, 0.0, 0.0),
    (20, 1, 1.0, 0.0),
    (11, 3, 0.5, 0.0),
    (18, 4, 1.0, 0.0),
    (13, 2, 0.5, 0.0),
    (11, 5, 0.7, 0.0),
    (3, 3, 1.0, 0.0),  # overloaded: most leave
    (20, 3, 1.0, 0.0),  # ample seats holding 1 or 2: where the spread matters most (packed seats: 6 points off)
    (16, 3, 0.7, 0.0),
    (7, 3, 0.0, 60.0),
]
TOLERANCE = 0.02


@pytest.mark.parametrize(("seats", "per_seat", "slowdown", "delay"), GRID)
def test_the_model_agrees_with_a_simulated_chat_desk(seats, per_seat, slowdown, delay):
    mu1 = holding_rate(1 / MU1, THETA, delay)
    desk = ChatDesk(LAM, MU1, THETA, seats, per_seat, slowdown, delay)
    sim_responded, sim_within = simulate(desk, X, contacts=60_000)
    model = ChatDesk(LAM, mu1, THETA, seats, per_seat, slowdown, delay)
    assert model.p_responded() == pytest.approx(sim_responded, abs=TOLERANCE)
    assert model.p_responded_within(X) == pytest.approx(sim_within, abs=TOLERANCE)


def test_the_fewest_seats_reach_the_target_and_one_fewer_does_not():
    for slowdown in (0.0, 0.5):
        s = seats_needed(LAM, MU1, THETA, per_seat=3, target=0.8, within_s=X, slowdown=slowdown)
        assert ChatDesk(LAM, MU1, THETA, s, 3, slowdown).p_responded_within(X) >= 0.8
        assert ChatDesk(LAM, MU1, THETA, s - 1, 3, slowdown).p_responded_within(X) < 0.8
    assert seats_needed(0.0, MU1, THETA, per_seat=3) == 0


def test_more_seats_never_answer_fewer_in_time():
    rates = [ChatDesk(LAM, MU1, THETA, s, 3, slowdown=0.5).p_responded_within(X) for s in range(1, 15)]
    assert rates == sorted(rates)


def test_a_target_beyond_what_patience_allows_is_refused():
    # 5 minutes' patience and a 2-minute first response: e^(-0.4) ≈ 67 % at best
    with pytest.raises(ValueError, match="response delay"):
        seats_needed(LAM, MU1, 1 / 300, per_seat=3, target=0.8, within_s=X, response_delay=120)


def test_the_plan_takes_seats_from_measured_conversation_patience_and_delay():
    aim = SeatAim(("chat", "sns"), per_seat=3, within_s=X, target=0.8)
    service = {"talk_mean": 1200.0, "abandoned": 10, "waited_seconds": 6000.0}  # 10 left in 6000 s of waiting
    field = seat_inputs(service, 30.0, None, 7, aim)
    assert field["patience_mean_seconds"] == 600.0
    assert field["current_seats"] == 3 and field["current_seats_source"].startswith("observed peak")
    assert field["best_possible_share"] == pytest.approx(math.exp(-30 / 600))
    row = seat_hour({"field": "loneliness", "hour": 21, "attempts": 420, "connected": 300, "within": 210},
                    LAM, field, aim)
    mu1 = holding_rate(1200.0, THETA, 30.0)
    assert row["seats_needed"] == seats_needed(LAM, mu1, THETA, per_seat=3, target=0.8, within_s=X,
                                               response_delay=30.0)
    assert row["predicted_within"] == pytest.approx(ChatDesk(LAM, mu1, THETA, 3, 3, response_delay=30.0)
                                                    .p_responded_within(X))
    assert row["observed_within"] == 0.5 and row["arrivals_per_hour"] == pytest.approx(60)


def test_the_plan_gives_no_seat_count_where_patience_runs_out_while_the_first_response_is_typed():
    aim = SeatAim(("chat",), per_seat=2, within_s=X, target=0.8)
    field = seat_inputs({"talk_mean": 900.0, "abandoned": 50, "waited_seconds": 5000.0}, 60.0, 4, 0, aim)
    assert field["best_possible_share"] < 0.8 and field["current_seats"] == 4
    row = seat_hour({"field": "suicidal", "hour": 2, "attempts": 10, "connected": 4, "within": 2}, LAM, field, aim)
    assert row["seats_needed"] is None and 0 < row["predicted_within"] < field["best_possible_share"]


def test_a_seat_plan_is_only_for_text_channels():
    with pytest.raises(ValueError, match="text channels"):
        SeatAim(("phone",))
