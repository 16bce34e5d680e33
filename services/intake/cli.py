"""`tsunagu credentials ...`: partner API keys (placeholder while intake is written)."""
import typer

credentials_app = typer.Typer(help="Partner credentials: issue, list, revoke.", no_args_is_help=True)


@credentials_app.command("list")
def list_credentials() -> None:
    """List credentials."""
    raise typer.Exit(1)
