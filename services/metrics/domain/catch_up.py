"""When a replay has reached the end of the topics: decided from offsets, never from time.

A partition is (topic, partition number); "done" is the next offset the group still has to apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def behind(ends: dict[Any, int], done: dict[Any, int]) -> int:
    """Records not yet applied over every partition of ``ends``: end offset minus done, never below
    zero per partition (a partition with nothing done counts from offset 0)."""
    return sum(max(end - done.get(p, 0), 0) for p, end in ends.items())


@dataclass
class CatchUpRule:
    """Caught up once ``needed`` consecutive checks find nothing behind on a non-empty set of partitions.

    End offsets can read low (the embedded broker reports a partition's last record batch's first
    offset + 1), so one check at zero may still be a record batch short; the next check, after that
    batch was applied, confirms. Any check that finds records behind starts the count again."""

    needed: int = 2
    streak: int = 0

    def observe(self, ends: dict[Any, int], done: dict[Any, int]) -> bool:
        if ends and behind(ends, done) == 0:
            self.streak += 1
        else:
            self.streak = 0
        return self.streak >= self.needed
