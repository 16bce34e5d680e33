"""The secretariat's two documents, assembled from metrics' read model: the period report (the
four figures the HTTP API serves one by one) and the Erlang-A capacity plan.

Plain functions over a pool, like ``figures``: the ``tsunagu report`` and ``tsunagu plan`` commands,
the demo and the simulator's checks all read them, so they agree with the API.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from services.metrics import erlang, figures
from services.metrics.domain.periods import Period, hours_by_hour_of_day
from services.metrics.store import planning


async def period_report(pool: asyncpg.Pool, period: Period) -> dict[str, Any]:
    """Answer rate by field, waits, consultations and referrals over ``period``."""
    return {
        "period": period.as_dict(),
        "answer_rate": await figures.answer_rate(pool, period, "field"),
        "waits": await figures.waits(pool, period, None, [20, 60]),
        "consultations": await figures.consultations(pool, period, None),
        "referrals": await figures.referrals(pool, period, "receiver_type"),
    }


async def capacity_plan(pool: asyncpg.Pool, period: Period, target: float, lines: dict[str, int]) -> dict[str, Any]:
    """Per field and hour of day: observed arrivals, the lines Erlang-A needs for ``target`` and the
    answer rate the current lines predict. Talk time and patience are per field over the period;
    current lines are ``lines`` where given, else the most talks the period shows at once."""
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
