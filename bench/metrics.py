"""Benchmark metrics: events aggregated per second, beside the same run's raw batched hop, and the
latency of the secretariat's report queries over a year-sized history.

Runs on its own embedded broker and PostgreSQL (temp dir, free ports). Steps:

1. baseline — raw aiokafka batch consume → validate each event → one set-based
   ``INSERT … SELECT unnest(…) ON CONFLICT DO NOTHING`` → produce a derived record per event →
   await the acks → commit offsets (the hop docs/reference-host.md puts at ~25–28 k msg/s); timed before
   and after the live fold, the baseline being their mean;
2. metrics — the real service process, live (its empty topics caught up), fed the same canonical
   events on its four topics: time until every event is in its inbox, folded into the facts and
   rollups, and every caller's links derived — the live fold;
2b. rebuild — the same log already on a second topic prefix, the service started on an empty
   database: it folds the backlog into the facts only (catch-up), then, once caught up, derives every
   rollup from them in one pass (``rebuild.rebuild_rollups``) and goes live. Timed: the catch-up fold
   (events/s) and the caught-up detection + derive; the year estimate adds the derive of the history
   below (step 3) scaled linearly to 10 M contacts;
3. history — ``--history`` contacts spread over a year written straight into the facts tables (with
   consultations and referrals in proportion), the rollups and callers' links built from them
   (``rebuild.rebuild_rollups``), then each report query timed for the trial week and for the whole
   year (p50 / p99 of up to 25 runs within a time budget; a query slower than the budget runs once).

Usage: ``python bench/metrics.py [--events N] [--history N] [--skip-live] [--skip-rebuild]``. Defaults are small
(CI-sized); the year of the issue is ``--history 10000000`` (about 10 M contacts ≈ 70 M events).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scaffold import private_stack  # noqa: E402
from schemas import event_type, validate_event_json  # noqa: E402
from schemas.kafka import encode_value, kafka_key  # noqa: E402
from schemas.timezone import JST  # noqa: E402
from services.metrics import figures  # noqa: E402
from services.metrics.domain.counting import DIMENSIONS  # noqa: E402
from services.metrics.domain.periods import Period  # noqa: E402
from services.metrics.store import callers, gauges, reading, rebuild, schema  # noqa: E402
from tests.integration.metrics_support import publish, synthetic_log  # noqa: E402
from tests.support import ServiceProcess  # noqa: E402
from tsunagu import auth  # noqa: E402
from tsunagu.db import create_pool  # noqa: E402
from tsunagu.settings import Settings  # noqa: E402
from tsunagu_tools import stack  # noqa: E402

YEAR_START = datetime(2022, 4, 1, tzinfo=JST)
TRIAL_WEEK = Period(datetime(2022, 7, 7, 10, tzinfo=JST), datetime(2022, 7, 14, 10, tzinfo=JST), "trial1")
WHOLE_YEAR = Period(YEAR_START, YEAR_START + timedelta(days=365), "year")


def odd(p: Period) -> Period:
    """The period with edges inside days and in no named period: an arbitrary from–to."""
    return Period(p.start + timedelta(hours=3, minutes=17), p.end - timedelta(hours=1, minutes=19))


async def baseline_hop(bootstrap: str, dsn: str, values: list[tuple[bytes, bytes]], partitions: int,
                       run: int = 1) -> float:
    """Raw batched hop over the same records: consume → validate → one insert → produce → commit. Each
    ``run`` has its own topics, group and table."""
    admin_settings = Settings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, topic_prefix="bench.", partitions=partitions)
    from tsunagu.kafka import create_topics

    topic_in, topic_out, table = f"bench.base{run}.in", f"bench.base{run}.out", f"bench_inbox{run}"
    await create_topics(bootstrap, [topic_in, topic_out], admin_settings.partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=65536)
    await producer.start()
    futures = [await producer.send(topic_in, v, key=k) for k, v in values]
    await asyncio.gather(*futures)
    pool = await create_pool(dsn)
    await pool.execute(f"CREATE TABLE IF NOT EXISTS {table} (source text, id text, PRIMARY KEY (source, id))")
    consumer = AIOKafkaConsumer(topic_in, bootstrap_servers=bootstrap, group_id=f"bench-baseline{run}",
                                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    seen = 0
    t0 = None
    try:
        while seen < len(values):
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            t0 = t0 or time.perf_counter()
            events = [validate_event_json(r.value) for r in records]
            await pool.execute(
                f"INSERT INTO {table} SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
                [e.envelope.source for e in events], [e.envelope.id for e in events])
            sends = [await producer.send(topic_out, r.value, key=r.key) for r in records]
            await asyncio.gather(*sends)
            await consumer.commit()
            seen += len(records)
        return seen / (time.perf_counter() - (t0 or time.perf_counter()))
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU of a process (and of its reaped children), from /proc; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu(home: Path) -> float:
    """CPU of the private PostgreSQL: its postmaster, the backends it reaped and the live ones."""
    master = stack.postmaster_pid(home / "pgdata")
    if master is None:
        return float("nan")
    total = _cpu_seconds(master, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                    total += _cpu_seconds(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return total


async def metrics_rate(settings: Settings, log: list[dict], home: Path) -> tuple[float, float, float]:
    """(events/s, CPU seconds of the metrics process, of PostgreSQL) from the first publish to the last
    event in the inbox with every caller link derived (callers.derive_links)."""
    service = _service(settings, home).start()
    pool = await create_pool(settings.database_url or "", max_size=1)
    try:
        # live: the new schema caught up with its empty topics (the group has joined) and derived nothing
        while await pool.fetchval("SELECT mode FROM metrics.fold_mode") != "live":
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # let the consumer group settle before timing
        assert service.proc is not None
        cpu0, pg0 = _cpu_seconds(service.proc.pid), postgres_cpu(home)
        t0 = time.perf_counter()
        await publish(settings, log)
        while await pool.fetchval("SELECT count(*) FROM metrics.inbox") < len(log):
            await asyncio.sleep(0.05)
        while await callers.links_pending(pool):  # and the callers' links of the last batches derived
            await asyncio.sleep(0.05)
        rate = len(log) / (time.perf_counter() - t0)
        return rate, _cpu_seconds(service.proc.pid) - cpu0, postgres_cpu(home) - pg0
    finally:
        await pool.close()
        service.stop()


def _service(settings: Settings, home: Path, name: str = "metrics") -> ServiceProcess:
    env = {"DATABASE_URL": settings.database_url or "",
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
           "TSUNAGU_METRICS_PORT": str(settings.metrics_port), "TSUNAGU_LOG_LEVEL": "info",
           "TSUNAGU_TOPIC_PREFIX": settings.topic_prefix}
    return ServiceProcess("metrics", env, settings.metrics_port, home / f"{name}.log")


async def rebuild_rate(settings: Settings, log: list[dict], home: Path,
                       instances: int = 1) -> tuple[float, float, float, float]:
    """A rebuild: the log is on the topics before the service — ``instances`` processes in one group —
    starts on an empty schema. Returns (events/s of the catch-up fold — from the first committed chunk
    to the last event in the inbox —, seconds from then until live: caught-up detection + the derive,
    CPU seconds of the metrics processes and of PostgreSQL over both)."""
    await publish(settings, log)
    expected = len({(e["source"], e["id"]) for e in log})
    services = [_service(settings.model_copy(update={"metrics_port": stack.free_port()}), home, f"rebuild-{i}")
                for i in range(instances)]
    await asyncio.gather(*(asyncio.to_thread(s.start) for s in services))  # together, as a rollout would
    pool = await create_pool(settings.database_url or "", max_size=1)

    def cpu() -> float:
        return sum(_cpu_seconds(s.proc.pid) for s in services if s.proc is not None)

    try:
        cpu0, pg0 = cpu(), postgres_cpu(home)
        while (first := await pool.fetchval("SELECT count(*) FROM metrics.inbox")) == 0:
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        while await pool.fetchval("SELECT count(*) FROM metrics.inbox") < expected:
            await asyncio.sleep(0.05)
        t1 = time.perf_counter()
        while await pool.fetchval("SELECT mode FROM metrics.fold_mode") != "live":
            await asyncio.sleep(0.02)
        t2 = time.perf_counter()
        return (expected - first) / (t1 - t0), t2 - t1, cpu() - cpu0, postgres_cpu(home) - pg0
    finally:
        await pool.close()
        for service in services:
            service.stop()


HISTORY_SQL = """
INSERT INTO metrics.contacts (contact_id, received_at, received_tb, channel, caller_key, prefecture,
    chosen_at, chosen_tb, field, answered_at, answered_tb, wait_seconds, desk_id, organisation_id,
    abandoned_at, abandoned_tb, abandon_stage, abandon_wait, ended_at, ended_tb, talk_seconds)
SELECT 'h' || g, t, 'x', CASE WHEN g % 20 = 0 THEN 'chat' ELSE 'phone' END,
       -- a quarter of the calls from 2,000 frequent callers (about every other day each at 2 M contacts),
       -- the rest from callers who call twice, half a year apart; a chat account's key is not a phone's
       CASE WHEN g % 20 = 0 THEN md5('chat' || (g / 4 % 2000)) || md5('chat' || (g / 4 % 2000) || 'k')
            WHEN g % 4 = 0 THEN md5('f' || (g / 4 % 2000)) || md5('f' || (g / 4 % 2000) || 'k')
            ELSE md5((g % ($1 / 2))::text) || md5((g % ($1 / 2))::text || 'k') END,
       lpad((1 + g % 47)::text, 2, '0'),
       t + interval '20 seconds', 'x', (ARRAY['loneliness','suicidal','hardship','women_dv','under18','gender',
       'single_mother','foreign_language'])[1 + g % 8],
       CASE WHEN ans THEN t + interval '60 seconds' END, CASE WHEN ans THEN 'x' END,
       CASE WHEN ans THEN (g % 120)::float8 END, CASE WHEN ans THEN 'desk-' || desk END,
       CASE WHEN ans THEN 'npo-' || (desk % 11) END,
       CASE WHEN NOT ans THEN t + interval '90 seconds' END, CASE WHEN NOT ans THEN 'x' END,
       CASE WHEN NOT ans THEN (CASE WHEN g % 9 = 0 THEN 'ivr' ELSE 'queue' END) END,
       CASE WHEN NOT ans THEN (g % 300)::float8 END,
       CASE WHEN ans THEN t + interval '20 minutes' END, CASE WHEN ans THEN 'x' END,
       CASE WHEN ans THEN (g % 1800)::float8 END
  FROM (SELECT g, $2::timestamptz + (g * (31536000.0 / $1)) * interval '1 second' AS t, g % 10 < 3 AS ans,
               -- a desk serves one field (g % 8) for one organisation, as in the desk directory
               g % 8 + 8 * (g / 8 % 5) AS desk
          FROM generate_series($3::bigint, $4::bigint) g) s
"""
CONSULTATIONS_SQL = """
INSERT INTO metrics.consultations
SELECT contact_id, answered_at + interval '30 minutes', 'x', organisation_id, desk_id, field,
       string_to_array((ARRAY['mental_health,living_money', 'no_place_to_talk', 'home_family,wanting_to_die'])
         [1 + abs(hashtext(contact_id)) % 3], ','),
       (ARRAY['age30s','age40s','age50s','age60s'])[1 + abs(hashtext(contact_id)) % 4],
       (ARRAY['none','low','medium','high'])[1 + abs(hashtext(contact_id)) % 4], false
  FROM metrics.contacts WHERE answered_at IS NOT NULL AND contact_id LIKE 'h%'
"""
REFERRALS_SQL = """
INSERT INTO metrics.referrals (referral_id, contact_id, requested_at, requested_tb, organisation_id, municipality,
    urgency, state_at, state_rank, state_tb, state, receiver_at, receiver_tb, receiver_type, acknowledged_at)
SELECT 'r' || contact_id, contact_id, recorded_at + interval '1 minute', 'x', organisation_id, '131016', 'urgent',
       recorded_at + interval '1 day', 5, 'x', 'completed', recorded_at + interval '1 day', 'x', 'municipality',
       recorded_at + interval '10 minutes'
  FROM metrics.consultations WHERE risk = 'high' AND abs(hashtext(contact_id)) % 20 = 0
"""


def bench_log(events: int, start: datetime) -> list[dict]:
    """``events`` canonical events, 2,000 contacts a day from ``start``."""
    log: list[dict] = []
    seed = 1
    while len(log) < events:
        log += synthetic_log(2000, seed=seed, start=start + timedelta(days=seed - 1), span=timedelta(days=1))
        seed += 1
    return log[:events]


def _p(runs: list[float], q: float) -> float:
    ordered = sorted(runs)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


async def timed(query, budget_s: float = 8.0, most: int = 25) -> tuple[float, float, int]:
    """(p50 ms, p99 ms — nearest rank, so the slowest of fewer than 100 runs —, runs) within a budget
    (one run when the first is slower than the budget)."""
    runs: list[float] = []
    started = time.perf_counter()
    while not runs or (len(runs) < most and time.perf_counter() - started < budget_s):
        q0 = time.perf_counter()
        await query()
        runs.append((time.perf_counter() - q0) * 1000)
    return statistics.median(runs), _p(runs, 0.99), len(runs)


async def history_queries(dsn: str, contacts: int, whole_year: bool = True,
                          ) -> tuple[float, float, int, list[tuple[str, tuple, tuple | None]]]:
    """Write the history's facts, build the rollups from them, then time each report query."""
    pool = await create_pool(dsn, max_size=2)
    try:
        await schema.migrate_schema(pool)  # already there when the service ran
        await pool.execute("TRUNCATE metrics.contacts, metrics.consultations, metrics.referrals")
        t0 = time.perf_counter()
        step = 500_000
        for lo in range(1, contacts + 1, step):
            await pool.execute(HISTORY_SQL, contacts, YEAR_START, lo, min(lo + step - 1, contacts))
        await pool.execute(CONSULTATIONS_SQL)
        await pool.execute(REFERRALS_SQL)
        await pool.execute("ANALYZE metrics.contacts; ANALYZE metrics.consultations; ANALYZE metrics.referrals")
        loaded = time.perf_counter() - t0
        t0 = time.perf_counter()
        t1 = time.perf_counter()
        async with pool.acquire() as conn:
            await rebuild.rebuild_rollups(conn)  # every rollup and the callers' links: the derive
        derived = time.perf_counter() - t1
        await pool.execute("ANALYZE metrics.contact_rollup; ANALYZE metrics.contact_hist; "
                           "ANALYZE metrics.consultation_rollup; "
                           "ANALYZE metrics.caller_links; ANALYZE metrics.caller_rollup")
        rolled = time.perf_counter() - t0
        rollup_rows = await pool.fetchval(
            "SELECT (SELECT count(*) FROM metrics.contact_rollup) + (SELECT count(*) FROM metrics.contact_hist)"
            " + (SELECT count(*) FROM metrics.consultation_rollup)")
        caller_rows = await pool.fetchval("SELECT count(*) FROM metrics.caller_rollup")
        queries = {
            **{f"answer rate by {d or 'total'} (counts)": (
                lambda p, d=d: reading.contact_sums(pool, p, d, "phone", None)) for d in (None, *DIMENSIONS)},
            "per-caller rate (links)": lambda p: callers.distinct_callers(pool, p, None, "phone", None),
            "per-caller rate by field": lambda p: callers.distinct_callers(pool, p, "field", "phone", None),
            **{f"per-caller rate, odd from–to, by {d or 'total'} (links)": (
                lambda p, d=d: callers.distinct_callers(pool, odd(p), d, None if d == "channel" else "phone", None))
               for d in (None, "field", "organisation", "channel")},
            "per-caller rate, odd from–to, by day (links)": (
                lambda p: callers.distinct_callers(pool, odd(p), "day", "phone", None)),
            "per-caller rate, odd from–to, one partner by field (links)": (
                lambda p: callers.distinct_callers(pool, odd(p), "field", "phone", "npo-3")),
            **{f"per-caller rate, odd from–to, by {d} (links)": (
                lambda p, d=d: callers.distinct_callers(pool, odd(p), d, "phone", None))
               for d in ("desk", "prefecture", "hour")},
            "per-caller rate, odd from–to, one partner by desk (links)": (
                lambda p: callers.distinct_callers(pool, odd(p), "desk", "phone", "npo-3")),
            "per-caller rate, odd from–to, one partner by prefecture (facts)": (
                lambda p: callers.distinct_callers(pool, odd(p), "prefecture", "phone", "npo-3")),
            "per-caller rate, odd from–to, total, from the facts (before)": (
                lambda p: callers.callers_from_facts(pool, odd(p), None, "phone", None)),
            "answer rate by field, whole figure (HTTP/CLI)": lambda p: figures.answer_rate(pool, p, "field"),
            "answer rate by field, one partner's scope": (
                lambda p: figures.answer_rate(pool, p, "field", organisation="npo-3")),
            "waits and service level": lambda p: figures.waits(pool, p, None, [20, 60]),
            "waits by field": lambda p: figures.waits(pool, p, "field", [20, 60]),
            **{f"waits by {d}": (lambda p, d=d: figures.waits(pool, p, d, [20, 60]))
               for d in ("desk", "prefecture", "hour")},
            "waits by desk, from the facts (before)": (
                lambda p: reading.waits_from_facts(pool, p, "desk", [20, 60])),
            "consultations": lambda p: figures.consultations(pool, p, None),
            "consultations by age band": lambda p: figures.consultations(pool, p, "age_band"),
            "referrals by receiver": lambda p: figures.referrals(pool, p, "receiver_type"),
            "live gauges (ops)": lambda p: gauges.live_figures(pool),
        }
        out = []
        for name, query in queries.items():
            week = await timed(lambda q=query: q(TRIAL_WEEK))
            year = await timed(lambda q=query: q(WHOLE_YEAR), budget_s=20.0) if whole_year else None
            out.append((name, week, year))
        return loaded, rolled, derived, (rollup_rows, caller_rows), out
    finally:
        await pool.close()


async def main(args: argparse.Namespace) -> None:
    async with private_stack("metrics", args.partitions, "bench") as (settings, home):
        bootstrap, dsn = settings.kafka_bootstrap_servers, settings.database_url
        pool = await create_pool(dsn)
        await auth.migrate_schema(pool)
        await pool.close()

        log = bench_log(args.events, TRIAL_WEEK.start)
        records = [(kafka_key(e), encode_value(e)) for e in log]
        mean_bytes = sum(len(v) for _, v in records) / len(records)
        if not args.skip_service:
            baseline = hop_before = await baseline_hop(bootstrap, dsn, records, args.partitions)
            rate = cpu = pg_cpu = hop_after = float("nan")
            if not args.skip_live:  # the hop again after the fold: this machine's speed drifts within a run
                rate, cpu, pg_cpu = await metrics_rate(settings, log, home)
                hop_after = await baseline_hop(bootstrap, dsn, records, args.partitions, run=2)
                baseline = (hop_before + hop_after) / 2
            rebuild = settle = cpu_rb = pg_rb = float("nan")
            if not args.skip_rebuild:  # the same log replayed into an empty schema: fresh database and topics
                dsn3 = await stack.ensure_database(dsn or "", "bench_rebuild")
                settings3 = Settings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, DATABASE_URL=dsn3, partitions=args.partitions,
                                     topic_prefix="rebuild.", log_level="warning", metrics_port=stack.free_port())
                await stack.create_stack_topics(settings3, bootstrap or "")
                pool = await create_pool(dsn3)
                await auth.migrate_schema(pool)
                await pool.close()
                rebuild, settle, cpu_rb, pg_rb = await rebuild_rate(settings3, log, home, args.rebuild_instances)
        if args.skip_service:
            baseline = hop_before = hop_after = rate = cpu = pg_cpu = float("nan")
            rebuild = settle = cpu_rb = pg_rb = float("nan")
        loaded = rolled = derived = float("nan")
        if args.history:
            loaded, rolled, derived, rollup_rows, timings = await history_queries(dsn, args.history, not args.skip_year)

        print(f"\nmetrics benchmark — {len(log):,} canonical events (~{mean_bytes:.0f} bytes, "
              f"{len({event_type(e['type']).topic for e in log})} topics), {args.partitions} partitions; "
              f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"load {os.getloadavg()[0]:.1f}")
        print(f"{'path':70} {'events/s':>10} {'× baseline':>11}")
        print(f"{'raw batched hop (consume → validate → insert → produce), same run':70} {baseline:10,.0f} {1:11.2f}")
        if hop_after == hop_after:  # timed twice: the baseline is their mean
            print(f"{'  (before the live fold / after it)':70} {hop_before:10,.0f} {hop_after:11,.0f}")
        print(f"{'metrics live fold (consume → inbox → facts + rollups by deltas + links)':70} {rate:10,.0f} "
              f"{rate / baseline:11.2f}")
        print(f"CPU seconds of the live fold, metrics process + PostgreSQL: {cpu:.1f} + {pg_cpu:.1f}")
        print(f"{f'rebuild: catch-up fold of the same log, {args.rebuild_instances} instance(s) (facts only)':70} "
              f"{rebuild:10,.0f} "
              f"{rebuild / baseline:11.2f}")
        print(f"  then caught up (offsets) and every rollup derived from the facts: {settle:.1f} s; CPU seconds, "
              f"metrics process + PostgreSQL, catch-up fold + derive: {cpu_rb:.1f} + {pg_rb:.1f}")
        print(f"year by the live fold (70 M events) at this rate: {70e6 / rate / 3600:.2f} h on one instance")
        derive_year = derived * 10e6 / args.history if args.history else float("nan")
        rebuild_year = 70e6 / rebuild + derive_year
        print(f"year by the rebuild path: catch-up fold {70e6 / rebuild / 3600:.2f} h + derive "
              f"{derive_year / 3600:.2f} h (history's derive {derived:.1f} s for {args.history:,} contacts, "
              f"scaled to 10 M) = {rebuild_year / 3600:.2f} h on one instance — under an hour: "
              f"{'met' if rebuild_year < 3600 else 'not met'} (the fold alone needs ≥ 19,444 events/s for 1 h)")
        if derive_year < 3600:  # absolute rates follow the machine's load; the ratio to the hop does not
            print(f"  at these ratios, under an hour wherever the raw hop runs at ≥ "
                  f"{70e6 / (rebuild / baseline) / (3600 - derive_year):,.0f} events/s (with this run's derive)")
        if not args.history:
            return
        print(f"\nhistory: {args.history:,} contacts over a year: facts written in {loaded:.1f} s, rollups built "
              f"from them in {rolled:.1f} s (of which the derive, rebuild.rebuild_rollups, {derived:.1f} s; "
              f"{rollup_rows[0]:,} rollup rows, {rollup_rows[1]:,} caller rollup rows); report queries, ms "
              "(p50 / p99 nearest rank, so the slowest of n < 100 runs):")
        print(f"{'query':62} {'trial week p50/p99 (n)':>24} {'whole year p50/p99 (n)':>24}")
        for name, week, year in timings:
            cell = lambda t: "-" if t is None else f"{t[0]:.1f} / {t[1]:.1f} ({t[2]})"  # noqa: E731
            print(f"{name:62} {cell(week):>24} {cell(year):>24}")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000, help="canonical events through the service")
    parser.add_argument("--history", type=int, default=300_000,
                        help="contacts in the year-sized history (0: no history queries)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--skip-service", action="store_true", help="only the history queries")
    parser.add_argument("--skip-live", action="store_true", help="do not time the live fold (the hop and rebuild only)")
    parser.add_argument("--skip-rebuild", action="store_true",
                        help="do not time the rebuild path (catch-up fold + derive)")
    parser.add_argument("--rebuild-instances", type=int, default=1,
                        help="metrics processes in the rebuild's consumer group")
    parser.add_argument("--skip-year", action="store_true", help="time the trial week only (big histories)")
    asyncio.run(main(parser.parse_args()))
