"""A rebuild in catch-up mode: facts only while replaying the backlog, the rollups derived once the
topics are caught up, then live deltas — the same figures as folding live all along, through a SIGKILL
mid-catch-up, a failed derive, and late events and duplicates after the switch."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from services.metrics.domain.facts import fold
from services.metrics.handlers import Prepared, apply_events, apply_prepared, unique_events
from services.metrics.store import fold_mode
from services.metrics.store.facts import fact_rows
from services.metrics.store.schema import migrate_schema
from tests.integration.metrics_support import (
    answers,
    issue_keys,
    publish,
    rollup_rows,
    start_metrics,
    synthetic_log,
    validated,
)
from tests.integration.rollups_support import LOG, every_figure, fresh_schema
from tsunagu.db import create_pool
from tsunagu_tools import stack

pytestmark = pytest.mark.integration

LATE_TYPES = ("contact.answered", "contact.ended", "consultation.recorded", "referral.completed")


async def catch_up(pool, log, batches: int, rnd: random.Random) -> None:
    cuts = sorted(rnd.sample(range(1, len(log)), k=batches - 1))
    for a, b in zip([0, *cuts], [*cuts, len(log)], strict=True):
        unique = unique_events(log[a:b])
        async with pool.acquire() as conn, conn.transaction():
            assert not await fold_mode.live_for_batch(conn)
            await apply_prepared(conn, Prepared(unique, fact_rows(fold(unique))), rollups=False)


async def test_a_catch_up_then_one_derive_gives_the_live_rollups_and_a_failed_derive_leaves_them_stale(
        pool, monkeypatch):
    rnd = random.Random(8)
    late = [e for e in LOG if e.envelope.type.split(".", 2)[-1].rsplit(".", 1)[0] in LATE_TYPES
            and rnd.random() < 0.3]
    held_back = {e.envelope.id for e in late}
    first = [e for e in LOG if e.envelope.id not in held_back]
    sent = first + rnd.sample(first, 200)
    rnd.shuffle(sent)
    after = late + rnd.sample(first, 100)
    rnd.shuffle(after)

    await fresh_schema(pool)  # folded live all along
    async with pool.acquire() as conn, conn.transaction():
        await apply_events(conn, sent)
        await apply_events(conn, after)
    reference, reference_figures = await rollup_rows(pool), await every_figure(pool)

    await fresh_schema(pool)
    assert not await fold_mode.is_live(pool)  # a new schema starts in catch-up
    await catch_up(pool, sent, 7, rnd)
    assert not any((await rollup_rows(pool)).values())  # facts only

    real = fold_mode.rebuild_rollups

    async def killed_midway(conn):
        await real(conn)
        raise ConnectionResetError("killed during the derive")

    monkeypatch.setattr(fold_mode, "rebuild_rollups", killed_midway)
    with pytest.raises(ConnectionResetError):
        await fold_mode.derive_and_go_live(pool)
    assert not await fold_mode.is_live(pool)  # rolled back together: still catching up, rollups stale
    assert not any((await rollup_rows(pool)).values())
    monkeypatch.setattr(fold_mode, "rebuild_rollups", real)

    assert await fold_mode.derive_and_go_live(pool)
    assert not await fold_mode.derive_and_go_live(pool)  # once
    async with pool.acquire() as conn, conn.transaction():
        assert await fold_mode.live_for_batch(conn)
        await apply_events(conn, after)  # late events and duplicates after the switch, live
    assert await rollup_rows(pool) == reference
    assert await every_figure(pool) == reference_figures


async def test_an_existing_schema_with_facts_stays_live_when_the_catch_up_mode_arrives(pool):
    await fresh_schema(pool)
    async with pool.acquire() as conn, conn.transaction():
        await apply_events(conn, LOG[:300])
        await conn.execute("DROP TABLE metrics.fold_mode")  # as before migration 005
        await conn.execute("DELETE FROM metrics.schema_migrations WHERE name = '005_catch_up.sql'")
    await migrate_schema(pool)
    assert await fold_mode.is_live(pool)


def split_late(log, rnd):
    """(the log less some contacts' later events, those late events) — the late ones published after
    the rebuild has switched to live."""
    late = [e for e in log if e["type"].split(".", 2)[-1].rsplit(".", 1)[0] in LATE_TYPES and rnd.random() < 0.3]
    ids = {e["id"] for e in late}
    return [e for e in log if e["id"] not in ids], late


async def test_a_rebuild_into_an_empty_schema_with_a_new_group_gives_the_live_figures(
        settings, make_settings, create_all_topics, postgres_server_dsn, tmp_path):
    from typer.testing import CliRunner

    from tsunagu_tools.cli import app

    await create_all_topics(settings)
    rnd = random.Random(41)
    log = synthetic_log(4000, seed=41)
    first, late = split_late(log, rnd)
    before = first + rnd.sample(first, 500)  # duplicates, out of order
    rnd.shuffle(before)
    after = late + rnd.sample(first, 300)
    rnd.shuffle(after)

    # the reference: live since the topics were empty
    reference = await asyncio.to_thread(start_metrics, settings, await issue_keys(settings),
                                        tmp_path / "reference.log")
    # the rebuild: its own, empty database, a new consumer group, the same topics
    name = f"t_{uuid.uuid4().hex[:16]}"
    rebuild_settings = make_settings(database_url=await stack.ensure_database(postgres_server_dsn, name))
    rebuild_env = {"TSUNAGU_METRICS_CONSUMER_GROUP": "metrics-rebuild"}
    rebuilt = None
    try:
        await reference.wait_until_consumed(0)
        await publish(settings, before)
        await reference.wait_until_consumed(len(first), timeout=120)

        rebuilt = await asyncio.to_thread(start_metrics, rebuild_settings, await issue_keys(rebuild_settings),
                                          tmp_path / "rebuild.log", **rebuild_env)
        while (seen := await rebuilt.consumed()) < len(first) // 4:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(rebuilt.process.kill)  # SIGKILL mid-catch-up
        assert seen < len(first), "killed too late to be mid-catch-up"
        assert await rebuilt.mode() == "catch_up"
        dsn = rebuild_settings.database_url
        held = await create_pool(dsn, max_size=1)
        try:
            assert not any((await rollup_rows(held)).values())  # stale: never derived
            # hold the mode: the restarted process can fold nothing and derive nothing meanwhile
            async with held.acquire() as conn, conn.transaction():
                await conn.execute("SELECT mode FROM metrics.fold_mode FOR UPDATE")
                await asyncio.to_thread(rebuilt.process.start)
                ready = (await rebuilt.get("/health/ready")).json()
                assert ready["status"] == "rebuilding" and ready["figures"].startswith("rebuilding")
                refused = await rebuilt.get("/v1/metrics/answer-rate", period="trial1")
                assert refused.status_code == 503
                assert "rebuilding" in refused.json()["detail"] and int(refused.headers["retry-after"]) > 0
                report = await asyncio.to_thread(
                    CliRunner().invoke, app, ["report", "--period", "trial1", "--json"],
                    env={"DATABASE_URL": dsn, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers})
                assert report.exit_code == 3 and "rebuilding" in report.output
        finally:
            await held.close()
        await rebuilt.wait_until_consumed(len(first), timeout=120)
        assert (await rebuilt.get("/health/ready")).json()["status"] == "ready"

        await publish(settings, after)  # late events and duplicates, after the switch
        await reference.wait_until_consumed(len(log), timeout=120)
        await rebuilt.wait_until_consumed(len(log), timeout=120)
        assert await rebuilt.consumed() == len(log)
        want = await answers(reference)
        assert await answers(rebuilt) == want
        for who in ("npo-a", "npo-b"):
            assert await answers(rebuilt, who) == await answers(reference, who)
        pools = [await create_pool(s.database_url, max_size=1) for s in (settings, rebuild_settings)]
        try:
            assert await rollup_rows(pools[1]) == await rollup_rows(pools[0])
        finally:
            for p in pools:
                await p.close()
    finally:
        await asyncio.to_thread(reference.process.stop)
        if rebuilt is not None:
            await asyncio.to_thread(rebuilt.process.stop)
        await stack.drop_database(postgres_server_dsn, name)


async def test_two_instances_rebuild_together_into_the_figures_of_one_fold(
        pool, make_settings, create_all_topics, postgres_server_dsn, tmp_path):
    """Two processes in the rebuild's group share the backlog's partitions (both are seen folding),
    the switch to live happens once for both, and the rollups equal folding the whole log at once."""
    rnd = random.Random(47)
    log = synthetic_log(2500, seed=47)
    first, late = split_late(log, rnd)
    before = first + rnd.sample(first, 300)
    rnd.shuffle(before)
    await fresh_schema(pool)  # the reference: the whole log folded in one transaction
    async with pool.acquire() as conn, conn.transaction():
        await apply_events(conn, validated(log))

    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = await stack.ensure_database(postgres_server_dsn, name)
    one = make_settings(database_url=dsn)
    await create_all_topics(one)
    await publish(one, before)  # the backlog, on the topics before either process starts
    keys = await issue_keys(one)
    held = await create_pool(dsn, max_size=2)
    await migrate_schema(held)  # a new schema: catch-up
    instances = []
    try:
        async with held.acquire() as conn, conn.transaction():
            # hold the mode: each process's batches wait on it, so both are seen with a batch in hand
            await conn.execute("SELECT mode FROM metrics.fold_mode FOR UPDATE")
            for tag in ("a", "b"):  # each process's connections named, to be told apart
                named = f"{dsn}{'&' if '?' in dsn else '?'}application_name=rebuild-{tag}"
                settings = make_settings(database_url=named, topic_prefix=one.topic_prefix)
                instances.append(await asyncio.to_thread(
                    start_metrics, settings, keys, tmp_path / f"rebuild-{tag}.log",
                    TSUNAGU_METRICS_CONSUMER_GROUP="metrics-rebuild-two"))
            waiting: set[str] = set()
            for _ in range(600):
                waiting |= {r["application_name"] for r in await held.fetch(
                    "SELECT application_name FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name LIKE 'rebuild-%'")}
                if waiting == {"rebuild-a", "rebuild-b"}:
                    break
                await asyncio.sleep(0.1)
            assert waiting == {"rebuild-a", "rebuild-b"}, "both processes should hold a batch of the backlog"
        await instances[0].wait_until_consumed(len(first), timeout=180)
        await publish(one, late + rnd.sample(first, 100))  # late events and duplicates, live
        await instances[1].wait_until_consumed(len(log), timeout=120)
        assert await instances[0].consumed() == len(log)
        assert await rollup_rows(held) == await rollup_rows(pool)
        assert (await instances[0].get("/v1/metrics/answer-rate", period="trial1", group_by="field")).json() == (
            await instances[1].get("/v1/metrics/answer-rate", period="trial1", group_by="field")).json()
    finally:
        for running in instances:
            await asyncio.to_thread(running.process.stop)
        await held.close()
        await stack.drop_database(postgres_server_dsn, name)
