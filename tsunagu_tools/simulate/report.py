"""A replay's figures as metrics counted them, checked against the simulator's ground truth, and
the side-by-side table (published vs replayed vs pooled …)."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.table import Table

from schemas.codes import FieldCode
from services.metrics.domain.periods import Period
from tsunagu_tools.reports import period_report
from tsunagu_tools.simulate.truth import GroundTruth

HEADLINE_FIELDS = ("loneliness", "suicidal", "hardship")


def period_of(truth: GroundTruth) -> Period:
    return Period(truth.start, truth.end, f"sim.{truth.scenario}.{truth.run}")


def metrics_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The same shape as ``GroundTruth.figures()``, from ``tsunagu_tools.reports.period_report``."""
    t = report["answer_rate"]["totals"]
    c = report["consultations"]["totals"]
    by_field = {g["key"]: {"attempts": g["attempts"], "connected": g["connected"], "answer_rate": g["answer_rate"]}
                for g in report["answer_rate"]["groups"] if g["key"] is not None}
    return {
        "attempts": t.get("attempts", 0),
        "connected": t.get("connected", 0),
        "answer_rate": t.get("answer_rate"),
        "abandoned_ivr": t.get("abandoned_ivr", 0),
        "abandoned_queue": t.get("abandoned_queue", 0),
        "by_field": dict(sorted(by_field.items())),
        "consultations": c.get("consultations", 0),
        "age_bands": {a["code"]: a["count"] for a in c.get("age_bands", []) if a["count"]},
        "categories": {a["code"]: a["count"] for a in c.get("categories", []) if a["count"]},
        "referrals": report["referrals"]["totals"].get("contacts", 0),
    }


def differences(truth: dict[str, Any], counted: dict[str, Any]) -> list[str]:
    """Where metrics' figures differ from the ground truth (empty = exactly the same)."""
    keys = ["attempts", "connected", "abandoned_ivr", "abandoned_queue", "consultations", "age_bands",
            "categories", "referrals"]
    out = [f"{k}: truth {truth[k]!r}, metrics {counted.get(k)!r}" for k in keys if truth[k] != counted.get(k)]
    for name, g in truth["by_field"].items():
        m = counted["by_field"].get(name, {})
        if (g["attempts"], g["connected"]) != (m.get("attempts"), m.get("connected")):
            out.append(f"field {name}: truth {g['attempts']}/{g['connected']}, "
                       f"metrics {m.get('attempts')}/{m.get('connected')}")
    return out


async def counted_report(dsn: str, truth: GroundTruth, timeout: float = 120.0) -> dict[str, Any]:
    """metrics' report of the replay's period, once metrics has counted all of it (or timeout)."""
    expected = truth.figures()
    period = period_of(truth)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        report = await period_report(dsn, period)
        counted = metrics_figures(report)
        done = all(counted[k] >= expected[k] for k in ("attempts", "connected", "consultations", "referrals"))
        if done or loop.time() > deadline:
            return report
        await asyncio.sleep(0.5)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def side_by_side(columns: list[tuple[str, dict[str, Any]]], published: dict[str, Any] | None = None) -> Table:
    """One row per figure, one column per replay (and the published figures first, if given)."""
    table = Table(title="#9999 試行 第1週 / trial 1 week: published vs replayed")
    table.add_column("指標 / figure", no_wrap=True)
    cols: list[tuple[str, dict[str, Any]]] = []
    if published:
        cols.append(("公表 published", {
            "attempts": published.get("attempts"), "connected": published.get("connected"),
            "answer_rate": published.get("answer_rate"),
            "by_field": {k: {"answer_rate": v} for k, v in published.get("answer_rate_by_field", {}).items()},
            "referrals": published.get("referrals")}))
    cols += columns
    for name, _ in cols:
        table.add_column(name, justify="right")

    def row(label: str, get) -> None:
        table.add_row(label, *[get(f) for _, f in cols])

    def num(v: Any) -> str:
        return "-" if v is None else f"{v:,}"

    row("呼出件数 / call attempts", lambda f: num(f.get("attempts")))
    row("接続完了 / connected", lambda f: num(f.get("connected")))
    row("応答率 / answer rate", lambda f: _pct(f.get("answer_rate")))
    for name in HEADLINE_FIELDS:
        row(f"  {FieldCode(name).ja} / {name}",
            lambda f, n=name: _pct(f.get("by_field", {}).get(n, {}).get("answer_rate")))
    def ranking(f: dict[str, Any]) -> str:
        groups = f.get("by_field", {})
        if not groups or "attempts" not in next(iter(groups.values())):
            return "loneliness > suicidal > hardship"  # the published order
        return " > ".join(k for k, _ in sorted(groups.items(), key=lambda kv: -kv[1]["attempts"])[:3])

    row("選択順 / ranking by volume", ranking)
    row("つないだ深刻なケース / serious handoffs", lambda f: num(f.get("referrals")))
    return table
