"""``tsunagu connect <platform> …``: every connector's commands under one group (the ``tsunagu`` CLI
mounts it). Each connector keeps its own typer app in its module."""

from __future__ import annotations

import typer

from tsunagu_connectors import amazon_connect, asterisk, line, twilio

connect_app = typer.Typer(
    help="Connect your system / システムをつなぐ: a partner platform's own records → tsunagu's events, "
    "sent through intake with the partner's key.",
    no_args_is_help=True,
)
connect_app.add_typer(asterisk.app, name="asterisk")
connect_app.add_typer(twilio.app, name="twilio")
connect_app.add_typer(amazon_connect.app, name="amazon-connect")
connect_app.add_typer(line.app, name="line")
