"""`tsunagu directory load FILE | export | lookup`: the receivers' directory of the referral service."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from schemas.codes import ReceiverType
from schemas.municipalities import municipality
from services.referral import store
from services.referral.directory import Directory, generated
from services.referral.domain import receiver_chain
from tsunagu_tools.database import run_with_pool

directory_app = typer.Typer(help="The referral directory of receivers: load, export, look up.", no_args_is_help=True)
err = Console(stderr=True)


def _with_pool(work):
    return run_with_pool(work, migrations=[store.migrate_schema])


@directory_app.command("load")
def load(
    file: Annotated[Path, typer.Argument(help="a directory JSON file (see `tsunagu directory export`)")],
) -> None:
    """Replace the directory with FILE (validated first: nothing changes if it has a problem)."""
    try:
        directory = Directory.model_validate_json(file.read_bytes())
    except OSError as e:
        raise typer.BadParameter(f"cannot read {file}: {e.strerror}") from None
    except ValidationError as e:
        err.print(f"[red]{file} is not a valid directory[/red] ({e.error_count()} problems):")
        for problem in e.errors(include_input=False, include_url=False)[:20]:
            err.print(f"  {'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}")
        raise typer.Exit(1) from None
    loaded = asyncio.run(_with_pool(lambda pool: store.load_directory(pool, directory)))
    err.print(f"loaded {loaded} organisations")


@directory_app.command("export")
def export(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write here instead of stdout")] = None,
    demo: Annotated[bool, typer.Option("--generated", help="the generated demo directory, not the database's")] = False,
) -> None:
    """Write the directory as JSON (the format `load` reads)."""
    directory = generated() if demo else asyncio.run(_with_pool(store.export_directory))
    text = directory.model_dump_json(indent=1)
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        out.write_text(text + "\n", encoding="utf-8")
        err.print(f"wrote {len(directory.organizations)} organisations to {out}")


@directory_app.command("lookup")
def lookup(
    code: Annotated[str, typer.Argument(help="a municipality code (JIS X 0402, 6 digits)")],
    need: Annotated[ReceiverType | None, typer.Option(help="the kind of receiver needed")] = None,
    imminent: Annotated[bool, typer.Option(help="imminent risk to life (→ police)")] = False,
) -> None:
    """The receivers a referral from this municipality goes to, in order."""
    entry = municipality(code)
    if entry is None or entry.is_prefecture:
        raise typer.BadParameter("not a municipality code of the official list", param_hint="CODE")

    async def work(pool):
        async with pool.acquire() as conn:
            return (await store.receivers_for(conn, {code}))[code]

    chain = receiver_chain(code, need, imminent, asyncio.run(_with_pool(work)))
    table = Table("#", "receiver", "type", "via area", title=f"{entry.name_ja} ({code})")
    for n, r in enumerate(chain, 1):
        table.add_row(str(n), r.id, f"{r.type.ja} ({r.type.value})", r.area or "-")
    Console().print(table)
