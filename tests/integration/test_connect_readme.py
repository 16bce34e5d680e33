"""The README's "Connect your system" chapter runs as written: every command block marked
``<!-- connect: run -->`` runs in a shell, in order, with the ``tsunagu`` CLI against a real intake
and its database, and what the connectors send reaches the canonical topic without a caller's number."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import read_topic, service_env

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks() -> list[str]:
    chapter = README[README.index("## Connect your system"):]
    chapter = chapter[:chapter.index("\n## ", 1)]
    return re.findall(r"<!-- connect: run -->\n```sh\n(.*?)\n```", chapter, re.S)


def test_the_chapter_has_a_block_for_every_connector():
    commands = "\n".join(blocks())
    for platform in ("asterisk", "twilio", "line", "amazon-connect"):
        assert f"tsunagu connect {platform} " in commands, platform


async def test_every_command_of_the_chapter_runs_as_written(intake, tmp_path: Path):
    # the commands name the samples by their path in the repository; key files land in the scratch dir
    (tmp_path / "tsunagu_connectors").symlink_to(ROOT / "tsunagu_connectors")
    env = {**os.environ, **service_env(intake.settings), "TSUNAGU_URL": intake.url,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    outputs = []
    for block in blocks():
        done = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{block}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        outputs.append(done.stdout + done.stderr)

    sent = [int(n) for out in outputs for n in re.findall(r"(\d+) accepted", out)]
    assert sum(sent) > 0, outputs
    records = await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=sum(sent))
    assert len(records) >= sum(sent)
    events = [json.loads(r.value) for r in records]
    assert not [e for e in events if "caller_id" in e["data"]]  # replaced by a caller key at the door
