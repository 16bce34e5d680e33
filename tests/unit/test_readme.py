"""The README stays true: every setting is documented, every command it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from tsunagu.settings import Settings
from tsunagu_tools.cli import app
from tsunagu_tools.services import APPS

README = (Path(__file__).parents[2] / "README.md").read_text()
MAKEFILE = (Path(__file__).parents[2] / "Makefile").read_text()


def env_name(field: str) -> str:
    return field.upper() if field in ("database_url", "kafka_bootstrap_servers") else f"TSUNAGU_{field.upper()}"


def test_every_setting_is_documented_in_the_readme():
    # the shared settings and each service's own (its spec's class)
    classes = (Settings, *(module.SPEC.settings for module in APPS.values()))
    missing = [env_name(f) for cls in classes for f in cls.model_fields if env_name(f) not in README]
    assert not missing


def test_every_tsunagu_command_the_readme_names_exists():
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    named = set(re.findall(r"`tsunagu ([a-z][a-z-]*)", README))
    assert named <= commands, named - commands


def test_every_make_target_the_readme_names_exists():
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", MAKEFILE, re.M))
    named = set(re.findall(r"make ([a-z][a-z0-9-]*)", README))
    assert named <= targets, named - targets
