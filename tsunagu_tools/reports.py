"""``tsunagu report`` and ``tsunagu plan``: the secretariat's period report and capacity plan (phone
lines, and chat/SNS seats holding several conversations each).

Both read the metrics schema directly (DATABASE_URL, else the running local stack's PostgreSQL)
through ``services.metrics.reports``, built on the figure functions the HTTP API uses, so they work
even when the metrics service is stopped, and always agree with the API.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime
from typing import Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from schemas.codes import FieldCode
from services.metrics import catchup, reports
from services.metrics.domain.counting import NO_FIELD
from services.metrics.domain.periods import Period, PeriodError, resolve_period
from services.metrics.periods_file import periods_of
from services.metrics.settings import MetricsSettings
from services.metrics.store.fold_mode import is_live
from tsunagu.db import create_pool
from tsunagu.settings import get_settings
from tsunagu_tools import stack
from tsunagu_tools.database import database_url

console = Console()
err_console = Console(stderr=True)

PeriodOpt = Annotated[str | None, typer.Option("--period", "-p", help="a named period, e.g. trial1")]
FromOpt = Annotated[str | None, typer.Option("--from", help="start (RFC 3339 or a date, JST)")]
ToOpt = Annotated[str | None, typer.Option("--to", help="end, exclusive (RFC 3339, or a date: its end)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for machines")]


def _database_url() -> str:
    try:
        return database_url()
    except stack.StackError as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None


async def _rebuilding(dsn: str) -> bool:
    """Whether metrics is catching up with a backlog (its figures not final yet)."""
    pool = await create_pool(dsn, max_size=1)
    try:
        return not await is_live(pool)
    except asyncpg.UndefinedTableError:  # metrics has not migrated this schema yet: nothing to say
        return False
    finally:
        await pool.close()


def _refuse_while_rebuilding(dsn: str) -> None:
    if asyncio.run(_rebuilding(dsn)):
        err_console.print(f"[yellow]metrics is {catchup.REBUILDING}[/yellow]")
        raise typer.Exit(3)


def _period(period: str | None, start: str | None, end: str | None) -> Period:
    try:
        return resolve_period(periods_of(get_settings(MetricsSettings)), period, start, end)
    except PeriodError as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


async def period_report(dsn: str, period: Period) -> dict[str, Any]:
    """``reports.period_report`` on a pool of its own."""
    pool = await create_pool(dsn, max_size=2)
    try:
        return await reports.period_report(pool, period)
    finally:
        await pool.close()


def print_report(report: dict[str, Any]) -> None:
    p = report["period"]
    ar = report["answer_rate"]
    t = ar["totals"]
    console.rule(f"実施結果 / results  {p['name'] or ''}  {p['from']} → {p['to']}")
    head = Table(show_header=False, box=None)
    head.add_row("呼出件数 / call attempts", f"{t.get('attempts', 0):,}")
    head.add_row("接続完了 / connected", f"{t.get('connected', 0):,}")
    head.add_row("応答率 / answer rate", _pct(t.get("answer_rate")))
    head.add_row("放棄（音声ガイダンス中 / 待ち行列）/ abandoned (menu / queue)",
                 f"{t.get('abandoned_ivr', 0):,} / {t.get('abandoned_queue', 0):,}")
    head.add_row("発信者あたり応答率 / per-caller rate",
                 f"{_pct(t.get('caller_rate'))}  ({t.get('callers_connected', 0):,} / {t.get('callers', 0):,})")
    console.print(head)

    ranked = sorted(ar["groups"], key=lambda g: (g["key"] is None, -g["attempts"], str(g["key"])))
    table = Table(title="分野別の応答率（選択の多い順）/ answer rate by field, most chosen first")
    table.add_column("順位", justify="right")
    table.add_column("相談分野", no_wrap=True)
    table.add_column("field")
    for col in ("呼出件数 attempts", "接続完了 connected", "応答率 rate"):
        table.add_column(col, justify="right")
    for i, g in enumerate(ranked, 1):
        label = g["label"] if g["key"] is not None else NO_FIELD
        table.add_row(str(i) if g["key"] is not None else "-", label["ja"], label["en"],
                      f"{g['attempts']:,}", f"{g['connected']:,}", _pct(g["answer_rate"]))
    console.print(table)

    w = report["waits"]["totals"]
    waits = Table(title="待ち時間 / waits", show_header=False)
    waits.add_row("応答までの待ち（中央値・90%）/ wait to answer (median, p90)",
                  f"{_secs(w.get('wait_p50'))} / {_secs(w.get('wait_p90'))}")
    waits.add_row("20秒以内の応答 / answered within 20 s (of attempts)", _pct(w.get("service_level_20s")))
    waits.add_row("60秒以内の応答 / answered within 60 s (of attempts)", _pct(w.get("service_level_60s")))
    waits.add_row("通話時間（平均）/ talk time (mean)", _secs(w.get("talk_mean")))
    console.print(waits)

    r = report["referrals"]["totals"]
    console.print(f"つないだ深刻なケース / serious cases handed on: [bold]{r.get('contacts', 0):,}[/bold] "
                  f"(referrals {r.get('referrals', 0):,}, acknowledged {r.get('acknowledged', 0):,}, "
                  f"escalated {r.get('escalated', 0):,})")

    c = report["consultations"]["totals"]
    ages = Table(title=f"推定年代 / estimated age band ({c.get('consultations', 0):,} consultations)")
    ages.add_column("年代", no_wrap=True)
    ages.add_column("age band")
    ages.add_column("件数 count", justify="right")
    ages.add_column("割合 share", justify="right")
    for a in c.get("age_bands", []):
        ages.add_row(a["ja"], a["en"], f"{a['count']:,}", _pct(a["share"]))
    console.print(ages)
    cats = Table(title="相談内容（多い順）/ consultation types, most frequent first")
    cats.add_column("順位 rank", justify="right")
    cats.add_column("相談内容", no_wrap=True)
    cats.add_column("type")
    cats.add_column("件数 count", justify="right")
    for i, cat in enumerate(c.get("categories", []), 1):
        cats.add_row(str(i), cat["ja"], cat["en"], f"{cat['count']:,}")
    console.print(cats)


def report(period: PeriodOpt = None, start: FromOpt = None, to: ToOpt = None, as_json: JsonOpt = False) -> None:
    """The period report, laid out like the government's summary (Japanese labels beside English)."""
    p = _period(period, start, to)
    dsn = _database_url()
    _refuse_while_rebuilding(dsn)
    result = asyncio.run(period_report(dsn, p))
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2, default=_json_default))
    else:
        print_report(result)


# --- plan -------------------------------------------------------------------------------------


async def capacity_plan(dsn: str, period: Period, target: float, lines: dict[str, int],
                        aim: reports.SeatAim | None = None, seats: dict[str, int] | None = None) -> dict[str, Any]:
    """``reports.capacity_plan`` on a pool of its own."""
    pool = await create_pool(dsn, max_size=2)
    try:
        return await reports.capacity_plan(pool, period, target, lines, aim, seats)
    finally:
        await pool.close()


async def seat_plan(dsn: str, period: Period, aim: reports.SeatAim, seats: dict[str, int]) -> dict[str, Any]:
    """``reports.seat_plan`` on a pool of its own."""
    pool = await create_pool(dsn, max_size=2)
    try:
        return await reports.seat_plan(pool, period, aim, seats)
    finally:
        await pool.close()


def _parse_counts(spec: list[str], option: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in spec:
        field, _, n = item.partition("=")
        try:
            FieldCode[field]  # codes are the members' names
            out[field] = int(n)
        except (KeyError, ValueError):
            err_console.print(f"[red]{option} takes field=count, e.g. loneliness=3 (got {item[:40]!r})[/red]")
            raise typer.Exit(2) from None
    return out


def _parse_lines(spec: list[str]) -> dict[str, int]:
    return _parse_counts(spec, "--lines")


CHANNELS = ("phone", *reports.TEXT_CHANNELS)


def _channels(given: list[str] | None) -> tuple[bool, tuple[str, ...]]:
    """(phone asked, the text channels asked); phone alone by default."""
    chosen = given or ["phone"]
    wrong = [c for c in chosen if c not in CHANNELS]
    if wrong:
        err_console.print(f"[red]--channel is one of {', '.join(CHANNELS)} (got {wrong[0][:20]!r})[/red]")
        raise typer.Exit(2)
    return "phone" in chosen, tuple(c for c in reports.TEXT_CHANNELS if c in chosen)


def plan(
    period: PeriodOpt = None, start: FromOpt = None, to: ToOpt = None,
    target: Annotated[float, typer.Option(help="the share to reach, e.g. 0.8: answered (phone), first "
                                          "response within --within (chat/SNS)", min=0.01, max=0.99)] = 0.8,
    lines: Annotated[list[str] | None, typer.Option("--lines", help="current lines of a field, field=count "
                                                     "(repeatable); default: the observed peak")] = None,
    channel: Annotated[list[str] | None, typer.Option(
        "--channel", help="phone (lines), chat, sns (seats); repeatable: chat and sns together plan the seats "
                          "that take both")] = None,
    per_seat: Annotated[int, typer.Option("--per-seat", help="conversations a chat/SNS seat holds at once",
                                          min=1, max=20)] = 3,
    within: Annotated[float, typer.Option("--within", help="chat/SNS: seconds from arrival to the first "
                                          "response", min=1)] = 300.0,
    slowdown: Annotated[float, typer.Option(
        "--slowdown", help="chat/SNS: α in μ(k) = μ1·k^-α, a conversation's pace when a seat holds k "
                           "(0: independent slots, 1: a counsellor's attention shared)", min=0.0, max=1.0)] = 0.0,
    seats: Annotated[list[str] | None, typer.Option("--seats", help="current chat/SNS seats of a field, "
                                                     "field=count (repeatable); default: the observed peak of "
                                                     "conversations at once / --per-seat")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per field and hour of day: phone lines Erlang-A needs for the target answer rate, and the rate the
    current lines predict; with --channel chat/sns, the seats (each holding --per-seat conversations)
    needed for the target share of first responses within --within seconds, and the share the current
    seats predict."""
    p = _period(period, start, to)
    phone, text = _channels(channel)
    aim = reports.SeatAim(text, per_seat, within, target, slowdown) if text else None
    dsn = _database_url()
    _refuse_while_rebuilding(dsn)
    given_lines, given_seats = _parse_lines(lines or []), _parse_counts(seats or [], "--seats")
    if phone:
        result = asyncio.run(capacity_plan(dsn, p, target, given_lines, aim, given_seats))
    else:
        assert aim is not None
        result = {"seats": asyncio.run(seat_plan(dsn, p, aim, given_seats))}
    if as_json:
        print(json.dumps(result if phone else result["seats"], ensure_ascii=False, indent=2, default=_json_default))
        return
    if phone:
        print_lines_plan(result, p, target)
    if aim is not None:
        print_seat_plan(result["seats"], p, aim)


def _when(p: Period) -> str:
    return f"{p.name or ''} {p.start.isoformat()} → {p.end.isoformat()}"


def print_lines_plan(result: dict[str, Any], p: Period, target: float) -> None:
    console.rule(f"必要回線数 / lines needed for {target:.0%}  {_when(p)}")
    for f, info in result["fields"].items():
        label = FieldCode[f]
        table = Table(title=f"{label.ja} ({label.en}) — talk {_secs(info['talk_mean_seconds'])}, "
                            f"patience {_secs(info['patience_mean_seconds'])}, current lines {info['current_lines']} "
                            f"({info['current_lines_source']})")
        columns = ("時 hour", "呼出/時 calls/h", "実績応答率 observed", "予測応答率 predicted", "必要回線 lines needed")
        for col in columns:
            table.add_column(col, justify="right")
        for r in (r for r in result["hours"] if r["field"] == f):
            table.add_row(f"{r['hour']:02d}", f"{r['arrivals_per_hour']:.1f}", _pct(r["observed_rate"]),
                          _pct(r["predicted_rate"]), "-" if r["lines_needed"] is None else str(r["lines_needed"]))
        console.print(table)


def print_seat_plan(result: dict[str, Any], p: Period, aim: reports.SeatAim) -> None:
    within = f"{aim.within_s:.0f} s"
    console.rule(f"必要席数 / seats needed ({' + '.join(aim.channels)}, {aim.per_seat} conversations a seat) "
                 f"for {aim.target:.0%} first responses within {within}  {_when(p)}")
    for f, info in result["fields"].items():
        label = FieldCode[f]
        table = Table(title=f"{label.ja} ({label.en}) — conversation {_secs(info['conversation_mean_seconds'])}, "
                            f"patience {_secs(info['patience_mean_seconds'])}, first-response delay "
                            f"{_secs(info['response_delay_seconds'])} (at best {_pct(info['best_possible_share'])}), "
                            f"current seats {info['current_seats']} ({info['current_seats_source']})")
        columns = ("時 hour", "相談/時 contacts/h", f"実績 {within}以内 observed", f"予測 {within}以内 predicted",
                   "必要席 seats needed")
        for col in columns:
            table.add_column(col, justify="right")
        for r in (r for r in result["hours"] if r["field"] == f):
            table.add_row(f"{r['hour']:02d}", f"{r['arrivals_per_hour']:.1f}", _pct(r["observed_within"]),
                          _pct(r["predicted_within"]), "-" if r["seats_needed"] is None else str(r["seats_needed"]))
        console.print(table)
