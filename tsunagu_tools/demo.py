"""`tsunagu demo`: the #9999 trial's first week replayed through the real services, three ways.

1. starts the local stack (embedded broker and PostgreSQL) tuned for replays (``tsunagu up --replay``),
2. replays ``scenarios/trial1.yaml`` (the published week: trial 1's desks and routing),
   ``scenarios/trial2-network.yaml`` (trial 2's desks, the same callers) and
   ``scenarios/trial1-pooled.yaml`` (trial 1's lines, routed the tsunagu way) — each through intake,
   routing's decisions, counsellors' records and receivers' referral API, each in its own week
   (between weeks the services restart on an empty embedded broker, PostgreSQL kept: a full in-memory
   broker reads its newest records slowly),
3. prints what metrics counted for each beside the published figures, and the Erlang-A plan of
   lines needed for an 80 % answer rate (from the trial-1 replay's own figures),
4. replays ``scenarios/sns-week.yaml`` (a local platform's phone line and its LINE window, a week) the
   same way and prints phone and SNS side by side — the simulator's truth beside what metrics counted:
   attempts, connected (a chat's first response), time to first response, left before it, hand-overs,
5. leaves the stack running (``--stop`` stops it) with the URLs to query.
"""

from __future__ import annotations

import asyncio
import sys

from rich.console import Console
from rich.table import Table

from schemas.codes import FieldCode
from tsunagu.settings import Settings
from tsunagu_tools import stack
from tsunagu_tools.reports import capacity_plan
from tsunagu_tools.simulate.cli import replay_stack
from tsunagu_tools.simulate.report import channel_table, differences, metrics_figures, period_of, side_by_side
from tsunagu_tools.simulate.scenario import ROOT, load_scenario

REPLAYS = [
    ("trial1.yaml", "再現 replayed (trial-1 desks)"),
    ("trial2-network.yaml", "trial-2 desks"),
    ("trial1-pooled.yaml", "tsunagu pooled (same lines)"),
]
HEADLINE = ("loneliness", "suicidal", "hardship", "women_dv", "under18")
CHANNELS = ("sns-week.yaml", "電話とLINE / phone and LINE")


def run_demo(settings: Settings, *, stop: bool = False, days: float | None = None, fresh: bool = False) -> None:
    console = Console(width=None if sys.stdout.isatty() else 110)
    console.rule("[bold]tsunagu つなぐ — the #9999 trial's first week, replayed")
    if fresh:
        stack.empty_embedded_database(settings, echo=lambda line: console.print(f"  {line}"))
    # Tuned for replays: short waits on routing's path, and referral deadlines on the replay's event
    # time (a 2022 week replayed today is not overdue).
    stack.up(settings, echo=lambda line: console.print(f"  {line}"), replay=True)
    runtime = stack.resolve_runtime(settings)
    published = load_scenario(ROOT / "scenarios" / "trial1.yaml").published.model_dump()

    columns = []
    truths = []
    for i, (name, label) in enumerate(REPLAYS):
        path = ROOT / "scenarios" / name
        if i and runtime.embedded_broker:
            # Each week on an empty in-memory broker: a full one reads its newest records slowly.
            console.print("\n  restarting the services on an empty embedded broker (PostgreSQL kept)")
            stack.fresh_broker(settings, echo=lambda line: console.print(f"    {line}"), replay=True)
        console.print(f"\n[bold]{label}[/bold]: {load_scenario(path).label}")
        truth, report = replay_stack(path, days=days, label=name.removesuffix(".yaml"))
        counted = metrics_figures(report)
        truths.append(truth)
        columns.append((label, counted))
        console.print(f"  {truth.describe()}; period {truth.start:%Y-%m-%d %H:%M} → {truth.end:%m-%d %H:%M}")

    console.print()
    console.print(side_by_side(columns, published))
    console.print("  (each replay counted by metrics by event time, in its own week: "
                  "`tsunagu report --from … --to …` as printed above)")

    plan = asyncio.run(capacity_plan(runtime.database_url, period_of(truths[0]), 0.8, {}))
    table = Table(title="80 % の応答率に必要な回線数 / lines needed for an 80 % answer rate (Erlang-A, trial-1 replay)")
    for col in ("相談分野 field", "current lines", "lines needed, busiest hour", "lines needed, mean hour"):
        table.add_column(col, justify="right" if "lines" in col else "left")
    for f in HEADLINE:
        info = plan["fields"].get(f)
        needed = [r["lines_needed"] for r in plan["hours"] if r["field"] == f and r["lines_needed"] is not None]
        if info is None or not needed:
            continue
        table.add_row(f"{FieldCode(f).ja} ({f})", str(info["current_lines"]), str(max(needed)),
                      f"{sum(needed) / len(needed):.1f}")
    console.print(table)
    first = truths[0]
    console.print(f"  full plan: tsunagu plan --from {first.start.isoformat()} --to {first.end.isoformat()}")
    replay_channels(console, settings, runtime.embedded_broker, days)

    if stop:
        stack.down(settings, echo=lambda line: console.print(f"  {line}"))
        console.print("\nThe stack is stopped (--stop).")
        return
    urls = {s: stack.service_url(settings, s) for s in ("intake", "routing", "referral", "metrics")}
    console.print("\nThe stack is still running. Try:\n"
                  f"  tsunagu report --from {first.start.isoformat()} --to {first.end.isoformat()}\n"
                  f"  tsunagu credentials issue --role secretariat   # then, with that key:\n"
                  f"  curl -H 'Authorization: Bearer …' '{urls['metrics']}/v1/metrics/answer-rate?"
                  f"from={first.start.date()}&to={first.end.date()}&group_by=field'\n"
                  f"  curl -H 'Authorization: Bearer …' {urls['routing']}/v1/desks\n"
                  f"  open {urls['intake']}/docs · {urls['metrics']}/docs · {urls['referral']}/docs\n"
                  "  tsunagu status · tsunagu logs routing · tsunagu down")


def replay_channels(console: Console, settings: Settings, embedded_broker: bool, days: float | None) -> None:
    """The phone line and the LINE window of one local platform, a week through the same services:
    phone and SNS side by side, the simulator's truth beside metrics' count."""
    name, label = CHANNELS
    path = ROOT / "scenarios" / name
    if embedded_broker:
        console.print("\n  restarting the services on an empty embedded broker (PostgreSQL kept)")
        stack.fresh_broker(settings, echo=lambda line: console.print(f"    {line}"), replay=True)
    console.print(f"\n[bold]{label}[/bold]: {load_scenario(path).label}")
    truth, report = replay_stack(path, days=days, label=name.removesuffix(".yaml"))
    console.print(f"  {truth.describe()}; period {truth.start:%Y-%m-%d %H:%M} → {truth.end:%m-%d %H:%M}")
    expected, counted = truth.figures(), metrics_figures(report)
    console.print(channel_table([("真値 truth", expected), ("集計 metrics", counted)],
                                "電話とLINE相談 / phone and LINE, one week"))
    for channel, g in expected["by_channel"].items():
        if g.get("answered_after_leaving"):
            console.print(f"  {channel}: {g['answered_after_leaving']} first responses reached someone who had already "
                          "left without a word (counted connected, as the platforms count them)")
    scenario = load_scenario(path)
    if scenario.chat is not None and scenario.chat.reference:
        console.print(f"  published reference: {scenario.chat.reference}")
    diff = differences(expected, counted)
    if diff:
        console.print("[red]  metrics differs from the simulator's truth:[/red]\n    " + "\n    ".join(diff))
    console.print(f"  tsunagu report --from {truth.start.isoformat()} --to {truth.end.isoformat()}")
    console.print(f"  seats for 80 % first responses within 5 min: tsunagu plan --from {truth.start.isoformat()} "
                  f"--to {truth.end.isoformat()} --channel sns --per-seat 2 --within 300 --target 0.8")
