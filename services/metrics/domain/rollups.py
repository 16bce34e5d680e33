"""Rollups in the rules' terms: histogram bins for waits and talk times, and a period split into the
whole days and months the rollups hold plus the edges read from the facts."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.timezone import JST
from services.metrics.domain.periods import Period

# Histogram bin edges (seconds) for waits and talk times. A value v falls in bin
# ``bisect_left(HISTOGRAM_EDGES, v)`` (the number of edges below it): bin 0 holds v <= 0, bin i holds
# edges[i-1] < v <= edges[i]. So "answered within N s" is exact for every N that is an edge (the
# usual service levels 10, 15, 20, 30, 60, 120 s among them; store/reading.py counts any other N from the
# facts), and a percentile read from the bins lies in the bin of the exact sample value of its rank:
# within 5 s up to 30 s, 15 s to 2 min, 30 s to 5 min, 60 s to 10 min, 5 min to 1 h, then coarser.
# Few bins, because each one is a row per day and group in the rollups.
HISTOGRAM_EDGES: tuple[int, ...] = (
    0, 5, 10, 15, 20, 25, 30, 40, 45, 50, 60, 75, 90, 105, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480, 540, 600,
    720, 900, 1200, 1500, 1800, 2400, 3000, 3600, 5400, 7200, 10800, 14400, 21600, 43200, 86400,
)
EDGE_INDEX = {e: i for i, e in enumerate(HISTOGRAM_EDGES)}


def bin_of(value: float) -> int:
    return bisect_left(HISTOGRAM_EDGES, value)


def within_from_bins(bins: dict[int, int], seconds: int) -> int | None:
    """How many values are <= ``seconds`` (None unless ``seconds`` is a bin edge)."""
    idx = EDGE_INDEX.get(seconds)
    if idx is None:
        return None
    return sum(n for b, n in bins.items() if b <= idx)


def quantiles_from_bins(bins: dict[int, int], qs: tuple[float, ...]) -> list[float] | None:
    """Quantiles read from binned counts (None when empty): the value of rank q·(n−1) (counting from
    0, as percentile_cont does) is located in its bin and interpolated linearly inside it, so the result
    lies in the same bin as the exact sample value of that rank."""
    total = sum(bins.values())
    if total <= 0:
        return None
    ordered = sorted((b, n) for b, n in bins.items() if n)
    out = []
    for q in qs:
        target = q * (total - 1)
        seen = 0
        value = float(HISTOGRAM_EDGES[-1])
        for b, n in ordered:
            if seen + n > target:
                if b == 0:
                    value = 0.0
                elif b < len(HISTOGRAM_EDGES):
                    lo, hi = HISTOGRAM_EDGES[b - 1], HISTOGRAM_EDGES[b]
                    value = lo + (hi - lo) * ((int(target) - seen + 0.5) / n)
                break
            seen += n
        out.append(value)
    return out


def bin_bounds(value: float) -> tuple[float, float]:
    """The (exclusive low, inclusive high) edges of the bin that holds ``value``."""
    b = bin_of(value)
    if b == 0:
        return (float("-inf"), 0.0)
    if b >= len(HISTOGRAM_EDGES):
        return (float(HISTOGRAM_EDGES[-1]), float("inf"))
    return (float(HISTOGRAM_EDGES[b - 1]), float(HISTOGRAM_EDGES[b]))


# Rollup buckets: a day and a month in Japan time. Hours are not rolled up: a bucket per hour holds
# about one contact per group, so it would cost as much to keep as the facts it summarises.
GRAINS = ("d", "m")


def _floor(t: datetime, grain: str) -> datetime:
    local = t.astimezone(JST)
    if grain == "d":
        return local.replace(hour=0, minute=0, second=0, microsecond=0)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _ceil(t: datetime, grain: str) -> datetime:
    floor = _floor(t, grain)
    if floor == t:
        return floor
    if grain == "d":
        return floor + timedelta(days=1)
    return floor.replace(year=floor.year + floor.month // 12, month=floor.month % 12 + 1)


@dataclass(frozen=True)
class Cover:
    """A period as rollup buckets (grain, from, to) plus the edge ranges read from the facts."""

    buckets: tuple[tuple[str, datetime, datetime], ...]
    edges: tuple[tuple[datetime, datetime], ...]


def cover(period: Period, coarsest: str = "m") -> Cover:
    """Split ``period`` into whole months and days (no coarser than ``coarsest``) and the hours at its
    edges (read from the facts), which are exactly the period — so figures stay exact for any from–to."""
    buckets: list[tuple[str, datetime, datetime]] = []
    edges: list[tuple[datetime, datetime]] = []

    def split(lo: datetime, hi: datetime, level: int) -> None:
        if lo >= hi:
            return
        grain = GRAINS[level]
        inner_lo, inner_hi = _ceil(lo, grain), _floor(hi, grain)
        if inner_lo >= inner_hi:
            if level > 0:
                split(lo, hi, level - 1)
            elif lo < inner_lo == inner_hi < hi:  # no whole day, but it crosses one midnight
                edges.extend([(lo, inner_lo), (inner_hi, hi)])
            else:
                edges.append((lo, hi))
            return
        if level == 0:
            if lo < inner_lo:
                edges.append((lo, inner_lo))
            if inner_hi < hi:
                edges.append((inner_hi, hi))
        else:
            split(lo, inner_lo, level - 1)
            split(inner_hi, hi, level - 1)
        buckets.append((grain, inner_lo, inner_hi))

    split(period.start, period.end, GRAINS.index(coarsest))
    return Cover(tuple(buckets), tuple(edges))


def whole_span(c: Cover) -> tuple[datetime, datetime] | None:
    """The whole days and months of a cover as one range [D1, D2) (None when it has none)."""
    if not c.buckets:
        return None
    return min(b[1] for b in c.buckets), max(b[2] for b in c.buckets)
