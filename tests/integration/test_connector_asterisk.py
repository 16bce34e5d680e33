"""The Asterisk connector against the real intake (and metrics): a queue_log imported and followed
arrives on tsunagu.contact.events once, with no caller number on any topic, and metrics' figures per
field equal the figures counted straight from the raw queue_log."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.timezone import JST
from tests.integration.connector_support import (
    callers_of,
    count_per_queue,
    raw_text_of_all_topics,
    totals,
    week_of_calls,
)
from tests.integration.metrics_support import start_metrics
from tests.support import read_topic, values
from tsunagu_connectors.asterisk import app
from tsunagu_connectors.asterisk_queue_log import load_mapping, map_text

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tsunagu_connectors" / "samples" / "asterisk"
WEEK = datetime(2026, 11, 2, 0, 0, tzinfo=JST)
WEEK_CONFIG = """
queues:
  q-lonely: {field: loneliness, menu_position: 1}
  q-dying: {field: suicidal, menu_position: 2}
  q-money: {field: hardship, menu_position: 3}
  q-young: {field: under18, menu_position: 4}
  q-overflow: {field: women_dv, menu_position: 5}
desks:
""" + "".join(f"  PJSIP/{n}: npo-a-desk-{n}\n" for n in range(201, 209))


def run_cli(*args: str, key: str):
    """The connector's commands as a partner runs them, with the key in the environment."""
    return CliRunner().invoke(app, list(args), env={"TSUNAGU_API_KEY": key}, catch_exceptions=False)


def expected_events(files: list[Path], config: str) -> int:
    batch = map_text([(f.name, f.read_text()) for f in files], "npo-a", load_mapping(config))
    assert not batch.unmapped
    return len(batch.events(skip_unmappable=False))


async def test_import_sends_the_documentation_sample_once_and_never_a_caller_number(intake):
    args = ("import", str(SAMPLES / "queue_log"), "--partner", "npo-a", "--config", str(SAMPLES / "mapping.yaml"),
            "--intake-url", intake.url)
    first = await asyncio.to_thread(run_cli, *args, key=intake.keys["npo-a"])
    assert first.exit_code == 0, first.output
    assert "intake: 7 accepted, 0 duplicate, 0 rejected, 0 conflict" in first.output
    again = await asyncio.to_thread(run_cli, *args, key=intake.keys["npo-a"])
    assert again.exit_code == 0 and "intake: 0 accepted, 7 duplicate" in again.output

    records = values(await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=8, timeout=10))
    assert Counter(r["type"].split(".")[3] for r in records) == {"received": 2, "field_selected": 2,
                                                                  "answered": 2, "ended": 1}
    assert {r["source"] for r in records} == {"/partners/npo-a/asterisk"}
    assert all(r["data"].get("caller_key") for r in records if r["type"].endswith("received.v1"))
    on_topics = await raw_text_of_all_topics(intake.settings, intake.bootstrap)
    assert "4165551212" not in on_topics and "psy1-1292281041.87" not in on_topics


def state_offset(state: Path) -> int:
    try:
        return int(json.loads(state.read_text())["offset"])
    except (FileNotFoundError, ValueError, KeyError):
        return -1


async def caught_up(state: Path, log: Path, process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until the follower's saved position is the end of ``log`` (it sent everything there)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while state_offset(state) != log.stat().st_size:
        assert process.poll() is None, f"the follower exited with {process.returncode}"
        assert asyncio.get_running_loop().time() < deadline, "the follower did not catch up"
        await asyncio.sleep(0.1)


def start_follow(log: Path, config: Path, state: Path, url: str, key: str, err: Path, *extra: str):
    return subprocess.Popen(
        [sys.executable, "-m", "tsunagu_connectors.asterisk", "follow", str(log), "--partner", "npo-a",
         "--config", str(config), "--state", str(state), "--intake-url", url, "--poll", "0.1", *extra],
        cwd=ROOT, env={**os.environ, "TSUNAGU_API_KEY": key}, stdout=subprocess.DEVNULL, stderr=err.open("ab"))


async def test_follow_counts_every_call_once_across_a_kill_a_lost_save_a_restart_and_rotations(intake, tmp_path):
    lines = week_of_calls(WEEK, 120, seed=3)
    parts = [lines[:150], lines[150:300], lines[300:450], lines[450:]]
    log, state, err = tmp_path / "queue_log", tmp_path / "state.json", tmp_path / "follow.err"
    config = tmp_path / "mapping.yaml"
    config.write_text(WEEK_CONFIG)
    key = intake.keys["npo-a"]

    def write(path: Path, chunk: list[str]) -> None:
        with path.open("a") as f:
            f.write("".join(line + "\n" for line in chunk))

    write(log, parts[0])
    follower = start_follow(log, config, state, intake.url, key, err)
    try:
        await caught_up(state, log, follower)
        shutil.copy(state, tmp_path / "state.early")
        write(log, parts[1])
        await caught_up(state, log, follower)
    finally:
        follower.kill()  # no goodbye: SIGKILL
        await asyncio.to_thread(follower.wait)
    # the last save was lost (a crash between sending and saving): the restart sends part 1 again
    shutil.copy(tmp_path / "state.early", state)
    # while it was down, Asterisk went on and the log was rotated
    write(log, parts[2][:50])
    log.rename(tmp_path / "queue_log.1")
    write(log, parts[2][50:])
    follower = start_follow(log, config, state, intake.url, key, err, "--exit-when-idle", "3")
    try:
        await caught_up(state, log, follower)
        log.rename(tmp_path / "queue_log.2")  # and rotated again while it runs
        write(log, parts[3])
        code = await asyncio.to_thread(follower.wait, 60)
    finally:
        if follower.poll() is None:
            follower.kill()
    said = err.read_text()
    assert code == 0, said
    assert "rotated" in said and " duplicate" in said and "4165551212" not in said

    whole = tmp_path / "whole"
    whole.write_text("".join(line + "\n" for line in lines))
    expected = expected_events([whole], WEEK_CONFIG)
    records = values(await read_topic(intake.bootstrap, intake.topic("contact.events"), expect=expected + 1,
                                      timeout=15))
    assert len(records) == expected
    per_contact = Counter((r["subject"], r["type"]) for r in records)
    assert len({(r["source"], r["id"]) for r in records}) == len(records)
    # only a call that timed out of one queue into another selects (and may leave) twice
    assert all(n == 1 or t.endswith(("field_selected.v1", "abandoned.v1")) for (_c, t), n in per_contact.items())
    received = [r for r in records if r["type"].endswith("received.v1")]
    assert len(received) == len({line.split("|")[1] for line in lines if "|ENTERQUEUE|" in line})
    on_topics = await raw_text_of_all_topics(intake.settings, intake.bootstrap)
    assert not {c for c in callers_of(lines) if c in on_topics}


async def test_metrics_per_field_equal_an_independent_count_of_the_raw_queue_log(intake, tmp_path):
    """The proof: (a) the documentation's sample, (b) a generated week of 3,000 calls over five queues."""
    week = week_of_calls(WEEK, 3000)
    week_log, config = tmp_path / "queue_log", tmp_path / "mapping.yaml"
    week_log.write_text("".join(line + "\n" for line in week))
    config.write_text(WEEK_CONFIG)
    key = intake.keys["npo-a"]
    sent = 0
    for log, cfg in ((SAMPLES / "queue_log", SAMPLES / "mapping.yaml"), (week_log, config)):
        n = expected_events([log], cfg.read_text())
        result = await asyncio.to_thread(run_cli, "import", str(log), "--partner", "npo-a", "--config", str(cfg),
                                         "--intake-url", intake.url, key=key)
        assert result.exit_code == 0 and f"intake: {n} accepted, 0 duplicate" in result.output, result.output
        sent += n

    metrics = await asyncio.to_thread(start_metrics, intake.settings, intake.keys, tmp_path / "metrics.log")
    try:
        await metrics.wait_until_consumed(sent, timeout=120)
        for lines, cfg, day_from, day_to in (
            ((SAMPLES / "queue_log").read_text().splitlines(), (SAMPLES / "mapping.yaml").read_text(),
             "2010-12-14", "2010-12-14"),
            (week, WEEK_CONFIG, "2026-11-02", "2026-11-08"),
        ):
            field_of = {q: m.field.value for q, m in load_mapping(cfg).queues.items()}
            counted = count_per_queue(lines)
            body = (await metrics.get("/v1/metrics/answer-rate", group_by="field",
                                      **{"from": day_from, "to": day_to})).json()
            reported = {g["key"]: {k: g[k] for k in ("attempts", "connected", "abandoned", "answer_rate")}
                        for g in body["groups"]}
            assert reported == {field_of[q]: figures for q, figures in counted.items()}
            assert {k: body["totals"][k] for k in ("attempts", "connected", "abandoned", "answer_rate")} == \
                totals(counted)
        assert counted["q-overflow"]["attempts"] > 0 and all(v["abandoned"] for v in counted.values())
    finally:
        await asyncio.to_thread(metrics.process.stop)
