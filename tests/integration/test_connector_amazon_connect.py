"""The Amazon Connect connector against the real intake and metrics: contact records in, the secretariat's
per-queue figures out, equal to a count made straight from the raw records; re-sending stores nothing new;
no phone number reaches any topic."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.integration.amazon_connect_support import counts_from_raw, generated_ctrs, mapping_doc, write_files
from tests.integration.metrics_support import by_key, start_metrics
from tests.support import read_topic, values
from tsunagu import topics
from tsunagu_connectors import amazon_connect as ac

pytestmark = pytest.mark.integration

SAMPLES = Path(ac.__file__).parent / "samples" / "amazon_connect"
DAY = {"from": "2022-07-07", "to": "2022-07-07"}


def import_ctrs(intake, paths: list[Path], config: Path) -> str:
    """``tsunagu connect amazon-connect import`` as a partner runs it, with npo-a's key in the environment."""
    result = CliRunner().invoke(ac.app, ["import", *map(str, paths), "--config", str(config),
                                         "--partner", "npo-a", "--intake-url", intake.url],
                                env={"TSUNAGU_API_KEY": intake.keys["npo-a"]})
    assert result.exit_code == 0, result.output
    return result.output


def raw_records(paths: list[Path]) -> list[dict]:
    """The records of the files, read with the standard library alone (not the connector's reader)."""
    out: list[dict] = []
    for path in paths:
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode()
        if text.lstrip().startswith("["):
            out += json.loads(text)
            continue
        decoder, at = json.JSONDecoder(), 0
        while rest := text[at:].lstrip():
            record, at = decoder.raw_decode(text, len(text) - len(rest))
            out.append(record)
    return out


async def assert_no_phone_number_on_any_topic(intake, numbers: set[str]) -> None:
    """None of the callers' numbers, in any writing (E.164 or its national digits), on any topic."""
    assert numbers
    national = {n.removeprefix("+81") for n in numbers}
    seen = 0
    for short in topics.ALL:
        for record in await read_topic(intake.bootstrap, intake.topic(short), expect=0, timeout=1):
            seen += 1
            text = record.value.decode("utf-8", "replace") + (record.key or b"").decode("utf-8", "replace")
            headers = "".join(v.decode("utf-8", "replace") for _, v in record.headers or ())
            assert not [n for n in national if n in text + headers], f"a caller's number on {short}"
    assert seen


async def assert_metrics_equal_the_raw_count(metrics, records: list[dict], field_of_queue: dict[str, str]) -> None:
    expected = counts_from_raw(records, field_of_queue)
    body = (await metrics.get("/v1/metrics/answer-rate", group_by="field", **DAY)).json()
    groups = by_key(body["groups"])
    reported = {"total": body["totals"], **groups}
    assert set(reported) == set(expected)
    for key, counts in expected.items():
        got = reported[key]
        assert (got["attempts"], got["connected"], got["abandoned"]) == (
            counts["attempts"], counts["connected"], counts["abandoned"]), key
        assert got["answer_rate"] == round(counts["connected"] / counts["attempts"], 6), key


async def test_the_documented_sample_reaches_metrics_as_counted_from_the_raw_records(intake, tmp_path):
    output = await asyncio.to_thread(import_ctrs, intake, [SAMPLES], SAMPLES / "mapping.yaml")
    assert "22 accepted, 0 duplicate" in output
    canonical = values(await read_topic(intake.bootstrap, intake.topic(topics.CONTACT_EVENTS), expect=22))
    assert len(canonical) == 22 and {e["source"] for e in canonical} == {"/partners/npo-a/amazon-connect"}
    again = await asyncio.to_thread(import_ctrs, intake, [SAMPLES], SAMPLES / "mapping.yaml")
    assert "0 accepted, 22 duplicate" in again
    sample = raw_records([SAMPLES / "ctr-firehose-2022-07-07"])
    await assert_no_phone_number_on_any_topic(
        intake, {r["CustomerEndpoint"]["Address"] for r in sample if r["CustomerEndpoint"]})

    metrics = await asyncio.to_thread(start_metrics, intake.settings, intake.keys, tmp_path / "metrics.log")
    try:
        await metrics.wait_until_consumed(22)
        field_of_queue = {q: d["field"] for q, d in yaml.safe_load((SAMPLES / "mapping.yaml").read_text())[
            "queues"].items()}
        await assert_metrics_equal_the_raw_count(metrics, sample, field_of_queue)
        totals = (await metrics.get("/v1/metrics/answer-rate", **DAY)).json()["totals"]
        assert (totals["attempts"], totals["connected"]) == (5, 3)  # as the sample's README says
    finally:
        await asyncio.to_thread(metrics.process.stop)


async def test_a_generated_day_of_thousands_of_records_reaches_metrics_exactly(intake, tmp_path):
    records = generated_ctrs(2500, seed=17)
    methods = Counter(r["InitiationMethod"] for r in records)  # every kind of segment the rules speak of
    assert len(records) > 2800 and min(methods[m] for m in ("API", "QUEUE_TRANSFER", "TRANSFER", "OUTBOUND")) > 50
    paths = write_files(records, tmp_path / "ctr")
    config = tmp_path / "mapping.yaml"
    config.write_text(yaml.safe_dump(mapping_doc(), allow_unicode=True))
    output = await asyncio.to_thread(import_ctrs, intake, [tmp_path / "ctr"], config)
    sent = int(output.split(" events")[0].rsplit(", ", 1)[1])
    assert f"{sent} accepted, 0 duplicate, 0 rejected, 0 conflict" in output
    again = await asyncio.to_thread(import_ctrs, intake, paths[::-1], config)  # same files, other order
    assert f"0 accepted, {sent} duplicate" in again
    await assert_no_phone_number_on_any_topic(
        intake, {r["CustomerEndpoint"]["Address"] for r in records if r["CustomerEndpoint"]})

    metrics = await asyncio.to_thread(start_metrics, intake.settings, intake.keys, tmp_path / "metrics.log")
    try:
        await metrics.wait_until_consumed(sent, timeout=240)
        assert raw_records(paths) == records  # the files hold exactly the generated records
        await assert_metrics_equal_the_raw_count(
            metrics, records, {q: d["field"] for q, d in mapping_doc()["queues"].items()})
    finally:
        await asyncio.to_thread(metrics.process.stop)
