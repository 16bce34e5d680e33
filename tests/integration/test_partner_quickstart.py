"""The README's quick start for partners works as written: its curl, Python and Node.js sends, taken
from the README itself, run against a real intake with a live key, and their events reach the
canonical topic with the caller's number replaced."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import read_topic

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
RUNNERS = {"curl": ["bash", "-e"], "python": [sys.executable], "node": ["node"]}
SUFFIX = {"curl": ".sh", "python": ".py", "node": ".mjs"}


def snippet(name: str) -> str:
    """The fenced block after ``<!-- quickstart: name -->`` in the README."""
    found = re.search(rf"<!-- quickstart: {name} -->\n```[a-z]*\n(.*?)\n```", README, re.S)
    assert found, f"the README has no quick start block for {name}"
    return found.group(1) + "\n"


@pytest.mark.parametrize("name", ["curl", "python", "node"])
async def test_the_quick_start_sends_work_as_written(name: str, intake, tmp_path: Path):
    runner = RUNNERS[name]
    assert shutil.which(runner[0]), f"{runner[0]} is needed to run the README's {name} quick start"
    script = tmp_path / f"quickstart{SUFFIX[name]}"
    script.write_text(snippet(name), encoding="utf-8")
    env = {**os.environ, "TSUNAGU_URL": intake.url, "TSUNAGU_ORG": "npo-a",
           "TSUNAGU_API_KEY": intake.keys["npo-a-live"]}
    done = subprocess.run([*runner, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    body = json.loads(done.stdout[done.stdout.index("{"):])
    assert body["accepted"] == (2 if name == "node" else 1), body

    records = await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=body["accepted"])
    assert len(records) == body["accepted"]
    received = [json.loads(r.value) for r in records if b"contact.received" in r.value]
    assert received and all("caller_id" not in e["data"] and e["data"]["caller_key"] for e in received)
    assert not [r for r in records if b"090-1234-5678" in r.value or b"09012345678" in r.value]
