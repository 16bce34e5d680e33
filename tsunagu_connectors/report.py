"""What a connector could not map, record by record, and what intake answered for what it sent."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Unmapped:
    """A platform record the connector refused: where it is (``line 12`` of a file, ``record 3`` of a
    body) and why. Never the record's content (it may hold a phone number)."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class SendReport:
    """Intake's answers to everything a connector sent, counted by status; the problems of the events
    intake refused, by event id."""

    counts: Counter[str] = field(default_factory=Counter)
    refused: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, results: list[dict[str, Any]]) -> None:
        for r in results:
            self.counts[r["status"]] += 1
            if r["status"] in ("rejected", "conflict"):
                self.refused[str(r.get("id"))] = r.get("problems", [])

    @property
    def ok(self) -> bool:
        return not self.refused

    def summary(self) -> str:
        parts = [f"{self.counts[s]} {s}" for s in ("accepted", "duplicate", "rejected", "conflict")]
        return ", ".join(parts)
