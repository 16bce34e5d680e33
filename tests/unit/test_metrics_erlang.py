"""Erlang-A (M/M/n+M) against closed forms and a discrete-event simulation (simpy, fixed seed)."""

from __future__ import annotations

import math
import random

import pytest
import simpy

from services.metrics.erlang import ErlangA, lines_needed


def erlang_c(lam: float, mu: float, n: int) -> float:
    a = lam / mu
    top = a**n / math.factorial(n) * n / (n - a)
    return top / (sum(a**k / math.factorial(k) for k in range(n)) + top)


def simulate(lam: float, mu: float, theta: float, n: int, t: float, *, calls: int = 60_000, seed: int = 42):
    """Share of callers served, and served within t, in an M/M/n+M call centre."""
    rnd = random.Random(seed)
    env = simpy.Environment()
    lines = simpy.Resource(env, capacity=n)
    served = within = 0

    def caller():
        nonlocal served, within
        arrived = env.now
        with lines.request() as line:
            patience = env.timeout(rnd.expovariate(theta))
            got = yield line | patience
            if line in got:
                served += 1
                within += env.now - arrived <= t
                yield env.timeout(rnd.expovariate(mu))

    def arrivals():
        for _ in range(calls):
            yield env.timeout(rnd.expovariate(lam))
            env.process(caller())

    env.process(arrivals())
    env.run()
    return served / calls, within / calls


def test_without_abandonment_the_wait_probability_is_erlang_c():
    model = ErlangA(arrival_rate=4.0, service_rate=1.0, abandon_rate=0.0, lines=6)
    assert model.p_wait() == pytest.approx(erlang_c(4.0, 1.0, 6), rel=1e-9)
    assert model.p_served() == 1.0


def test_when_patience_equals_talk_time_the_system_is_an_infinite_server_queue():
    lam, mu, n = 3.0, 1.0, 2
    model = ErlangA(lam, mu, mu, n)
    a = lam / mu
    poisson = [math.exp(-a) * a**k / math.factorial(k) for k in range(60)]
    assert model.distribution()[:10] == pytest.approx(poisson[:10], rel=1e-9)
    mean_queue = sum(max(k - n, 0) * p for k, p in enumerate(poisson))
    assert model.p_abandon() == pytest.approx(mu * mean_queue / lam, rel=1e-9)


def test_served_within_a_very_long_time_is_served_at_all():
    model = ErlangA(1 / 60, 1 / 600, 1 / 120, 5)
    assert model.p_served_within(20_000) == pytest.approx(model.p_served(), abs=1e-9)
    assert model.p_served_within(0) == pytest.approx(1 - model.p_wait(), abs=1e-12)


@pytest.mark.parametrize(("lam", "mu", "theta", "n"), [(1.0, 0.25, 0.5, 3), (2.0, 0.5, 0.2, 5)])
def test_the_model_agrees_with_a_simulated_call_centre(lam, mu, theta, n):
    t = 1.0
    sim_served, sim_within = simulate(lam, mu, theta, n, t)
    model = ErlangA(lam, mu, theta, n)
    assert model.p_served() == pytest.approx(sim_served, abs=0.015)
    assert model.p_served_within(t) == pytest.approx(sim_within, abs=0.015)


def test_the_fewest_lines_reach_the_target_and_one_fewer_does_not():
    lam, mu, theta = 40 / 3600, 1 / 900, 1 / 90  # 40 calls an hour, 15-minute talks, 90 s patience
    n = lines_needed(lam, mu, theta, 0.8)
    assert ErlangA(lam, mu, theta, n).p_served() >= 0.8 > ErlangA(lam, mu, theta, n - 1).p_served()
    assert lines_needed(0.0, mu, theta, 0.8) == 0


def test_more_lines_never_answer_fewer_calls():
    rates = [ErlangA(1 / 60, 1 / 600, 1 / 120, n).p_served() for n in range(1, 20)]
    assert rates == sorted(rates)
