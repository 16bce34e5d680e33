"""Kept for the CLI's import: credentials are shared plumbing, in tsunagu.credentials_cli."""
from tsunagu.credentials_cli import credentials_app

__all__ = ["credentials_app"]
