"""Planning chat/SNS seats: how many seats, each holding up to N conversations at once, answer a
target share of contacts with a first response within X seconds.

The model (a chat desk):
- contacts arrive as a Poisson stream (rate λ) and go to the least-loaded seat with room (routing's
  rule); when every seat holds N they wait in one queue, first come first served;
- a person leaves after an exponential patience (rate θ) unless the first response has come by then;
  patience keeps running while the counsellor types the first response;
- the first response comes a fixed ``response_delay`` d after the contact reaches its seat;
- a conversation holds its slot for an exponential time; while its seat holds k conversations it
  ends at rate μ(k) = μ1 · k^(−α), the **slowdown** α in [0, 1]. α = 0: the N slots of a seat are
  independent (a counsellor loses nothing by holding several), and the desk is exactly Erlang-A with
  n = S·N. α = 1: a counsellor's attention is shared (a seat ends conversations at μ1 whatever k; more
  conversations let people in sooner but do not add throughput). One parameter spans the two limits
  and leaves k = 1 untouched, so μ1 is the one-conversation rate and the seat's throughput k·μ(k)
  stays concave and non-decreasing in k.

The method: a birth–death chain over j, the conversations in the system (on seats and waiting). At
j ≤ S·N the j conversations sit as evenly as least-loaded placement puts them (j mod S seats hold
⌈j/S⌉, the rest ⌊j/S⌋) and end at the sum of the seats' rates; above S·N every seat is full, they end
at S·N·μ(N) and each of the j − S·N waiting leaves at θ. By PASTA an arrival sees the stationary π:
- found a seat with room (j < S·N): reaches a seat at once;
- found m waiting: reaches a seat within t with the Erlang-A wait law (the head moves at S·N·μ(N) + mθ,
  see ``erlang.served_from_queue_within``);
- either way the first response follows after d if patience lasts: a factor e^(−θd).
P(first response within X) = e^(−θd) · P(reached a seat within X − d).

Where it is exact and where it is not:
- exact (for exponential conversation and patience times) when α = 0 (Erlang-A, n = S·N) or N = 1
  (Erlang-A, n = S), with d = 0; and exact for the queue above S·N for any α (every seat is full then);
- approximate for 0 < α ≤ 1 below S·N: placement balances seats, but conversations end on any seat,
  so seats drift apart (3, 3, 1 instead of 3, 2, 2). Because k·μ(k) is concave, the even split ends
  conversations a little faster than the real spread: the chain is slightly optimistic. The tests
  measure the gap against a simulation that keeps every seat's own count;
- approximate when d > 0: the slot is held for d plus the conversation, which is not exponential;
  ``holding_rate`` turns a measured conversation time and delay into one exponential rate.

The capacity plan (``reports.seat_plan``) feeds it per field from the facts of the chosen text channels:
λ from contacts per hour of day; the conversation time as the mean of ``contact.ended.talk_seconds``;
patience as leavers before the first response / all time spent waiting for it (the exponential
estimate, as for phone); d as the mean from the latest assignment to the first response. With the
default α = 0 the measured conversation time, which already carries the slowdown of the loads the
period saw, is used as it is; an α > 0 on top of it is a deliberately pessimistic what-if.

Validated against a discrete-event simulation (simpy, fixed seeds) in tests/unit/test_metrics_seats_plan.py,
like ``erlang``. Pure and small: no numpy, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.metrics.erlang import served_from_queue_within


@dataclass(frozen=True)
class ChatDesk:
    arrival_rate: float  # λ, contacts per second
    conversation_rate: float  # μ1 = 1 / mean time a conversation holds its slot when alone on its seat
    abandon_rate: float  # θ = 1 / mean patience until the first response (0: nobody leaves)
    seats: int  # S
    per_seat: int = 1  # N, conversations a seat holds at once
    slowdown: float = 0.0  # α: μ(k) = μ1 · k^(−α)
    response_delay: float = 0.0  # d, seconds from reaching a seat to the first response

    def __post_init__(self) -> None:
        if self.arrival_rate < 0 or self.conversation_rate <= 0 or self.abandon_rate < 0:
            raise ValueError("the conversation rate must be positive, arrival and abandonment not negative")
        if self.seats < 0 or self.per_seat < 1 or self.response_delay < 0:
            raise ValueError("seats not negative, at least one conversation per seat, delay not negative")
        if not 0.0 <= self.slowdown <= 1.0:
            raise ValueError("the slowdown α lies in [0, 1] (0: independent slots, 1: shared attention)")
        if self.abandon_rate == 0 and self.arrival_rate >= self.full_rate():
            raise ValueError("without abandonment the queue is unstable unless λ < S·N·μ(N)")

    @property
    def slots(self) -> int:
        return self.seats * self.per_seat

    def seat_rate(self, k: int) -> float:
        """A seat holding k conversations ends them at k·μ(k) = μ1 · k^(1−α)."""
        return 0.0 if k == 0 else self.conversation_rate * k ** (1.0 - self.slowdown)

    def full_rate(self) -> float:
        """Every seat full: the rate at which a slot frees, the queue's head rate."""
        return self.seats * self.seat_rate(self.per_seat)

    def ending_rate(self, j: int) -> float:
        """The rate conversations end (or waiting people leave) with j in the system."""
        if j > self.slots:
            return self.full_rate() + (j - self.slots) * self.abandon_rate
        q, r = divmod(j, self.seats) if self.seats else (0, 0)
        return r * self.seat_rate(q + 1) + (self.seats - r) * self.seat_rate(q)

    def distribution(self, tail: float = 1e-12) -> list[float]:
        """π_j for j = 0..K, K where the remaining mass is below ``tail``."""
        lam = self.arrival_rate
        if lam == 0:
            return [1.0]
        if self.slots == 0 and self.abandon_rate == 0:
            raise ValueError("no seats and nobody leaves: the queue grows without end")
        logs = [0.0]  # in logs: products of λ / rate overflow for busy desks
        top = 0.0
        j = 0
        while True:
            j += 1
            death = self.ending_rate(j)
            logs.append(logs[-1] + math.log(lam) - math.log(death))
            top = max(top, logs[-1])
            if j > self.slots and death > lam and logs[-1] < top + math.log(tail):
                break
            if j > 1_000_000:
                raise ValueError("state space too large")
        weights = [math.exp(v - top) for v in logs]
        total = sum(weights)
        return [w / total for w in weights]

    def mean_queue(self) -> float:
        return sum(max(j - self.slots, 0) * p for j, p in enumerate(self.distribution()))

    def p_seated(self) -> float:
        """Probability an arrival reaches a seat (leaves neither from the queue)."""
        if self.arrival_rate == 0 or self.abandon_rate == 0:
            return 1.0
        return max(0.0, 1.0 - self.abandon_rate * self.mean_queue() / self.arrival_rate)

    def p_responded(self) -> float:
        """Probability an arrival gets a first response at all (the model's answer rate)."""
        return self.p_seated() * math.exp(-self.abandon_rate * self.response_delay)

    def p_wait(self) -> float:
        """Probability an arrival finds every seat full."""
        return sum(self.distribution()[self.slots:])

    def p_responded_within(self, x: float) -> float:
        """Probability an arrival gets its first response within x seconds of arriving."""
        t = x - self.response_delay
        if t < 0:
            return 0.0
        pi = self.distribution()
        seated = sum(pi[:self.slots]) + served_from_queue_within(pi[self.slots:], self.full_rate(),
                                                                  self.abandon_rate, t)
        return seated * math.exp(-self.abandon_rate * self.response_delay)


def holding_rate(conversation_mean: float, abandon_rate: float, response_delay: float = 0.0) -> float:
    """μ1 for ``ChatDesk`` from what the facts measure: a slot is held for the response delay d (or until
    the person leaves, if sooner) and then, if answered, for the conversation. The mean of that,
    E[min(d, patience)] + e^(−θd) · conversation, taken as one exponential time."""
    if conversation_mean <= 0 or response_delay < 0:
        raise ValueError("the conversation time must be positive, the delay not negative")
    if abandon_rate == 0:
        return 1.0 / (response_delay + conversation_mean)
    kept = math.exp(-abandon_rate * response_delay)
    return 1.0 / ((1.0 - kept) / abandon_rate + kept * conversation_mean)


def seats_needed(arrival_rate: float, conversation_rate: float, abandon_rate: float, *, per_seat: int = 1,
                 target: float = 0.8, within_s: float = 300.0, slowdown: float = 0.0,
                 response_delay: float = 0.0, max_seats: int = 500) -> int:
    """The fewest seats, each holding ``per_seat`` conversations, whose predicted share of first responses
    within ``within_s`` seconds reaches ``target``."""
    if not 0 < target < 1:
        raise ValueError("target must be between 0 and 1")
    if arrival_rate == 0:
        return 0
    # even unlimited seats lose those who leave while the first response is typed
    if math.exp(-abandon_rate * response_delay) < target or within_s < response_delay:
        raise ValueError("no number of seats reaches the target: patience runs out during the response delay")
    for s in range(1, max_seats + 1):
        if abandon_rate == 0 and arrival_rate >= s * per_seat * conversation_rate * per_seat ** -slowdown:
            continue
        desk = ChatDesk(arrival_rate, conversation_rate, abandon_rate, s, per_seat, slowdown, response_delay)
        if desk.p_responded_within(within_s) >= target:
            return s
    raise ValueError(f"more than {max_seats} seats would be needed")
