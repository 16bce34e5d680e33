"""The ``tsunagu`` command: the local stack (up, status, down, logs), credentials, the demo and the
partners' connectors (``tsunagu connect``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tsunagu.settings import SettingsError, get_settings
from tsunagu_connectors.cli import connect_app
from tsunagu_tools import connectors_demo, reports, stack, trace
from tsunagu_tools.credentials import credentials_app
from tsunagu_tools.desks import desks_app
from tsunagu_tools.directory import directory_app
from tsunagu_tools.simulate import cli as simulate_cli

app = typer.Typer(
    help="tsunagu (つなぐ): the event backbone of a nationwide consultation network.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(credentials_app, name="credentials")
app.add_typer(desks_app, name="desks")  # routing's desk registry (issue 3)
# metrics (issue 5): the secretariat's period report and Erlang-A capacity plan
app.command("report")(reports.report)
app.command("plan")(reports.plan)
app.add_typer(directory_app, name="directory")  # referral's directory of receivers
app.command("simulate")(simulate_cli.simulate)  # the trial replay (issue 6)
app.command("trace")(trace.trace)  # one contact's trace from `tsunagu up --telemetry` files (issue 7)
app.add_typer(connect_app, name="connect")  # partners' platforms → intake (tsunagu_connectors/)
app.command("connectors-demo")(connectors_demo.connectors_demo)  # each connector's sample → figures

console = Console()
err_console = Console(stderr=True)

HEALTH_STYLE = {"ready": "green", "live": "yellow", "down": "red"}


def _echo(message: str) -> None:
    console.print(f"[dim]·[/dim] {message}")


def _parts_table(rows: list[stack.PartStatus]) -> Table:
    table = Table(title="tsunagu local stack")
    table.add_column("part")
    table.add_column("where")
    table.add_column("pid", justify="right")
    table.add_column("address", overflow="fold")
    table.add_column("health")
    for row in rows:
        style = HEALTH_STYLE.get(row.health, "")
        table.add_row(
            row.name,
            "embedded" if row.embedded else "external",
            str(row.pid) if row.pid else "-",
            row.address,
            f"[{style}]{row.health}[/{style}]",
        )
    return table


@app.command()
def up(
    telemetry: Annotated[bool, typer.Option(
        "--telemetry", help="services write spans and metrics as JSON lines into .tsunagu/telemetry/ "
        "(see `tsunagu trace`)")] = False,
    replay: Annotated[bool, typer.Option(
        "--replay", help="tune the services for replays (`tsunagu simulate`): short fetch waits, no producer "
        "linger, referral deadlines on event time")] = False,
) -> None:
    """Start the broker, PostgreSQL and every service that is not running; return when all are ready."""
    settings = get_settings()
    stack.up(settings, echo=_echo, telemetry=telemetry, replay=replay)
    console.print(_parts_table(stack.status(settings)))


@app.command()
def status() -> None:
    """Show every part of the local stack and its health (exit 1 if anything is down)."""
    rows = stack.status(get_settings())
    console.print(_parts_table(rows))
    if any(row.health == "down" for row in rows):
        raise typer.Exit(1)


@app.command()
def down() -> None:
    """Stop the services (gracefully), then the broker, then embedded PostgreSQL; external parts stay."""
    stack.down(get_settings(), echo=_echo)
    console.print("the local stack is down")


@app.command()
def logs(
    part: Annotated[str | None, typer.Argument(help="broker, postgres or a service (all if omitted)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="lines to show from the end of each log")] = 50,
) -> None:
    """Show the logs of the local stack's parts."""
    settings = get_settings()
    names = stack.part_names()
    if part is not None and part not in names:
        err_console.print(f"[red]unknown part {part!r}[/red]: choose one of {', '.join(names)}")
        raise typer.Exit(2)
    chosen = [part] if part else names
    paths = {name: stack.log_path(settings, name) for name in chosen}
    prefix = len(chosen) > 1
    offsets: dict[str, int] = {}
    for name, path in paths.items():
        if not path.exists():
            if part:
                err_console.print(f"no log for {name} yet ({path})")
            offsets[name] = 0
            continue
        if prefix:
            console.rule(name)
        sys.stdout.write(stack.tail(path, lines))
        offsets[name] = path.stat().st_size
    sys.stdout.flush()
    if follow:
        _follow(paths, offsets, prefix)


def _follow(paths: dict[str, Path], offsets: dict[str, int], prefix: bool) -> None:
    try:
        while True:
            for name, path in paths.items():
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                if size < offsets[name]:  # truncated or replaced
                    offsets[name] = 0
                if size == offsets[name]:
                    continue
                with path.open("rb") as f:
                    f.seek(offsets[name])
                    chunk = f.read()
                offsets[name] += len(chunk)
                text = chunk.decode(errors="replace")
                if prefix:
                    text = "".join(f"{name} | {line}" for line in text.splitlines(keepends=True))
                sys.stdout.write(text)
            sys.stdout.flush()
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass


# --- demo --------------------------------------------------------------------------------------
@app.command()
def demo(
    stop: Annotated[bool, typer.Option("--stop", help="stop the local stack at the end (default: leave it running)")]
    = False,
    days: Annotated[float | None, typer.Option("--days", help="replay only this many days of each week (faster)")]
    = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="start from an empty embedded PostgreSQL (deletes its data: "
                                        "after an interrupted replay)")] = False,
) -> None:
    """Replay the #9999 trial's first week three ways through the local stack and compare (see README)."""
    from tsunagu_tools.demo import run_demo

    try:
        run_demo(get_settings(), stop=stop, days=days, fresh=fresh)
    except stack.StackError as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None


def main() -> None:
    try:
        app()
    except SettingsError as err:
        err_console.print(Text(str(err.code), style="red"), soft_wrap=True)
        sys.exit(2)
    except stack.StackError as err:
        err_console.print(Text(str(err), style="red"), soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
