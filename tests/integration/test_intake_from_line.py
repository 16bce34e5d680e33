"""A LINE consultation window with screening and the counsellors' console, through the real intake: the
owner's triage and transfer are accepted, every moment is stored once, and sending it all again stores
nothing new (real broker and PostgreSQL; the receiver's mapping is unit-tested in
tests/unit/test_connector_line*.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support import read_topic, values
from tsunagu_connectors import line

pytestmark = pytest.mark.integration

FOLDER = Path(line.__file__).parent / "samples" / "line" / "with-console"


def run_in_order(intake, state_file: Path) -> list[str]:
    """Each sample file in name order: webhook bodies with ``line send``, console files with ``line console``,
    both on one state file as the receiver and the console share it. Their outputs."""
    outputs = []
    for path in sorted(p for p in FOLDER.iterdir() if p.suffix in (".json", ".jsonl")):
        command = "console" if path.suffix == ".jsonl" else "send"
        result = CliRunner().invoke(line.app, [
            command, "--config", str(FOLDER / "mapping.yaml"), "--partner", "npo-a", "--intake-url", intake.url,
            "--state-file", str(state_file), str(path)], env={"TSUNAGU_API_KEY": intake.keys["npo-a"]})
        assert result.exit_code == 0, (path.name, result.output)
        outputs.append(result.output)
    return outputs


async def test_a_line_day_with_screening_and_the_console_is_stored_once(intake, tmp_path):
    # the commands run their own event loop: off this one
    first = await asyncio.to_thread(run_in_order, intake, tmp_path / "line.sqlite3")
    assert sum(int(out.split("intake: ")[1].split(" accepted")[0]) for out in first) == 13, first
    published = values(await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=13, timeout=10))
    kinds = Counter(e["type"].removeprefix("jp.tsunagu.").removesuffix(".v1") for e in published)
    assert kinds == {"contact.received": 3, "contact.field_selected": 3, "contact.triaged": 1,
                     "contact.answered": 2, "contact.transferred": 1, "contact.ended": 1, "contact.abandoned": 2}
    triaged = next(e for e in published if e["type"] == "jp.tsunagu.contact.triaged.v1")
    assert triaged["data"]["risk"] == "high" and triaged["source"] == "/partners/npo-a/line"
    # everything again, the receiver's state kept: all duplicates
    again = await asyncio.to_thread(run_in_order, intake, tmp_path / "line.sqlite3")
    assert all("intake: 0 accepted" in out for out in again), again
    assert len(values(await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=14, timeout=3))) == 13
