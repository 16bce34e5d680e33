"""The seat plan's queries on a real PostgreSQL: text channels only, the first-response delay from the
seat's assignment, transfers' later assignments left out, and the CLI's options."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

from services.metrics import reports
from services.metrics.domain.periods import Period
from services.metrics.store import planning
from services.metrics.store.schema import migrate_schema

JST = timezone(timedelta(hours=9))
DAY = datetime(2022, 7, 7, tzinfo=JST)
PERIOD = Period(DAY, DAY + timedelta(days=1))
COLUMNS = ("contact_id, received_at, channel, field, answered_at, wait_seconds, abandon_stage, abandon_wait, "
           "talk_seconds, assigned_at")


def contact(i: int, channel: str, *, hour: int, wait: float, seated_after: float | None = None,
            talk: float | None = 600.0, left: bool = False, assigned_late: bool = False) -> tuple:
    at = DAY + timedelta(hours=hour, minutes=i)
    if left:
        return (f"c{i}", at, channel, "loneliness", None, None, "queue", wait, None, None)
    answered = at + timedelta(seconds=wait)
    assigned = answered + timedelta(seconds=30) if assigned_late else at + timedelta(seconds=seated_after or 0)
    return (f"c{i}", at, channel, "loneliness", answered, wait, None, None, talk, assigned)


async def test_the_seat_plan_reads_only_text_channels_and_the_delay_before_the_first_response(pool):
    await migrate_schema(pool)
    rows = [
        contact(1, "chat", hour=21, wait=100, seated_after=40),  # delay 60
        contact(2, "sns", hour=21, wait=400, seated_after=380),  # delay 20, not within 300
        contact(3, "chat", hour=21, wait=50, assigned_late=True),  # a transfer's assignment: no delay
        contact(4, "chat", hour=21, wait=200, left=True),
        contact(5, "phone", hour=21, wait=10, seated_after=0, talk=9999),  # a call: not a seat's
    ]
    await pool.executemany(f"INSERT INTO metrics.contacts ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)", rows)
    plan = await reports.seat_plan(pool, PERIOD, reports.SeatAim(("chat", "sns"), per_seat=2, within_s=300),
                                   {})
    field = plan["fields"]["loneliness"]
    assert field["conversation_mean_seconds"] == 600.0
    assert field["response_delay_seconds"] == 40.0  # (60 + 20) / 2
    assert field["patience_mean_seconds"] == (100 + 400 + 50 + 200) / 1
    assert field["current_seats"] == 2  # three conversations at once at most, two a seat
    (hour,) = plan["hours"]
    assert (hour["hour"], hour["attempts"], hour["connected"], hour["observed_within"]) == (21, 4, 3, 0.5)
    assert hour["seats_needed"] >= 1 and 0 < hour["predicted_within"] < 1
    chat_only = await reports.seat_plan(pool, PERIOD, reports.SeatAim(("chat",), per_seat=2), {"loneliness": 5})
    assert chat_only["hours"][0]["attempts"] == 3 and chat_only["fields"]["loneliness"]["current_seats"] == 5
    # the phone plan's lines in use count calls only: one call, whatever the chats beside it
    assert await planning.peak_lines_by_field(pool, PERIOD) == {"loneliness": 1}


async def test_tsunagu_plan_prints_seats_for_a_text_channel(pool, database_url):
    from typer.testing import CliRunner

    from tsunagu_tools.cli import app

    await migrate_schema(pool)
    await pool.execute("UPDATE metrics.fold_mode SET mode = 'live'")
    await pool.executemany(f"INSERT INTO metrics.contacts ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                           [contact(i, "chat", hour=10 + i % 3, wait=60 + 5 * i, seated_after=30) for i in range(30)])
    runner = CliRunner()
    args = ["plan", "--from", "2022-07-07", "--to", "2022-07-07", "--channel", "chat", "--per-seat", "3",
            "--within", "300", "--target", "0.8"]
    env = {"DATABASE_URL": database_url}
    shown = await asyncio.to_thread(runner.invoke, app, args, env=env)
    assert shown.exit_code == 0, shown.output
    assert "必要席" in shown.output and "必要回線" not in shown.output
    as_json = await asyncio.to_thread(runner.invoke, app, [*args, "--json"], env=env)
    plan = json.loads(as_json.output)
    assert plan["aim"] == {"channels": ["chat"], "per_seat": 3, "within_s": 300.0, "target": 0.8, "slowdown": 0.0}
    assert {h["hour"] for h in plan["hours"]} == {10, 11, 12}
    refused = await asyncio.to_thread(runner.invoke, app, ["plan", "--channel", "fax"], env=env)
    assert refused.exit_code == 2
