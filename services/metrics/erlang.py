"""Erlang-A: the M/M/n+M queue — Poisson arrivals (rate λ), n lines with exponential talk time
(rate μ), callers who hang up after an exponential patience (rate θ) if not answered by then.

The steady state of the birth–death chain on the number of callers in the system k:
births at λ, deaths at kμ for k ≤ n and nμ + (k − n)θ above (every waiting caller may give up).
By PASTA an arriving caller sees π; from there:

- P(abandon) = θ · E[queue length] / λ  (the rate of hang-ups over the rate of arrivals)
- P(served)  = 1 − P(abandon)           (the model's answer rate)
- P(served within t): a caller finding m others waiting moves up at rate nμ + mθ, is served on
  the next completion once first in line, and gives up at rate θ all the while; the time to
  absorption is computed by uniformisation of that small chain.

Pure and small: no numpy, no I/O. Validated against a discrete-event simulation (tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ErlangA:
    arrival_rate: float  # λ, callers per unit time
    service_rate: float  # μ = 1 / mean talk time
    abandon_rate: float  # θ = 1 / mean patience (0: nobody gives up — Erlang C, needs λ < nμ)
    lines: int  # n

    def __post_init__(self) -> None:
        if self.arrival_rate < 0 or self.service_rate <= 0 or self.abandon_rate < 0 or self.lines < 0:
            raise ValueError("rates must be positive (arrival and abandonment may be 0), lines not negative")
        if self.abandon_rate == 0 and self.arrival_rate >= self.lines * self.service_rate:
            raise ValueError("without abandonment the queue is unstable unless λ < nμ")

    def distribution(self, tail: float = 1e-12) -> list[float]:
        """π_k for k = 0..K, K where the remaining mass is below ``tail``."""
        lam, mu, theta, n = self.arrival_rate, self.service_rate, self.abandon_rate, self.lines
        if lam == 0:
            return [1.0]
        # work in logs: λ^k / k! overflows for busy systems
        logs = [0.0]
        top = 0.0
        k = 0
        while True:
            k += 1
            death = min(k, n) * mu + max(k - n, 0) * theta
            logs.append(logs[-1] + math.log(lam) - math.log(death))
            top = max(top, logs[-1])
            # past the peak, once terms are negligible and decreasing, stop
            if k > n and death > lam and logs[-1] < top + math.log(tail):
                break
            if k > 1_000_000:
                raise ValueError("state space too large")
        weights = [math.exp(v - top) for v in logs]
        total = sum(weights)
        return [w / total for w in weights]

    def mean_queue(self) -> float:
        pi = self.distribution()
        return sum(max(k - self.lines, 0) * p for k, p in enumerate(pi))

    def p_abandon(self) -> float:
        if self.arrival_rate == 0 or self.abandon_rate == 0:
            return 0.0
        return min(1.0, self.abandon_rate * self.mean_queue() / self.arrival_rate)

    def p_served(self) -> float:
        return 1.0 - self.p_abandon()

    def p_wait(self) -> float:
        """Probability an arriving caller finds every line busy."""
        pi = self.distribution()
        return sum(pi[self.lines:])

    def p_served_within(self, t: float) -> float:
        """Probability an arriving caller is answered within t (and so before hanging up)."""
        pi = self.distribution()
        n = self.lines
        immediate = sum(pi[:n])
        if t <= 0 or len(pi) <= n or n == 0:
            return immediate
        # an arrival that finds k = n + m in the system has m callers ahead; the head moves on each
        # completion of the n busy lines
        return immediate + served_from_queue_within(pi[n:], n * self.service_rate, self.abandon_rate, t)


def served_from_queue_within(waiting: list[float], head_rate: float, abandon_rate: float, t: float) -> float:
    """Σ_m waiting[m] · P(an arrival with m others ahead is served within t, before giving up).

    The servers, all busy while anyone waits, free one at ``head_rate`` (nμ for Erlang-A; a chat
    desk's full seats for seats_plan); each of the m ahead also gives up at ``abandon_rate``, and so
    does the arrival. Uniformisation of that small absorbing chain; shared by Erlang-A and the seat
    plan so both read the same wait-time law.
    """
    if t <= 0 or not waiting:
        return 0.0
    theta = abandon_rate
    m_max = len(waiting) - 1
    # Uniformised chain over m (callers ahead): from m, ahead-moves at head_rate + mθ, own hang-up at θ.
    exit_rate = [head_rate + m * theta + theta for m in range(m_max + 1)]
    big = max(exit_rate)
    lt = big * t
    # g[m] = P(served within j uniform steps | start at m); iterate j with Poisson weights.
    g = [0.0] * (m_max + 1)
    served = 0.0
    weight = math.exp(-lt) if lt < 700 else 0.0
    log_weight = -lt
    j = 0
    cumulative = weight
    limit = int(lt + 12 * math.sqrt(lt) + 50)
    while j <= limit:
        # served-by-j contributes with P(N(t) = j); sum_j P(N=j) g_j = E[g_N]
        served += weight * sum(w * gm for w, gm in zip(waiting, g, strict=True))
        j += 1
        new = [0.0] * (m_max + 1)
        for m in range(m_max + 1):
            forward = head_rate + m * theta
            stay = 1.0 - exit_rate[m] / big
            ahead = 1.0 if m == 0 else g[m - 1]
            new[m] = (forward / big) * ahead + stay * g[m]
        g = new
        log_weight += math.log(lt) - math.log(j) if lt > 0 else -math.inf
        weight = math.exp(log_weight)
        cumulative += weight
        if cumulative > 1 - 1e-12 and j > lt:
            break
    return served


def lines_needed(arrival_rate: float, service_rate: float, abandon_rate: float, target: float,
                 max_lines: int = 500) -> int:
    """The fewest lines whose predicted answer rate (P(served)) reaches ``target``."""
    if not 0 < target < 1:
        raise ValueError("target must be between 0 and 1")
    if arrival_rate == 0:
        return 0
    for n in range(1, max_lines + 1):
        if abandon_rate == 0 and arrival_rate >= n * service_rate:
            continue
        if ErlangA(arrival_rate, service_rate, abandon_rate, n).p_served() >= target:
            return n
    raise ValueError(f"more than {max_lines} lines would be needed")
