"""The replay's ground truth: every contact's fate as the simulator played it, and the figures the
metrics service must report for the period."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class Fate:
    contact_id: str
    field: str | None
    outcome: str = "pending"  # ivr | queue | ringing | answered
    desk_id: str | None = None
    organisation_id: str | None = None
    wait_s: float | None = None
    talk_s: float | None = None
    offers: int = 0  # assignments routing made for it
    channel: str = "phone"
    transferred: bool = False  # a chat handed on to the phone desk
    gone: bool = False  # answered after the person had left without a word (nobody read the first response)


@dataclass
class GroundTruth:
    """What the simulator knows happened: every contact's fate, every raw identifier it sent."""

    scenario: str
    run: str
    start: datetime
    end: datetime
    registry_version: str
    fates: dict[str, Fate] = field(default_factory=dict)
    caller_ids: set[str] = field(default_factory=set)  # raw phone numbers sent to intake
    consultations: list[dict[str, Any]] = field(default_factory=list)
    referrals_needed: int = 0
    acknowledged: int = 0
    events_sent: int = 0
    syncs: int = 0
    late: int = 0
    unmatched: int = 0
    decisions: int = 0
    wall_s: float = 0.0
    sync_wall_s: float = 0.0
    # run ahead: a few of the decisions routing and the model disagreed on (kind, contact, desk, time)
    unmatched_examples: list[tuple[Any, ...]] = field(default_factory=list)

    def describe(self) -> str:
        """How the replay went, in one line."""
        return (f"{self.events_sent:,} events through intake, {self.decisions:,} routing decisions "
                f"({self.unmatched} unmatched), {self.syncs:,} waits for routing, {self.late} late, "
                f"{self.wall_s:.0f} s")

    def figures(self) -> dict[str, Any]:
        """The report the metrics service must give for this replay's period, exactly."""
        fates = list(self.fates.values())
        by_field: dict[str, dict[str, int]] = {}
        for f in fates:
            if f.field is None:
                continue
            g = by_field.setdefault(f.field, {"attempts": 0, "connected": 0})
            g["attempts"] += 1
            g["connected"] += f.outcome == "answered"
        attempts = len(fates)
        connected = sum(f.outcome == "answered" for f in fates)
        # metrics counts a consultation (and its referral) in the period of its record's event time
        span = (self.end - self.start).total_seconds()
        consultations = [c for c in self.consultations if c["at"] < span]
        return {
            "attempts": attempts,
            "connected": connected,
            "answer_rate": connected / attempts if attempts else None,
            "abandoned_ivr": sum(f.outcome == "ivr" for f in fates),
            "abandoned_queue": sum(f.outcome == "queue" for f in fates),
            "abandoned_ringing": sum(f.outcome == "ringing" for f in fates),
            "by_field": {k: {**v, "answer_rate": v["connected"] / v["attempts"]} for k, v in sorted(by_field.items())},
            "consultations": len(consultations),
            "age_bands": dict(Counter(c["age_band"] for c in consultations)),
            "categories": dict(Counter(cat for c in consultations for cat in c["categories"])),
            "referrals": sum(c["referral_needed"] for c in consultations),
            "by_channel": by_channel(fates),
        }


def _percentile(values: list[float], q: int) -> float | None:
    """The q-th percentile (inclusive method); None without values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def by_channel(fates: list[Fate]) -> dict[str, dict[str, Any]]:
    """Per channel: attempts, connected, answer rate, time to answer (a chat's: to the first response)
    p50/p90, abandoned before the first response (in the queue or while offered), and for text channels
    the hand-overs to the phone and the first responses nobody read (the person had left)."""
    out: dict[str, dict[str, Any]] = {}
    for channel in sorted({f.channel for f in fates}):
        mine = [f for f in fates if f.channel == channel]
        answered = [f for f in mine if f.outcome == "answered"]
        waits = sorted(f.wait_s for f in answered if f.wait_s is not None)
        p50, p90 = _percentile(waits, 50), _percentile(waits, 90)
        out[channel] = {
            "attempts": len(mine),
            "connected": len(answered),
            "answer_rate": len(answered) / len(mine) if mine else None,
            "first_response_p50": None if p50 is None else round(p50, 3),
            "first_response_p90": None if p90 is None else round(p90, 3),
            "abandoned_before_response": sum(f.outcome in ("queue", "ringing") for f in mine),
            "abandoned_ivr": sum(f.outcome == "ivr" for f in mine),
            "transferred": sum(f.transferred for f in mine),
            "answered_after_leaving": sum(f.gone for f in answered),
        }
    return out


