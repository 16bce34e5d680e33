"""`tsunagu credentials issue|list|revoke`: API keys for partners, receivers and the secretariat."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from tsunagu import auth
from tsunagu_tools.database import run_with_pool

credentials_app = typer.Typer(help="API keys: issue, list, revoke.", no_args_is_help=True)


def _with_pool(work):
    return run_with_pool(work, migrations=[auth.migrate_schema])


@credentials_app.command("issue")
def issue(
    role: str = typer.Option(..., help="partner | receiver | secretariat"),
    org: str = typer.Option(None, help="organisation id (required for partner and receiver)"),
    label: str = typer.Option(None, help="a note for whoever lists keys later, e.g. the system using it"),
    acts_for: list[str] = typer.Option(  # noqa: B008 - typer's way of declaring a repeatable option
        [], "--acts-for", help="partner keys: an organisation this platform reports for (its desks' answers); "
        "repeat for each"),
    backfill: bool = typer.Option(False, "--backfill", help="partner keys: may send events older than intake's "
                                  "horizon, to replay a past period"),
) -> None:
    """Print a new API key once. Only its hash is stored: keep it safe."""
    if role not in auth.ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(auth.ROLES)}", param_hint="--role")
    if role == "secretariat":
        org = org or auth.SECRETARIAT_ORG
    elif not org:
        raise typer.BadParameter(f"--org is required for role {role}", param_hint="--org")
    if role != "partner" and (acts_for or backfill):
        raise typer.BadParameter("--acts-for and --backfill are for partner keys", param_hint="--role")
    key_id, api_key = asyncio.run(_with_pool(lambda pool: auth.issue_credential(
        pool, org, role, label, acts_for=acts_for, backfill=backfill)))
    Console(stderr=True).print(f"issued key {key_id} for {role} '{org}'; it is shown only this once:")
    print(api_key)


@credentials_app.command("list")
def list_keys(org: str = typer.Option(None, help="only this organisation's keys")) -> None:
    """List keys (never the keys themselves)."""
    rows = asyncio.run(_with_pool(lambda pool: auth.list_credentials(pool, org)))
    table = Table("key id", "organisation", "role", "acts for", "back-fill", "label", "created", "revoked")
    for c in rows:
        table.add_row(c.key_id, c.org_id, c.role, ", ".join(c.acts_for), "yes" if c.backfill else "", c.label or "",
                      f"{c.created_at:%Y-%m-%d %H:%M}", f"{c.revoked_at:%Y-%m-%d %H:%M}" if c.revoked_at else "")
    Console().print(table)


@credentials_app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="the key id shown by `issue` and `list`")) -> None:
    """Revoke a key; it stops working at once."""
    if not asyncio.run(_with_pool(lambda pool: auth.revoke_credential(pool, key_id))):
        Console(stderr=True).print(f"no active key with id {key_id}")
        raise typer.Exit(1)
    print(f"revoked {key_id}")
