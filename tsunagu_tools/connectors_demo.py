"""`tsunagu connectors-demo`: each connector's documented sample through the real local stack to figures.

For Asterisk, Twilio TaskRouter, LINE and Amazon Connect in turn it

1. copies the platform's sample (``tsunagu_connectors/samples/<platform>/``) into a scratch folder — the
   2022 samples all start on 2022-07-07 10:00 JST, the first trial's first hour, so each is moved by whole
   weeks into a day of its own before the trial (the Asterisk sample, of 2010, stays as it is): figures of
   one platform never mix with another's, nor with a replay of the trial (``tsunagu demo``);
2. issues a back-fill partner key for the platform's own demo organisation (``demo-<platform>``: event ids
   are the partner's, so the demo's events never collide with the same sample sent as ``npo-a``);
3. runs the connector as a partner would (``tsunagu connect <platform> import|send``) against intake;
4. polls metrics' answer-rate API until it counts the sample's day as the platform's own records say, and
   prints both side by side: 呼出件数 / attempts, 接続完了 / connected, 放棄 / abandoned, 応答率 / answer
   rate. LINE reports openings of conversations only (no answers): its row shows attempts alone.

The platform's own count is a few lines over the raw copy, by the platform's documented meaning of its
records — never through the connector's mapping. Exit 1 when metrics and the platform's records differ.
Sending again is harmless: every event is a duplicate, the figures stay.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

import httpx
import typer
from rich.console import Console
from rich.table import Table

from schemas.timezone import JST
from tsunagu import auth
from tsunagu.settings import Settings, get_settings
from tsunagu_tools import stack
from tsunagu_tools.database import run_with_pool

SAMPLES = Path(__file__).resolve().parent.parent / "tsunagu_connectors" / "samples"
WAIT_SECONDS = 120.0  # how long metrics may take to count a sample (it starts by catching up with the topics)
POLL_SECONDS = 0.5
FIGURES = ("attempts", "connected", "abandoned", "answer_rate")
LABELS = {"attempts": "呼出件数 / attempts", "connected": "接続完了 / connected", "abandoned": "放棄 / abandoned",
          "answer_rate": "応答率 / answer rate"}


@dataclass(frozen=True)
class Count:
    """A platform's own figures for its sample: what metrics must show for the sample's days."""

    attempts: int
    connected: int
    abandoned: int
    first: datetime  # the first and last attempt: the period asked of metrics is their days (JST)
    last: datetime

    def figures(self) -> dict[str, Any]:
        rate = round(self.connected / self.attempts, 4) if self.attempts else None
        return {"attempts": self.attempts, "connected": self.connected, "abandoned": self.abandoned,
                "answer_rate": rate}


# --- the platforms' own counts, from the raw records ------------------------------------------------


def asterisk_count(lines: list[str]) -> Count:
    """A call is a callid that entered a queue (or was turned away at it); connected when a CONNECT was
    logged, abandoned when it left unanswered (queue_log's documented events)."""
    entered: dict[str, int] = {}
    connected: set[str] = set()
    left: set[str] = set()
    for line in lines:
        f = line.strip().split("|")
        if len(f) < 5 or f[1] in ("NONE", "MANAGER", "REALTIME", ""):
            continue
        if f[4] in ("ENTERQUEUE", "JOINEMPTY", "JOINUNAVAIL"):
            entered.setdefault(f[1], int(f[0]))
        if f[4] == "CONNECT":
            connected.add(f[1])
        if f[4] in ("ABANDON", "EXITWITHTIMEOUT", "EXITWITHKEY", "EXITEMPTY", "JOINEMPTY", "JOINUNAVAIL"):
            left.add(f[1])
    times = [datetime.fromtimestamp(t, JST) for t in entered.values()]
    return Count(len(entered), len(connected & entered.keys()), len((left - connected) & entered.keys()),
                 min(times), max(times))


def twilio_count(callbacks: list[dict[str, str]]) -> Count:
    """A call is a voice task created; connected when a reservation of it was accepted, abandoned when
    it was canceled unanswered (TaskRouter's event reference)."""
    kinds: dict[str, set[str]] = defaultdict(set)
    created: dict[str, datetime] = {}
    for p in callbacks:
        kinds[p.get("TaskSid", "")].add(p.get("EventType", ""))
        if p.get("EventType") == "task.created" and p.get("TaskChannelUniqueName", "voice") in ("voice", "default"):
            created[p["TaskSid"]] = datetime.fromtimestamp(int(p["Timestamp"]), JST)
    connected = {t for t in created if "reservation.accepted" in kinds[t]}
    abandoned = {t for t in created if "task.canceled" in kinds[t]} - connected
    return Count(len(created), len(connected), len(abandoned), min(created.values()), max(created.values()))


def line_count(bodies: list[dict[str, Any]], silence_minutes: float) -> Count:
    """A consultation is a person's one-to-one conversation: their first message, or one after
    ``silence_minutes`` without any, or after they blocked the account (unfollow); redelivered events
    (the same webhookEventId) count once. LINE's webhook shows no replies: nothing is connected."""
    seen: set[str] = set()
    last: dict[str, int | None] = {}
    opened: list[int] = []
    for body in bodies:
        for ev in body.get("events", []):
            user = (ev.get("source") or {}).get("userId") if (ev.get("source") or {}).get("type") == "user" else None
            if user is None or ev.get("webhookEventId") in seen:
                continue
            seen.add(ev["webhookEventId"])
            if ev.get("type") == "unfollow":
                last[user] = None
            elif ev.get("type") == "message":
                before = last.get(user)
                if before is None or ev["timestamp"] - before > silence_minutes * 60_000:
                    opened.append(ev["timestamp"])
                last[user] = max(before or 0, ev["timestamp"])
    times = [datetime.fromtimestamp(ms / 1000, JST) for ms in opened]
    return Count(len(opened), 0, 0, min(times), max(times))


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(JST)


def amazon_connect_count(records: list[dict[str, Any]]) -> Count:
    """A call is a person's inbound voice contact (its latest record, by LastUpdateTimestamp); connected
    when any record of its chain (InitialContactId) reached an agent (the contact record data model)."""
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["ContactId"] not in latest or r["LastUpdateTimestamp"] >= latest[r["ContactId"]]["LastUpdateTimestamp"]:
            latest[r["ContactId"]] = r
    reached = {r.get("InitialContactId") or r["ContactId"] for r in latest.values()
               if (r.get("Agent") or {}).get("ConnectedToAgentTimestamp")}
    calls = [r for r in latest.values() if r["Channel"] == "VOICE" and r["InitiationMethod"] == "INBOUND"]
    connected = sum(r["ContactId"] in reached for r in calls)
    times = [_utc(r["InitiationTimestamp"]) for r in calls]
    return Count(len(calls), connected, len(calls) - connected, min(times), max(times))


# --- the samples, each moved to a day of its own ---------------------------------------------------


def shifted_form(body: str, days: int) -> str:
    """A TaskRouter callback body with its times moved by whole days."""
    moved = []
    for name, value in parse_qsl(body, keep_blank_values=True):
        if name == "Timestamp" and value:
            value = str(int(value) + days * 86400)
        elif name == "TimestampMs" and value:
            value = str(int(value) + days * 86_400_000)
        moved.append((name, value))
    return urlencode(moved)


def shifted_line(body: dict[str, Any], days: int) -> dict[str, Any]:
    """A LINE webhook body with its events' times moved by whole days."""
    events = [{**ev, "timestamp": ev["timestamp"] + days * 86_400_000} if isinstance(ev.get("timestamp"), int)
              else ev for ev in body.get("events", [])]
    return {**body, "events": events}


def shifted_ctr(value: Any, days: int) -> Any:
    """A contact record with every ``…Timestamp`` moved by whole days (written as Connect does, UTC)."""
    if isinstance(value, dict):
        return {k: (_utc(v) + timedelta(days=days)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                if k.endswith("Timestamp") and isinstance(v, str) else shifted_ctr(v, days)
                for k, v in value.items()}
    if isinstance(value, list):
        return [shifted_ctr(v, days) for v in value]
    return value


def concatenated_json(text: str) -> list[Any]:
    """Objects written back to back, as Firehose delivers contact records."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        while text[at].isspace():
            at += 1
        obj, at = decoder.raw_decode(text, at)
        out.append(obj)
    return out


@dataclass(frozen=True)
class Prepared:
    """A platform's sample ready to send: the files the connector reads, and the platform's own count."""

    files: list[Path]
    count: Count


@dataclass(frozen=True)
class Platform:
    name: str  # as in `tsunagu connect <name>`
    title: str
    verb: str  # import or send
    channel: str  # the channel metrics counts it under
    shift_days: int
    prepare: Callable[[Path, int], Prepared]

    @property
    def org(self) -> str:
        return f"demo-{self.name}"

    @property
    def samples(self) -> Path:
        return SAMPLES / self.name.replace("-", "_")


def prepare_asterisk(folder: Path, days: int) -> Prepared:
    """The sample as it is: of 2010, it is alone on its day already."""
    source = SAMPLES / "asterisk" / "queue_log"
    return Prepared([source], asterisk_count(source.read_text(encoding="utf-8").splitlines()))


def prepare_twilio(folder: Path, days: int) -> Prepared:
    files = []
    for path in sorted((SAMPLES / "twilio").glob("*.form")):
        files.append(folder / path.name)
        files[-1].write_text(shifted_form(path.read_text(encoding="utf-8").strip(), days), encoding="utf-8")
    return Prepared(files, twilio_count([dict(parse_qsl(f.read_text(), keep_blank_values=True)) for f in files]))


def prepare_line(folder: Path, days: int) -> Prepared:
    import yaml

    bodies, files = [], []
    for path in sorted((SAMPLES / "line").glob("*.json")):
        bodies.append(shifted_line(json.loads(path.read_text(encoding="utf-8")), days))
        files.append(folder / path.name)
        files[-1].write_text(json.dumps(bodies[-1], ensure_ascii=False), encoding="utf-8")
    silence = float(yaml.safe_load((SAMPLES / "line" / "mapping.yaml").read_text())["silence_minutes"])
    return Prepared(files, line_count(bodies, silence))


def prepare_amazon_connect(folder: Path, days: int) -> Prepared:
    records = []
    for path in sorted((SAMPLES / "amazon_connect").glob("ctr-*")):
        records += [shifted_ctr(r, days) for r in concatenated_json(path.read_text(encoding="utf-8"))]
    target = folder / "ctr.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return Prepared([target], amazon_connect_count(records))


PLATFORMS = [
    Platform("asterisk", "Asterisk queue_log", "import", "phone", 0, prepare_asterisk),
    Platform("twilio", "Twilio TaskRouter", "send", "phone", -7, prepare_twilio),
    Platform("amazon-connect", "Amazon Connect CTR", "import", "phone", -14, prepare_amazon_connect),
    Platform("line", "LINE Messaging API", "send", "chat", -21, prepare_line),
]


def connector_argv(platform: Platform, files: list[Path], key_file: Path, intake_url: str) -> list[str]:
    """The partner's command: ``tsunagu connect <platform> import|send <files> …``."""
    return [sys.executable, "-m", "tsunagu_tools.cli", "connect", platform.name, platform.verb, *map(str, files),
            "--config", str(platform.samples / "mapping.yaml"), "--partner", platform.org,
            "--key-file", str(key_file), "--intake-url", intake_url]


def period_of(count: Count) -> tuple[date, date]:
    """The sample's days in Japan time (metrics' ``from``/``to`` dates, both inclusive)."""
    return count.first.astimezone(JST).date(), count.last.astimezone(JST).date()


# --- against the stack -----------------------------------------------------------------------------


def issue_key(org: str, role: str, label: str) -> str:
    """A new API key from the stack's own database (as `tsunagu credentials issue` does)."""
    backfill = role == "partner"
    _key_id, key = asyncio.run(run_with_pool(lambda pool: auth.issue_credential(pool, org, role, label,
                                                                                backfill=backfill),
                                             migrations=[auth.migrate_schema]))
    return str(key)


def counted(metrics_url: str, key: str, platform: Platform, count: Count) -> dict[str, Any] | None:
    """Metrics' totals for the sample's days on the platform's channel, None while it is catching up."""
    start, end = period_of(count)
    answer = httpx.get(f"{metrics_url}/v1/metrics/answer-rate", headers={"Authorization": f"Bearer {key}"},
                       params={"from": start.isoformat(), "to": end.isoformat(), "channel": platform.channel},
                       timeout=30)
    if answer.status_code == 503:
        return None
    answer.raise_for_status()
    totals: dict[str, Any] = answer.json()["totals"]
    return totals


def shown(platform: Platform, figures: dict[str, Any] | None) -> dict[str, Any]:
    """The figures compared: LINE's connector reports no answers, so attempts alone."""
    if figures is None:
        return {}
    names = ("attempts",) if platform.name == "line" else FIGURES
    return {n: round(figures[n], 4) if isinstance(figures.get(n), float) else figures.get(n) for n in names}


def wait_for_figures(metrics_url: str, key: str, platform: Platform, count: Count,
                     timeout: float = WAIT_SECONDS) -> dict[str, Any] | None:
    """Poll metrics until its totals are the platform's own (or the time is up: the last totals seen)."""
    expected = shown(platform, count.figures())
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = counted(metrics_url, key, platform, count) or last
        if shown(platform, last) == expected or time.monotonic() > deadline:
            return last
        time.sleep(POLL_SECONDS)


def figures_table(platform: Platform, count: Count, got: dict[str, Any] | None) -> Table:
    start, end = period_of(count)
    period = start.isoformat() if start == end else f"{start} → {end}"
    caption = ("LINE's webhook shows no replies: conversations opened only / 応答・終話は記録されない"
               if platform.name == "line" else None)
    table = Table(title=f"{platform.title} — {period} (JST), {platform.channel}", caption=caption)
    for column in ("", "metrics / 集計", f"{platform.name} の記録 / platform's records", ""):
        table.add_column(column, justify="right" if column else "left")
    mine, theirs = shown(platform, got), shown(platform, count.figures())
    for name in FIGURES:
        if name not in theirs:
            table.add_row(LABELS[name], "—", "—", "")
            continue
        same = mine.get(name) == theirs[name]
        table.add_row(LABELS[name], str(mine.get(name, "—")), str(theirs[name]),
                      "一致 / same" if same else "[red]相違 / differs[/red]")
    return table


def run_connectors_demo(settings: Settings, console: Console | None = None, stop: bool = False) -> bool:
    """The smoke: every platform's sample through the stack; True when every figure matched."""
    console = console or Console(width=None if sys.stdout.isatty() else 110)
    console.rule("[bold]tsunagu つなぐ — connectors' samples through the local stack / システムをつなぐ")
    stack.up(settings, echo=lambda line: console.print(f"  {line}"))
    intake_url, metrics_url = stack.service_url(settings, "intake"), stack.service_url(settings, "metrics")
    secretariat = issue_key(auth.SECRETARIAT_ORG, "secretariat", "connectors-demo")
    all_same = True
    with tempfile.TemporaryDirectory(prefix="tsunagu-connectors-demo-") as scratch:
        for platform in PLATFORMS:
            folder = Path(scratch, platform.name)
            folder.mkdir()
            prepared = platform.prepare(folder, platform.shift_days)
            key_file = folder / "partner.key"
            key_file.write_text(issue_key(platform.org, "partner", f"connectors-demo {platform.name}") + "\n")
            console.print(f"\n[bold]{platform.title}[/bold]: tsunagu connect {platform.name} {platform.verb} "
                          f"({len(prepared.files)} file(s)) --partner {platform.org}")
            sent = subprocess.run(connector_argv(platform, prepared.files, key_file, intake_url),
                                  capture_output=True, text=True, timeout=300)
            for line in (sent.stdout + sent.stderr).strip().splitlines()[-4:]:
                console.print(f"  {line}", markup=False)
            if sent.returncode != 0:
                console.print(f"  [red]the connector exited {sent.returncode}[/red]")
                all_same = False
                continue
            got = wait_for_figures(metrics_url, secretariat, platform, prepared.count)
            console.print(figures_table(platform, prepared.count, got))
            all_same &= shown(platform, got) == shown(platform, prepared.count.figures())
    console.print("\n" + ("every platform's figures match its own records / すべて一致" if all_same
                          else "[red]figures differ from the platforms' records / 相違あり[/red]"))
    if stop:
        stack.down(settings, echo=lambda line: console.print(f"  {line}"))
    return all_same


def connectors_demo(
    stop: Annotated[bool, typer.Option("--stop", help="stop the local stack at the end (default: leave it running)")]
    = False,
) -> None:
    """Each connector's documented sample through the local stack to metrics' figures, beside the
    platform's own count (exit 1 when they differ; see README, "Connect your system")."""
    try:
        same = run_connectors_demo(get_settings(), stop=stop)
    except stack.StackError as err:
        Console(stderr=True).print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    if not same:
        raise typer.Exit(1)
