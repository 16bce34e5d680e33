"""`tsunagu desks apply` / `tsunagu desks show` against a real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def tsunagu(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": settings.database_url,
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "tsunagu_tools.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_the_secretariat_applies_both_trials_and_sees_which_desks_are_in_effect(settings, tmp_path):
    first = tsunagu(settings, "desks", "apply", "config/trial1.yaml")
    assert first.returncode == 0, first.stderr
    assert "trial1 applied: 11 organisations" in first.stdout
    assert "already applied" in tsunagu(settings, "desks", "apply", "config/trial1.yaml").stdout
    assert tsunagu(settings, "desks", "apply", "config/trial2.yaml").returncode == 0

    shown = tsunagu(settings, "desks", "show", "--at", "2022-07-08T12:00:00+09:00")
    assert shown.returncode == 0, shown.stderr
    assert "desks of trial1" in shown.stdout and "social-workers-desk" not in shown.stdout
    assert "孤独・孤立でお悩みの方" in shown.stdout
    assert "social-workers-desk" in tsunagu(settings, "desks", "show").stdout

    changed = (ROOT / "config" / "trial1.yaml").read_text().replace("lines: 1}", "lines: 2}", 1)
    (tmp_path / "changed.yaml").write_text(changed)
    refused = tsunagu(settings, "desks", "apply", str(tmp_path / "changed.yaml"))
    assert refused.returncode == 1 and "immutable" in refused.stderr

    (tmp_path / "bad.yaml").write_text("version: x\neffective_from: '2022-07-07T10:00:00+09:00'\norganisations:\n"
                                       "  - {id: o, name: o, desks: [{id: d, fields: [astrology], lines: 1}]}\n")
    bad = tsunagu(settings, "desks", "apply", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 2 and "fields" in bad.stderr
