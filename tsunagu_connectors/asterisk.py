"""The Asterisk connector: a partner's PBX queue_log (``/var/log/asterisk/queue_log``) into tsunagu's
contact events, sent through intake with the partner's own key — a whole file (``import``) or a live
log followed as it grows (``follow``). The mapping is in ``asterisk_queue_log``, following in
``asterisk_follow``; this module holds the commands (the ``tsunagu`` CLI mounts ``app`` as
``tsunagu connect asterisk``).

Unmappable lines (a queue or agent missing from the mapping config, a malformed line): ``import``
sends nothing of the input and lists each line with its reason, unless ``--skip-unmappable`` is given,
and then it sends only the whole calls whose lines all mapped. ``follow`` stops before such a line
(exit 1, its position saved just before it), so the config can be fixed and the follower started
again; with ``--skip-unmappable`` it reports the line and goes on (a live call already partly sent
cannot be held back). Reports name the line and the reason, never the line's content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tsunagu_connectors.asterisk_follow import Follower
from tsunagu_connectors.asterisk_queue_log import CallMapper, ConfigError, MappingConfig, load_mapping, map_text
from tsunagu_connectors.client import KEY_ENV, IntakeClient, IntakeRefused, SecretMissing, partner_key
from tsunagu_connectors.report import SendReport

DEFAULT_INTAKE_URL = "http://127.0.0.1:8081"  # the local stack's intake (tsunagu/settings.py: intake_port)

app = typer.Typer(help="Asterisk queue_log → tsunagu (つなぐ): import a queue_log, or follow a live one.",
                  no_args_is_help=True, add_completion=False)

IntakeUrl = Annotated[str, typer.Option("--intake-url", envvar="TSUNAGU_INTAKE_URL", help="intake's base URL")]
KeyFile = Annotated[Path | None, typer.Option("--key-file", help=f"file holding the partner's API key "
                                                                 f"(else the environment's {KEY_ENV})")]
Partner = Annotated[str, typer.Option("--partner", help="your organisation id, e.g. npo-a")]
ConfigPath = Annotated[Path, typer.Option("--config", help="the mapping config (YAML): queues and desks")]
Skip = Annotated[bool, typer.Option("--skip-unmappable", help="send the calls that map, report the rest")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _key(key_file: Path | None) -> str:
    try:
        return partner_key(key_file)
    except SecretMissing as err:
        raise _fail(f"no API key: {err}") from None


def _mapping(config: Path) -> MappingConfig:
    try:
        return load_mapping(config.read_text())
    except (OSError, ConfigError) as err:
        raise _fail(str(err)) from None


def _say_report(report: SendReport) -> None:
    typer.echo(f"intake: {report.summary()}")
    for event_id, problems in report.refused.items():
        typer.echo(f"  refused {event_id}: {', '.join(str(p.get('path', '')) for p in problems)}", err=True)


@app.command("import")
def import_(
    files: Annotated[list[Path], typer.Argument(help="queue_log files, oldest first (e.g. queue_log.1 queue_log)",
                                                exists=True, dir_okay=False, readable=True)],
    partner: Partner,
    config: ConfigPath,
    intake_url: IntakeUrl = DEFAULT_INTAKE_URL,
    key_file: KeyFile = None,
    skip_unmappable: Skip = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="map and report, send nothing")] = False,
) -> None:
    """Send whole queue_log files. Sending the same files again answers as duplicates: nothing counts twice."""
    mapping = _mapping(config)
    batch = map_text([(f.name, f.read_text(encoding="utf-8", errors="replace")) for f in files], partner, mapping)
    for unmapped in batch.unmapped:
        typer.echo(f"cannot map {unmapped}", err=True)
    events = batch.events(skip_unmappable)
    typer.echo(f"{batch.lines} lines, {batch.calls} calls, {len(batch.unmapped)} unmappable lines; "
               f"{len(events)} events to send")
    if batch.unmapped and not skip_unmappable:
        raise _fail("nothing sent: fix the mapping config, or give --skip-unmappable to send only whole calls "
                    "that map", 1)
    if dry_run:
        return
    try:
        with IntakeClient(intake_url, _key(key_file)) as client:
            report = client.send(events)
    except IntakeRefused as err:
        raise _fail(str(err), 1) from None
    _say_report(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("follow")
def follow(
    file: Annotated[Path, typer.Argument(help="the live queue_log, e.g. /var/log/asterisk/queue_log")],
    partner: Partner,
    config: ConfigPath,
    state: Annotated[Path, typer.Option("--state", help="the follower's state file (its position; created)")],
    intake_url: IntakeUrl = DEFAULT_INTAKE_URL,
    key_file: KeyFile = None,
    skip_unmappable: Skip = False,
    poll: Annotated[float, typer.Option("--poll", min=0.05, help="seconds between looks at the log")] = 1.0,
    exit_when_idle: Annotated[float, typer.Option("--exit-when-idle", min=0.0,
                                                  help="stop after this many seconds with no new line "
                                                       "(0: follow for ever)")] = 0.0,
) -> None:
    """Follow a live queue_log (tail -f), surviving rotation, resuming from --state after a restart."""
    mapping = _mapping(config)
    key = _key(key_file)
    with IntakeClient(intake_url, key) as client:
        def send(events: list[dict[str, Any]]) -> SendReport:
            return client.send(events)

        follower = Follower(file, state, CallMapper(partner, mapping), send, skip_unmappable=skip_unmappable,
                            say=lambda m: typer.echo(m, err=True))
        try:
            code = follower.run(poll=poll, idle_exit=exit_when_idle)
        except (IntakeRefused, ValueError) as err:
            raise _fail(str(err), 1) from None
    raise typer.Exit(code)


if __name__ == "__main__":  # python -m tsunagu_connectors.asterisk, until the tsunagu CLI mounts it
    app(prog_name="tsunagu connect asterisk")
