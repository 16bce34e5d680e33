"""`tsunagu desks apply FILE` and `tsunagu desks show`: the desk registry's effective-dated versions."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from schemas import FieldCode
from services.routing import store
from services.routing.desks import Registry, opening_summary, parse_registry
from tsunagu_tools.database import run_with_pool

desks_app = typer.Typer(help="The desk registry: apply a version, show what is in effect.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _with_pool(work):
    return run_with_pool(work, migrations=[store.migrate_schema])


def _field_names(registry: Registry, desk_fields) -> str:
    return ", ".join(f"{FieldCode(f).ja} ({f.value})" for f in desk_fields)


@desks_app.command("apply")
def apply(file: Annotated[Path, typer.Argument(help="a registry version as YAML, e.g. config/trial2.yaml")]) -> None:
    """Validate a registry version and store it; routing uses it from its effective_from time."""
    try:
        document = store.read_document(file)
        registry = parse_registry(document)
    except (OSError, ValueError) as err:
        if isinstance(err, ValidationError):
            for e in err.errors(include_input=False, include_url=False):
                err_console.print(f"[red]{'.'.join(str(p) for p in e['loc'])}[/red]: {e['msg']}")
        else:
            err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    try:
        _, stored = asyncio.run(_with_pool(lambda pool: store.apply_registry(pool, document)))
    except store.VersionConflict as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    what = "applied" if stored else "already applied (unchanged)"
    console.print(f"version {registry.version} {what}: {len(registry.organisations)} organisations, "
                  f"{len(registry.desks)} desks, {sum(d.lines for d in registry.desks)} lines, "
                  f"effective from {registry.effective_from.isoformat()}")


@desks_app.command("show")
def show(
    at: Annotated[str | None, typer.Option(help="the version in effect at this time (RFC 3339); default: the newest")]
    = None,
) -> None:
    """List the stored versions and the desks of the one in effect."""
    async def load(pool):
        return await store.load_registries(pool)

    _, registries = asyncio.run(_with_pool(load))
    if not registries:
        console.print("no desk registry applied yet: `tsunagu desks apply config/trial1.yaml`")
        return
    versions = Table("version", "effective from", "organisations", "desks", "lines", title="registry versions")
    for r in sorted(registries, key=lambda r: r.effective_from):
        versions.add_row(r.version, r.effective_from.isoformat(), str(len(r.organisations)), str(len(r.desks)),
                         str(sum(d.lines for d in r.desks)))
    console.print(versions)
    chosen = sorted(registries, key=lambda r: r.effective_from)
    if at is not None:
        when = datetime.fromisoformat(at)
        chosen = [r for r in chosen if r.effective_from <= when] or chosen[:1]
    registry = chosen[-1]
    table = Table("organisation", "desk", "fields 相談分野", "tier", "lines", "hours", "regions",
                  title=f"desks of {registry.version}")
    for d in registry.desks:
        table.add_row(d.organisation_id, d.id, _field_names(registry, d.fields), str(d.tier), str(d.lines),
                      opening_summary(d), ",".join(d.regions) or "-")
    console.print(table)
