"""`tsunagu connectors-demo` on a stack of its own: every connector's documented sample goes through
intake to metrics, and each platform's figures are the ones its own records give."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from tsunagu_tools import connectors_demo, stack
from tsunagu_tools.services import SERVICES

pytestmark = pytest.mark.e2e

# What each sample holds, read off the platforms' records by hand (samples/<platform>/README.md):
# title, then attempts, connected, abandoned, answer rate (LINE: openings of conversations only).
EXPECTED = {
    "Asterisk queue_log": ["2", "2", "0", "1.0"],  # two queued calls, both connected
    "Twilio TaskRouter": ["2", "1", "1", "0.5"],  # one task accepted, one canceled in the queue
    "Amazon Connect CTR": ["5", "3", "2", "0.6"],  # five inbound voice contacts; transfers, chat, outbound aside
    "LINE Messaging API": ["2"],  # one person, two conversations (a silence between)
}


def tsunagu(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsunagu_tools.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def rows_of(output: str, title: str) -> list[list[str]]:
    """The cells of the table titled ``title…`` (rich's box lines), first column included."""
    after = output[output.index(title):]
    table = after[:after.index("└")] if "└" in after else after
    return [[cell.strip() for cell in line.strip("│ ").split("│")] for line in table.splitlines()
            if line.startswith("│") and re.search(r"\w", line)]


def test_every_connectors_sample_reaches_metrics_as_the_platforms_own_records_count_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(TSUNAGU_HOME=str(tmp_path / "home"), TSUNAGU_BROKER_PORT=str(stack.free_port()),
               TSUNAGU_PARTITIONS="4", COLUMNS="140")
    for service in SERVICES:
        env[f"TSUNAGU_{service.upper()}_PORT"] = str(stack.free_port())
    try:
        first = tsunagu(env, "connectors-demo")
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        for title, figures in EXPECTED.items():
            rows = [r for r in rows_of(first.stdout, title) if "/" in r[0]]
            counted = [(r[1], r[2]) for r in rows if r[1] != "—"]
            assert counted == [(f, f) for f in figures], (title, rows)
        assert "相違" not in first.stdout
        # everything again: intake answers duplicate, the figures stay
        again = tsunagu(env, "connectors-demo")
        assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
        assert "duplicate" in again.stdout
    finally:
        tsunagu(env, "down", timeout=180)


def test_each_sample_is_counted_on_days_of_its_own_outside_the_trials(tmp_path: Path):
    """Figures of one platform must not mix with another's, nor with a replay of the trials."""
    periods = []
    for platform in connectors_demo.PLATFORMS:
        folder = tmp_path / platform.name
        folder.mkdir()
        periods.append(connectors_demo.period_of(platform.prepare(folder, platform.shift_days).count))
    named = Path(connectors_demo.__file__).parents[1] / "config" / "periods.yaml"
    trials = [(date.fromisoformat(t["from"][:10]), date.fromisoformat(t["to"][:10]))
              for t in yaml.safe_load(named.read_text())["periods"].values()]
    for n, (start, end) in enumerate(periods):
        others = trials + periods[:n] + periods[n + 1:]
        assert all(end < s or start > e for s, e in others), (connectors_demo.PLATFORMS[n].name, start, end)
