"""A replay's figures as metrics counted them, checked against the simulator's ground truth, and
the side-by-side tables (published vs replayed vs pooled …; phone beside chat/SNS).

A replay with chat/SNS users is checked on all channels together (metrics' ``channel`` left open)
and on each channel alone; a phone-only replay's figures are the phone's, as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from rich.table import Table

from schemas.codes import FieldCode
from services.metrics import figures as metric_figures
from services.metrics.domain.periods import Period
from tsunagu.db import create_pool
from tsunagu_tools.reports import period_report
from tsunagu_tools.simulate.truth import GroundTruth

HEADLINE_FIELDS = ("loneliness", "suicidal", "hardship")


def period_of(truth: GroundTruth) -> Period:
    return Period(truth.start, truth.end, f"sim.{truth.scenario}.{truth.run}")


def metrics_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The same shape as ``GroundTruth.figures()``, from ``tsunagu_tools.reports.period_report`` (with
    ``counted_report``'s all-channel answer rate and per-channel figures, when the replay had chats)."""
    answer_rate = report.get("all_channels") or report["answer_rate"]
    t = answer_rate["totals"]
    c = report["consultations"]["totals"]
    by_field = {g["key"]: {"attempts": g["attempts"], "connected": g["connected"], "answer_rate": g["answer_rate"]}
                for g in answer_rate["groups"] if g["key"] is not None}
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
        "by_channel": report.get("by_channel", {}),
    }


CHANNEL_KEYS = ("attempts", "connected", "abandoned_before_response", "abandoned_ivr")


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
    counted_channels = counted.get("by_channel") or {}
    if counted_channels:  # a replay with chats: each channel's counts too
        for channel, g in truth.get("by_channel", {}).items():
            m = counted_channels.get(channel, {})
            out += [f"{channel} {k}: truth {g[k]!r}, metrics {m.get(k)!r}" for k in CHANNEL_KEYS if g[k] != m.get(k)]
    return out


async def channel_figures(dsn: str, period: Period, channels: list[str]) -> dict[str, Any]:
    """metrics' answer rate over all channels (by field) and each channel's counts and times to answer
    (a chat's: to the first response), in ``GroundTruth.by_channel``'s shape."""
    pool = await create_pool(dsn, max_size=2)
    try:
        every = await metric_figures.answer_rate(pool, period, "field", channel=None)
        out: dict[str, Any] = {}
        for channel in channels:
            t = (await metric_figures.answer_rate(pool, period, None, channel=channel))["totals"]
            w = (await metric_figures.waits(pool, period, None, [], channel=channel))["totals"]
            out[channel] = {
                "attempts": t.get("attempts", 0), "connected": t.get("connected", 0),
                "answer_rate": t.get("answer_rate"),
                "first_response_p50": w.get("wait_p50"), "first_response_p90": w.get("wait_p90"),
                "abandoned_before_response": t.get("abandoned_queue", 0) + t.get("abandoned_ringing", 0),
                "abandoned_ivr": t.get("abandoned_ivr", 0),
            }
        return {"all_channels": every, "by_channel": out}
    finally:
        await pool.close()


async def counted_report(dsn: str, truth: GroundTruth, timeout: float = 120.0) -> dict[str, Any]:
    """metrics' report of the replay's period, once metrics has counted all of it (or timeout)."""
    expected = truth.figures()
    period = period_of(truth)
    channels = sorted(expected["by_channel"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        report = await period_report(dsn, period)
        if channels != ["phone"]:
            report.update(await channel_figures(dsn, period, channels))
        counted = metrics_figures(report)
        done = all(counted[k] >= expected[k] for k in ("attempts", "connected", "consultations", "referrals"))
        if done or loop.time() > deadline:
            return report
        await asyncio.sleep(0.5)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def side_by_side(columns: list[tuple[str, dict[str, Any]]], published: dict[str, Any] | None = None,
                 title: str = "#9999 試行 第1週 / trial 1 week: published vs replayed") -> Table:
    """One row per figure, one column per replay (and the published figures first, if given)."""
    table = Table(title=title)
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


def _secs(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f} s" if v < 120 else f"{v / 60:.1f} min"


def _share(g: dict[str, Any]) -> float | None:
    """Of the attempts, the share answered with someone still there to read the first response."""
    return (g["connected"] - g["answered_after_leaving"]) / g["attempts"] if g.get("attempts") else None


CHANNEL_LABELS = {"phone": "電話 phone", "chat": "チャット chat", "sns": "SNS (LINE)"}


def channel_table(columns: list[tuple[str, dict[str, Any]]], title: str) -> Table:
    """Phone beside chat/SNS: one column per (source, channel) — e.g. the simulator's truth and what
    metrics counted — one row per figure."""
    table = Table(title=title)
    table.add_column("指標 / figure", no_wrap=True)
    channels = sorted({c for _, f in columns for c in f.get("by_channel", {})}, key=lambda c: (c != "phone", c))
    cols = [(f"{CHANNEL_LABELS.get(channel, channel)}\n{name}", figures["by_channel"][channel])
            for channel in channels for name, figures in columns if channel in figures.get("by_channel", {})]
    for name, _ in cols:
        table.add_column(name, justify="right")

    def row(label: str, get: Callable[[dict[str, Any]], str]) -> None:
        table.add_row(label, *[get(g) for _, g in cols])

    def num(v: Any) -> str:
        return "-" if v is None else f"{v:,}"

    row("件数 / attempts", lambda g: num(g.get("attempts")))
    row("接続完了（初回応答）/ connected (first response)", lambda g: num(g.get("connected")))
    row("応答率 / answer rate", lambda g: _pct(g.get("answer_rate")))
    row("初回応答まで 中央値 / to first response p50", lambda g: _secs(g.get("first_response_p50")))
    row("初回応答まで 90% / to first response p90", lambda g: _secs(g.get("first_response_p90")))
    row("初回応答前の離脱 / left before first response", lambda g: num(g.get("abandoned_before_response")))
    row("電話へ転送 / handed to the phone", lambda g: num(g.get("transferred")))
    row("離脱後の初回応答 / first response after leaving", lambda g: num(g.get("answered_after_leaving")))
    row("うち相手のいた会話 / of them with someone there",
        lambda g: "-" if "answered_after_leaving" not in g else
        f"{g['connected'] - g['answered_after_leaving']:,} ({_pct(_share(g))})")
    return table
