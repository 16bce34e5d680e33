"""Per-partner rate limits: one token bucket per organisation, in this process's memory.

A request costs one token per event it carries. The bucket holds at most ``burst`` tokens and
refills at ``rate`` tokens a second; a request that does not fit takes nothing and is told how long
to wait. Time comes from an injected monotonic clock, so the rule is a plain function of it.

A partner that keeps sending while told to wait is refused cheaply (``Holds``).

State is per process: with N intake processes (workers or replicas) a partner can reach N times
the rate, depending on how its requests are spread. Deployments set the rate to their per-partner
share divided by the number of intake processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """``take(org, cost)`` answers 0.0 when the request may go ahead, else the seconds to wait."""

    rate: float  # tokens per second; 0 = no limit
    burst: float
    clock: Callable[[], float]  # monotonic seconds
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, org: str, cost: int = 1) -> float:
        if not self.enabled:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(org)
        if bucket is None:
            bucket = self._buckets[org] = _Bucket(self.burst, now)
        else:
            # max(): a clock that steps back (it should not) never takes tokens away.
            bucket.tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.at) * self.rate)
            bucket.at = max(bucket.at, now)
        # The tolerance absorbs float rounding, so that a retry after the announced wait always fits.
        if cost <= bucket.tokens + 1e-9:
            bucket.tokens = max(0.0, bucket.tokens - cost)
            return 0.0
        if cost > self.burst:
            return math.inf  # can never fit; the caller must split the request
        return (cost - bucket.tokens) / self.rate

    def until_any(self, org: str) -> float:
        """Seconds until ``org``'s bucket holds a whole token again (0.0 when it holds one now), taking
        nothing: a request can be refused before its body is read, when not even one event would fit."""
        bucket = self._buckets.get(org)
        if not self.enabled or bucket is None:
            return 0.0
        tokens = min(self.burst, bucket.tokens + max(0.0, self.clock() - bucket.at) * self.rate)
        return 0.0 if tokens + 1e-9 >= 1 else (1 - tokens) / self.rate


def retry_after_header(wait: float) -> str:
    """Retry-After in whole seconds (RFC 9110), rounded up so that a retry then fits."""
    return str(max(1, math.ceil(wait)))


@dataclass
class Holds:
    """Keys told to wait (a 429 with ``Retry-After``), until when, and why.

    A key that comes back before its wait is over is refused at the door — before its credential is
    looked up, its fair share taken or its body read — with the same reason and the time still left,
    and that answer is delayed by up to ``tarpit`` seconds: a client that ignores ``Retry-After`` and
    re-sends at once costs intake next to nothing and sends at most one request a second per
    connection. Keyed by the key's hash (``tsunagu.auth.hash_key``); entries go when their wait is
    over, so memory holds at most the keys refused within the longest wait."""

    clock: Callable[[], float]  # monotonic seconds
    tarpit: float = 1.0
    _until: dict[bytes, tuple[float, str]] = field(default_factory=dict)

    def hold(self, key: bytes, seconds: float, reason: str) -> None:
        now = self.clock()
        self._until[key] = (now + seconds, reason)
        if len(self._until) > 64:
            for other, (until, _) in list(self._until.items()):
                if until <= now:
                    del self._until[other]

    def held(self, key: bytes) -> tuple[float, str] | None:
        """(seconds still to wait, reason) while ``key`` is held, else None."""
        entry = self._until.get(key)
        if entry is None:
            return None
        left = entry[0] - self.clock()
        if left <= 0:
            del self._until[key]
            return None
        return left, entry[1]
