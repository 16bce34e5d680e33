"""Per-partner rate limits: one token bucket per organisation, in this process's memory.

A request costs one token per event it carries. The bucket holds at most ``burst`` tokens and
refills at ``rate`` tokens a second; a request that does not fit takes nothing and is told how long
to wait. Time comes from an injected monotonic clock, so the rule is a plain function of it.

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


def retry_after_header(wait: float) -> str:
    """Retry-After in whole seconds (RFC 9110), rounded up so that a retry then fits."""
    return str(max(1, math.ceil(wait)))
