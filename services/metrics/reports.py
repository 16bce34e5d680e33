"""The secretariat's two documents, assembled from metrics' read model: the period report (the
four figures the HTTP API serves one by one) and the capacity plan — phone lines by Erlang-A and, beside
them, chat/SNS seats holding N conversations each by ``seats_plan``.

Plain functions over a pool, like ``figures``: the ``tsunagu report`` and ``tsunagu plan`` commands,
the demo and the simulator's checks all read them, so they agree with the API.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from services.metrics import erlang, figures, seats_plan
from services.metrics.domain.periods import Period, hours_by_hour_of_day
from services.metrics.store import planning, seat_planning

TEXT_CHANNELS = ("chat", "sns")


async def period_report(pool: asyncpg.Pool, period: Period) -> dict[str, Any]:
    """Answer rate by field, waits, consultations and referrals over ``period``."""
    return {
        "period": period.as_dict(),
        "answer_rate": await figures.answer_rate(pool, period, "field"),
        "waits": await figures.waits(pool, period, None, [20, 60]),
        "consultations": await figures.consultations(pool, period, None),
        "referrals": await figures.referrals(pool, period, "receiver_type"),
    }


@dataclass(frozen=True)
class SeatAim:
    """What a seat plan aims at: ``target`` of the contacts of ``channels`` get a first response within
    ``within_s`` seconds, at ``per_seat`` conversations a seat and the counsellor ``slowdown`` α."""

    channels: tuple[str, ...] = ("chat",)
    per_seat: int = 3
    within_s: float = 300.0
    target: float = 0.8
    slowdown: float = 0.0

    def __post_init__(self) -> None:
        if not self.channels or any(c not in TEXT_CHANNELS for c in self.channels):
            raise ValueError(f"a seat plan is for text channels: {', '.join(TEXT_CHANNELS)}")
        if self.per_seat < 1 or self.within_s <= 0 or not 0 < self.target < 1 or not 0 <= self.slowdown <= 1:
            raise ValueError("per_seat ≥ 1, within_s > 0, 0 < target < 1, 0 ≤ slowdown ≤ 1")


async def capacity_plan(pool: asyncpg.Pool, period: Period, target: float, lines: dict[str, int],
                        aim: SeatAim | None = None, seats: dict[str, int] | None = None) -> dict[str, Any]:
    """Per field and hour of day: observed arrivals, the lines Erlang-A needs for ``target`` and the
    answer rate the current lines predict. Talk time and patience are per field over the period;
    current lines are ``lines`` where given, else the most talks the period shows at once. With an
    ``aim``, the text channels' seat plan beside it (``seat_plan``) under ``"seats"``."""
    plan = await phone_plan(pool, period, target, lines)
    if aim is not None:
        plan["seats"] = await seat_plan(pool, period, aim, seats or {})
    return plan


async def phone_plan(pool: asyncpg.Pool, period: Period, target: float, lines: dict[str, int]) -> dict[str, Any]:
    """The phone lines' part of ``capacity_plan``."""
    arrivals = await planning.arrivals_by_field_and_hour(pool, period)
    service = {r["field"]: r for r in await planning.service_by_field(pool, period)}
    peaks = await planning.peak_lines_by_field(pool, period)
    exposure = hours_by_hour_of_day(period)
    rows: list[dict[str, Any]] = []
    fields: dict[str, dict[str, Any]] = {}
    for r in arrivals:
        f = r["field"]
        s = service.get(f)
        talk = s["talk_mean"] if s and s["talk_mean"] else None
        patience = (s["waited_seconds"] / s["abandoned"]) if s and s["abandoned"] else None
        current = lines.get(f, peaks.get(f, 0))
        fields[f] = {"talk_mean_seconds": talk, "patience_mean_seconds": patience, "current_lines": current,
                     "current_lines_source": "given" if f in lines else "observed peak of talks at once"}
        hours = exposure.get(r["hour"], 0.0)
        lam = r["attempts"] / (hours * 3600) if hours else 0.0
        row: dict[str, Any] = {"field": f, "hour": r["hour"], "attempts": r["attempts"], "connected": r["connected"],
                               "observed_rate": r["connected"] / r["attempts"] if r["attempts"] else None,
                               "arrivals_per_hour": lam * 3600, "lines_needed": None, "predicted_rate": None}
        if talk and lam > 0:
            mu, theta = 1 / talk, (1 / patience if patience else 0.0)
            try:
                row["lines_needed"] = erlang.lines_needed(lam, mu, theta, target)
            except ValueError:
                row["lines_needed"] = None
            if current > 0 and (theta > 0 or lam < current * mu):
                row["predicted_rate"] = erlang.ErlangA(lam, mu, theta, current).p_served()
            elif current == 0:
                row["predicted_rate"] = 0.0
        rows.append(row)
    return {"period": period.as_dict(), "target": target, "fields": fields, "hours": rows}


async def seat_plan(pool: asyncpg.Pool, period: Period, aim: SeatAim, seats: dict[str, int]) -> dict[str, Any]:
    """Per field and hour of day for the text channels of ``aim``: observed contacts, the seats
    ``seats_plan`` needs for the aim, and the share answered within the time the current seats predict.
    Conversation time, patience and the first-response delay are per field over the period; current
    seats are ``seats`` where given, else the most conversations the period shows at once over N."""
    channels = list(aim.channels)
    arrivals = await seat_planning.arrivals_by_field_and_hour(pool, period, channels, aim.within_s)
    service = {r["field"]: r for r in await seat_planning.service_by_field(pool, period, channels)}
    delays = await seat_planning.response_delay_by_field(pool, period, channels)
    peaks = await seat_planning.peak_conversations_by_field(pool, period, channels)
    exposure = hours_by_hour_of_day(period)
    fields: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for r in arrivals:
        f = r["field"]
        if f not in fields:
            fields[f] = seat_inputs(service.get(f), delays.get(f, 0.0), seats.get(f), peaks.get(f, 0), aim)
        hours = exposure.get(r["hour"], 0.0)
        rows.append(seat_hour(r, r["attempts"] / (hours * 3600) if hours else 0.0, fields[f], aim))
    return {"period": period.as_dict(), "aim": asdict(aim), "method": "seats_plan (see services/metrics/seats_plan.py)",
            "fields": fields, "hours": rows}


def seat_inputs(service: Any, delay: float, given: int | None, peak: int, aim: SeatAim) -> dict[str, Any]:
    """A field's measured inputs and the slot holding rate the model takes from them."""
    talk = service["talk_mean"] if service and service["talk_mean"] else None
    patience = (service["waited_seconds"] / service["abandoned"]) if service and service["abandoned"] else None
    theta = 1 / patience if patience else 0.0
    holding = 1 / seats_plan.holding_rate(talk, theta, delay) if talk else None
    return {"conversation_mean_seconds": talk, "patience_mean_seconds": patience, "response_delay_seconds": delay,
            "holding_mean_seconds": holding, "abandon_rate": theta,
            # those who leave while the first response is typed are lost whatever the seats
            "best_possible_share": math.exp(-theta * delay),
            "current_seats": given if given is not None else math.ceil(peak / aim.per_seat),
            "current_seats_source": "given" if given is not None else "observed peak of conversations at once / N"}


def seat_hour(r: Any, lam: float, field: dict[str, Any], aim: SeatAim) -> dict[str, Any]:
    """One field and hour: seats needed for the aim and the share the current seats predict."""
    row: dict[str, Any] = {"field": r["field"], "hour": r["hour"], "attempts": r["attempts"],
                           "connected": r["connected"],
                           "observed_within": r["within"] / r["attempts"] if r["attempts"] else None,
                           "arrivals_per_hour": lam * 3600, "seats_needed": None, "predicted_within": None}
    holding = field["holding_mean_seconds"]
    if not holding or lam <= 0:
        return row
    mu1, theta, delay = 1 / holding, field["abandon_rate"], field["response_delay_seconds"]
    try:
        row["seats_needed"] = seats_plan.seats_needed(
            lam, mu1, theta, per_seat=aim.per_seat, target=aim.target, within_s=aim.within_s,
            slowdown=aim.slowdown, response_delay=delay)
    except ValueError:
        row["seats_needed"] = None
    current = field["current_seats"]
    try:
        desk = seats_plan.ChatDesk(lam, mu1, theta, current, aim.per_seat, aim.slowdown, delay)
        row["predicted_within"] = desk.p_responded_within(aim.within_s) if current > 0 else 0.0
    except ValueError:  # no abandonment and more than the seats can take: the queue never settles
        row["predicted_within"] = 0.0
    return row
