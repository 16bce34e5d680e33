"""``tsunagu simulate SCENARIO``: replay a scenario through the running stack (or ``--dry-run``
against routing's pure core in this process) and print what happened, checked against metrics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tsunagu.settings import get_settings
from tsunagu_tools.simulate.engine import dry_run
from tsunagu_tools.simulate.scenario import load_scenario
from tsunagu_tools.simulate.truth import GroundTruth

console = Console()
err_console = Console(stderr=True)


def progress_bar(label: str) -> tuple[Progress, Any]:
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f} %"),
                   TimeElapsedColumn(), console=err_console, transient=False)
    task = bar.add_task(label, total=1.0)
    return bar, lambda fraction: bar.update(task, completed=fraction)


def replay_stack(path: Path | str, *, speed: float | None = None, seed: int | None = None,
                 days: float | None = None, label: str | None = None) -> tuple[GroundTruth, dict[str, Any]]:
    """Replay through the running local stack (or DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS); returns
    the ground truth and metrics' report of the replay's own period."""
    from tsunagu_tools import stack
    from tsunagu_tools.simulate.report import counted_report
    from tsunagu_tools.simulate.stack import LeftoverContacts, replay_on_stack

    settings = get_settings()
    runtime = stack.resolve_runtime(settings)
    scenario = load_scenario(path, seed=seed, days=days)
    bar, update = progress_bar(label or scenario.name)

    async def go() -> tuple[GroundTruth, dict[str, Any]]:
        truth = await replay_on_stack(scenario, settings, runtime.bootstrap, runtime.database_url,
                                      speed=speed, progress=update)
        return truth, await counted_report(runtime.database_url, truth)

    try:
        with bar:
            return asyncio.run(go())
    except LeftoverContacts as err:
        err_console.print(f"[red]{err}[/red]")
        raise SystemExit(1) from None


def simulate(
    scenario: Annotated[Path, typer.Argument(help="a scenario file, e.g. scenarios/trial1.yaml")],
    dry_run_: Annotated[bool, typer.Option("--dry-run", help="routing's pure core in this process; no services")]
    = False,
    speed: Annotated[float | None, typer.Option("--speed", help="not faster than this many times real time")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="override the scenario's seed")] = None,
    days: Annotated[float | None, typer.Option("--days", help="override the scenario's length in days")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Replay a scenario (callers, telephony, counsellors, receivers) through the stack's public interfaces."""
    from tsunagu_tools.simulate.report import channel_table, differences, metrics_figures, side_by_side

    try:
        sc = load_scenario(scenario, seed=seed, days=days)
    except (OSError, ValueError) as err:
        err_console.print(f"[red]{scenario}: {err}[/red]")
        raise typer.Exit(2) from None
    if dry_run_:
        bar, update = progress_bar(f"{sc.name} (dry run)")
        with bar:
            truth = dry_run(sc, progress=update)
        figures = truth.figures()
        counted = None
    else:
        truth, report = replay_stack(scenario, speed=speed, seed=seed, days=days)
        figures = truth.figures()
        counted = metrics_figures(report)
    stats = {"events": truth.events_sent, "syncs": truth.syncs, "late": truth.late, "unmatched": truth.unmatched,
             "wall_s": round(truth.wall_s, 1), "sync_wall_s": round(truth.sync_wall_s, 1),
             "unmatched_examples": truth.unmatched_examples}
    if as_json:
        print(json.dumps({"scenario": sc.name, "run": truth.run, "from": truth.start.isoformat(),
                          "to": truth.end.isoformat(), "truth": figures, "metrics": counted, "replay": stats},
                         ensure_ascii=False, indent=2, default=str))
    else:
        columns = [("simulator 真値 truth", figures)]
        if counted is not None:
            columns.append(("metrics 集計 counted", counted))
        published = sc.published.model_dump() if sc.published.attempts else None
        console.print(side_by_side(columns, published) if published else side_by_side(columns, title=sc.label))
        if len(figures["by_channel"]) > 1:  # phone beside chat/SNS
            console.print(channel_table(columns, "チャネル別 / by channel"))
        console.print(f"period {truth.start.isoformat()} → {truth.end.isoformat()}  run {truth.run}  "
                      f"({truth.describe()})")
        if counted is not None:
            console.print(f"report: tsunagu report --from {truth.start.isoformat()} --to {truth.end.isoformat()}")
    if counted is not None:
        diff = differences(figures, counted)
        if diff:
            err_console.print("[red]metrics differs from the simulator's ground truth:[/red]\n  " + "\n  ".join(diff))
            raise typer.Exit(1)
