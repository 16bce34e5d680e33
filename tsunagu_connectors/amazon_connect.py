"""Amazon Connect: contact records (CTRs) from files, as Kinesis Data Firehose delivers them to S3 or as
exported, turned into tsunagu's contact events and sent through intake with the partner's own key.

The record format is Amazon Connect's "Data model for contact records"
(https://docs.aws.amazon.com/connect/latest/adminguide/ctr-data-model.html). A CTR is written when a
contact ends, so one record tells a whole segment: arrival, the queue (the field the person chose in the
flow), the agent who connected or the hang-up, and the talk.

What counts as one person's contact (decided here, documented in the README section):

- a segment the person started (``INBOUND`` voice, ``API`` chat, ``WEBRTC_API`` in-app voice) is a contact:
  ``contact.received``, ``contact.field_selected`` (its queue), then ``contact.answered`` +
  ``contact.ended`` or ``contact.abandoned``; ``Channel`` ``CHAT`` is channel ``chat``, answered at the
  counsellor's first response when the record carries Amazon Connect's chat metrics
  (``ChatMetrics.ChatContactMetrics.AgentFirstResponseTimestamp``; else when the agent connected), and
  abandoned at stage ``ringing`` when those metrics show no first response;
- a ``QUEUE_TRANSFER`` segment (the flow moved the still-waiting person to another queue) belongs to the
  contact of its ``InitialContactId``: it reports only whether that person was answered there or hung up;
- a ``TRANSFER`` segment (an agent handed the already answered person on) adds nothing: the person was
  counted, and answered, on the first segment;
- everything else (outbound, callbacks, monitoring, disconnect flows, tasks, email) is not a person
  reaching the line: skipped and counted, never sent.

Every contact id comes from the chain's ``InitialContactId`` and every event id from the segment's own
``ContactId`` plus the event kind: a CTR delivered twice, or updated later (same ``ContactId``, later
``LastUpdateTimestamp``), answers as duplicates at intake. Within one import only the latest version of
each ``ContactId`` is mapped.

Nothing half-sent: an import with a record it cannot map sends nothing, unless ``--skip-unmappable`` is
given; then whole chains (every segment of one ``InitialContactId`` in the import) are sent only when all
their records map. A report names the file and the record number and the reason, never the content.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import phonenumbers
import typer
import yaml

from schemas import EventInvalid, validate_event
from schemas.codes import FieldCode
from schemas.envelope import looks_like_phone
from tsunagu_connectors import ids
from tsunagu_connectors.client import IntakeClient, IntakeRefused, SecretMissing, partner_key
from tsunagu_connectors.events import event
from tsunagu_connectors.report import SendReport, Unmapped

PLATFORM = "amazon-connect"
CHANNELS = {"VOICE": "phone", "CHAT": "chat"}
ARRIVALS = frozenset({"INBOUND", "API", "WEBRTC_API"})  # the person reached the line
QUEUE_MOVES = frozenset({"QUEUE_TRANSFER"})  # the same waiting person, moved to another queue by the flow
DESK_TRANSFERS = frozenset({"TRANSFER"})  # an agent handed an answered person on
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


class CtrUnmappable(ValueError):
    """A CTR that cannot be mapped; the message is a reason, never a value of the record."""


# --- the mapping config ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueField:
    """The field a queue stands for, and the menu key that leads the caller there."""

    field: FieldCode
    key: int


@dataclass(frozen=True)
class Mapping:
    """The partner's queues (by Name or ARN) → fields, agents (by Username or ARN) → desk ids."""

    queues: dict[str, QueueField]
    agents: dict[str, str]
    default_desk: str | None = None
    organisation: str | None = None
    system: str = PLATFORM


def _desk(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 100 or not set(value) <= _ID_CHARS:
        raise ValueError(f"{where}: a desk id is 1-100 characters of A-Z a-z 0-9 . _ : -")
    if looks_like_phone(value):
        raise ValueError(f"{where}: a desk id must not look like a phone number (intake refuses it)")
    return value


def mapping_from(doc: Any) -> Mapping:
    """The mapping from a parsed YAML document; a clear error for each wrong entry (before sending anything)."""
    if not isinstance(doc, dict):
        raise ValueError("the mapping config must be a mapping with 'queues' and 'agents'")
    queues: dict[str, QueueField] = {}
    for name, entry in (doc.get("queues") or {}).items():
        if not isinstance(entry, dict) or "field" not in entry or "key" not in entry:
            raise ValueError(f"queues.{name}: give 'field' and 'key' (the menu key, 0-9)")
        try:
            code = FieldCode(entry["field"])  # type: ignore[call-arg]  # a lookup by value
        except ValueError:
            raise ValueError(f"queues.{name}.field: one of {', '.join(FieldCode)}") from None
        key = entry["key"]
        if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key <= 9:
            raise ValueError(f"queues.{name}.key: a menu key 0-9")
        queues[str(name)] = QueueField(code, key)
    agents = {str(a): _desk(d, f"agents.{a}") for a, d in (doc.get("agents") or {}).items()}
    default = doc.get("default_desk")
    return Mapping(queues, agents, _desk(default, "default_desk") if default is not None else None,
                   doc.get("organisation"), str(doc.get("system") or PLATFORM))


def load_mapping(path: Path) -> Mapping:
    return mapping_from(yaml.safe_load(path.read_text(encoding="utf-8")))


# --- reading CTR files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Located:
    """One record as read, with where it was: ``<file> record <n>`` (1-based, in file order)."""

    where: str
    record: Any


def records_in_text(text: str) -> tuple[list[Any], str | None]:
    """Records of one file — a JSON array, JSON lines, or Firehose's JSON objects concatenated without
    separators — and, when the text stops being JSON, why (what came before is kept)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            array = json.loads(stripped)
        except json.JSONDecodeError as err:
            return [], f"not a JSON array (line {err.lineno}, column {err.colno})"
        return (array, None) if isinstance(array, list) else ([], "not a JSON array")
    decoder = json.JSONDecoder()
    out: list[Any] = []
    at = 0
    while True:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        if at >= len(text):
            return out, None
        try:
            record, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            return out, f"record {len(out) + 1} is not JSON; the rest of the file was not read"
        out.append(record)


def file_text(path: Path) -> str:
    """A file's text; gzip (as Firehose may compress) is opened transparently."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8-sig")


CTR_SUFFIXES = frozenset({"", ".json", ".jsonl", ".ndjson", ".gz"})


def files_of(paths: Iterable[Path]) -> list[Path]:
    """Every file named, and under a directory named every non-hidden file that can hold CTRs (Firehose
    objects carry no extension; ``.json``, ``.jsonl``, ``.ndjson``, ``.gz`` too), in path order: the same
    input always reads the same way, and a README or a config beside the records is not read as one."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CTR_SUFFIXES
                          and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            out.append(path)
    return out


def read_ctrs(paths: Iterable[Path]) -> tuple[list[Located], list[Unmapped]]:
    """Every record of every file, located; files or tails that are not JSON as Unmapped."""
    records: list[Located] = []
    problems: list[Unmapped] = []
    for path in files_of(paths):
        try:
            text = file_text(path)
        except (OSError, UnicodeDecodeError, gzip.BadGzipFile, EOFError):
            problems.append(Unmapped(str(path), "not readable as UTF-8 text or gzip"))
            continue
        found, error = records_in_text(text)
        records += [Located(f"{path} record {n}", r) for n, r in enumerate(found, start=1)]
        if error:
            problems.append(Unmapped(str(path), error))
    return records, problems


# --- one CTR → events -----------------------------------------------------------------------------------


def _obj(ctr: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = ctr.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CtrUnmappable(f"{name} is not an object")
    return value


def _text(obj: dict[str, Any], name: str, where: str = "") -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise CtrUnmappable(f"{where}{name} is missing")
    return value


def _time(obj: dict[str, Any] | None, name: str, where: str = "") -> datetime | None:
    """A CTR timestamp (ISO 8601, UTC ``Z``), or None when absent."""
    value = None if obj is None else obj.get(name)
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None or at.utcoffset() is None:
        raise CtrUnmappable(f"{where}{name} is not an ISO 8601 time with an offset")
    return at


def _seconds(start: datetime, end: datetime, what: str) -> float:
    seconds = (end - start).total_seconds()
    if seconds < 0:
        raise CtrUnmappable(f"{what} is negative: the record's timestamps are out of order")
    return seconds


def _first_response(ctr: dict[str, Any], connected: datetime) -> tuple[datetime | None, bool]:
    """A chat is answered at the counsellor's first response, not when the agent took it: Amazon Connect's
    chat metrics (``ChatMetrics.ChatContactMetrics.AgentFirstResponseTimestamp``) say when, where the record
    carries them. Without chat metrics the connection stands for the answer (records written before Amazon
    Connect added them); with them but no first response, the person left while a counsellor held the
    chat unanswered: (None, True)."""
    metrics = _obj(ctr, "ChatMetrics")
    contact = None if metrics is None else _obj(metrics, "ChatContactMetrics")
    if contact is None:
        return connected, False
    first = _time(contact, "AgentFirstResponseTimestamp", "ChatMetrics.ChatContactMetrics.")
    if first is None:
        return None, True
    if first < connected:
        raise CtrUnmappable("the first response is before the agent connected: the record's timestamps are "
                            "out of order")
    return first, False


def caller_of(ctr: dict[str, Any]) -> str | None:
    """The caller's number for intake to pseudonymise, only from a TELEPHONE_NUMBER endpoint; a withheld
    or impossible number (Connect writes e.g. ``anonymous``) is None, as intake would refuse it."""
    endpoint = _obj(ctr, "CustomerEndpoint")
    if endpoint is None or endpoint.get("Type") != "TELEPHONE_NUMBER" or not isinstance(endpoint.get("Address"), str):
        return None
    try:
        number = phonenumbers.parse(endpoint["Address"], "JP")
    except phonenumbers.NumberParseException:
        return None
    return endpoint["Address"] if phonenumbers.is_possible_number(number) else None


def _queue_field(queue: dict[str, Any], mapping: Mapping) -> QueueField:
    for name in ("ARN", "Name"):
        value = queue.get(name)
        if isinstance(value, str) and value in mapping.queues:
            return mapping.queues[value]
    queue_name = queue.get("Name")
    raise CtrUnmappable(f"queue {queue_name!r} is not in the mapping config" if isinstance(queue_name, str)
                        else "the queue has no Name or ARN in the mapping config")


def _desk_of(agent: dict[str, Any], mapping: Mapping) -> str:
    for name in ("Username", "ARN"):
        value = agent.get(name)
        if isinstance(value, str) and value in mapping.agents:
            return mapping.agents[value]
    if mapping.default_desk is not None:
        return mapping.default_desk
    raise CtrUnmappable("the agent is not in the mapping config and there is no default_desk")


@dataclass(frozen=True)
class Segment:
    """What a CTR says, read and checked, before it becomes events."""

    contact_id: str  # Amazon Connect's ContactId
    initial_id: str  # the chain's first ContactId (itself for the first segment)
    method: str
    channel: str | None  # tsunagu's channel; None: not a channel tsunagu counts
    updated: str  # LastUpdateTimestamp as written (ISO 8601 UTC sorts as text)


def segment_of(ctr: Any) -> Segment:
    if not isinstance(ctr, dict):
        raise CtrUnmappable("not a JSON object")
    contact = _text(ctr, "ContactId")
    initial = ctr.get("InitialContactId") or contact
    if not isinstance(initial, str):
        raise CtrUnmappable("InitialContactId is not a string")
    updated = ctr.get("LastUpdateTimestamp")
    return Segment(contact, initial, _text(ctr, "InitiationMethod"), CHANNELS.get(_text(ctr, "Channel").upper()),
                   updated if isinstance(updated, str) else "")


def skip_reason(segment: Segment) -> str | None:
    """Why a segment is no person's contact for tsunagu (None: it is mapped)."""
    if segment.channel is None:
        return "channel not counted (tasks, email)"
    if segment.method in DESK_TRANSFERS:
        return "transfer by an agent: the person was counted and answered on the first segment"
    if segment.method not in ARRIVALS | QUEUE_MOVES:
        return f"initiation method {segment.method} is not a person reaching the line"
    return None


def events_of_ctr(ctr: dict[str, Any], mapping: Mapping, partner: str) -> list[dict[str, Any]]:
    """The contract events one arrival or queue-move CTR stands for, in event-time order; raises
    CtrUnmappable (nothing of the record is used) when any part of it cannot be mapped."""
    seg = segment_of(ctr)
    system = mapping.system
    cid = ids.contact_id(PLATFORM, partner, seg.initial_id)

    def make(kind: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
        eid = ids.event_id(PLATFORM, partner, seg.contact_id, kind)
        built = event(partner, system, kind, eid, cid, at, {"contact_id": cid, **data})
        try:  # checked here as intake will: a record intake would half refuse is not sent at all
            validate_event(built, form="ingress")
        except EventInvalid as err:
            paths = ", ".join(sorted({p.path or "event" for p in err.problems}))
            raise CtrUnmappable(f"{kind} would be refused by the contract ({paths})") from None
        return built

    initiated = _time(ctr, "InitiationTimestamp")
    disconnected = _time(ctr, "DisconnectTimestamp")
    if initiated is None:
        raise CtrUnmappable("InitiationTimestamp is missing")
    if disconnected is None:
        raise CtrUnmappable("DisconnectTimestamp is missing (the contact has not ended)")
    queue = _obj(ctr, "Queue")
    enqueued = _time(queue, "EnqueueTimestamp", "Queue.")
    if queue is not None and enqueued is None:
        raise CtrUnmappable("Queue.EnqueueTimestamp is missing")
    agent = _obj(ctr, "Agent")
    connected = _time(agent, "ConnectedToAgentTimestamp", "Agent.")
    if connected is not None and enqueued is None:
        raise CtrUnmappable("connected to an agent without a queue")
    offered = False
    if seg.channel == "chat" and connected is not None:
        connected, offered = _first_response(ctr, connected)

    out: list[dict[str, Any]] = []
    if seg.method in ARRIVALS:
        received: dict[str, Any] = {"channel": seg.channel}
        if seg.channel == "phone" and (caller := caller_of(ctr)) is not None:
            received["caller_id"] = caller  # intake pseudonymises it; it goes nowhere else
        out.append(make("contact.received", initiated, received))
        if queue is not None and enqueued is not None:  # the field is the queue the flow put the person in
            chosen = _queue_field(queue, mapping)
            out.append(make("contact.field_selected", enqueued,
                            {"field": chosen.field.value, "menu_position": chosen.key}))
    elif queue is None:
        raise CtrUnmappable("a queue transfer without a queue")
    if connected is not None and agent is not None and enqueued is not None:
        desk = _desk_of(agent, mapping)
        out.append(make("contact.answered", connected, {
            "desk_id": desk, "organisation_id": partner,
            "wait_seconds": _seconds(enqueued, connected, "the wait")}))
        out.append(make("contact.ended", disconnected, {
            "talk_seconds": _seconds(connected, disconnected, "the talk"), "desk_id": desk}))
    else:
        # Hung up before any agent: in the flow (voice menu) when never queued, else in the queue — or, a chat,
        # while a counsellor held it without a first response (offered). A later queue-move segment that is
        # answered makes the contact connected (abandonment counts only unanswered).
        stage, since = ("queue", enqueued) if enqueued is not None else ("ivr", initiated)
        if offered:
            stage = "ringing"
        out.append(make("contact.abandoned", disconnected, {
            "stage": stage, "wait_seconds": _seconds(since, disconnected, "the wait")}))
    return out


# --- a whole import -------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What an import would send, what it could not map, and what it skipped (by reason)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    contacts: int = 0  # arrival segments mapped (people reaching the line)
    superseded: int = 0  # older versions of a ContactId replaced by a later LastUpdateTimestamp

    @property
    def sendable(self) -> bool:
        return not self.unmapped


def latest_versions(records: list[Located]) -> tuple[list[tuple[Located, Segment]], list[Unmapped], int]:
    """One record per ContactId — the latest LastUpdateTimestamp, the last read on a tie — in read order."""
    latest: dict[str, tuple[int, Located, Segment]] = {}
    problems: list[Unmapped] = []
    for n, located in enumerate(records):
        try:
            seg = segment_of(located.record)
        except CtrUnmappable as err:
            problems.append(Unmapped(located.where, str(err)))
            continue
        kept = latest.get(seg.contact_id)
        if kept is None or seg.updated >= kept[2].updated:
            latest[seg.contact_id] = (n, located, seg)
    kept_in_order = sorted(latest.values(), key=lambda v: v[0])
    return [(loc, seg) for _, loc, seg in kept_in_order], problems, len(records) - len(problems) - len(latest)


def plan_import(records: list[Located], mapping: Mapping, partner: str, *, skip_unmappable: bool = False,
                unreadable: Iterable[Unmapped] = ()) -> Plan:
    """Map an import. Without ``skip_unmappable`` one unmappable record (or ``unreadable`` part of a file)
    empties the plan's events; with it, each chain (InitialContactId) is kept only when all its records in
    the import map."""
    plan = Plan()
    versions, unmapped, plan.superseded = latest_versions(records)
    plan.unmapped = [*unreadable, *unmapped]
    by_chain: dict[str, list[dict[str, Any]]] = {}
    broken: set[str] = set()
    arrivals: dict[str, int] = {}
    for located, seg in versions:
        if (reason := skip_reason(seg)) is not None:
            plan.skipped[reason] = plan.skipped.get(reason, 0) + 1
            continue
        try:
            events = events_of_ctr(located.record, mapping, partner)
        except CtrUnmappable as err:
            plan.unmapped.append(Unmapped(located.where, str(err)))
            broken.add(seg.initial_id)
            continue
        by_chain.setdefault(seg.initial_id, []).extend(events)
        arrivals[seg.initial_id] = arrivals.get(seg.initial_id, 0) + (seg.method in ARRIVALS)
    if plan.unmapped and not skip_unmappable:
        return plan
    for chain, events in by_chain.items():
        if chain not in broken:
            plan.events += events
            plan.contacts += arrivals[chain]
    return plan


# --- the command ----------------------------------------------------------------------------------------

app = typer.Typer(help="Amazon Connect: contact records (CTR) → tsunagu / Amazon Connect の問い合わせ記録を送る",
                  no_args_is_help=True)


@app.callback()
def amazon_connect() -> None:
    """Amazon Connect contact records (CTR) → tsunagu's contact events, through intake."""
    # a group even with one command, so that ``import`` is named alike here and under ``tsunagu connect``


def _key(key_file: Path | None) -> str:
    try:
        return partner_key(key_file)
    except SecretMissing as err:
        raise typer.BadParameter(str(err), param_hint="--key-file") from None


@app.command("import")
def import_ctrs(
    paths: Annotated[list[Path], typer.Argument(help="CTR files or directories (Firehose objects, JSON lines, "
                                                     "a JSON array; .gz too)", exists=True)],
    config: Annotated[Path, typer.Option("--config", "-c", help="mapping config (YAML): queues → fields, "
                                                                "agents → desk ids", exists=True)],
    org: Annotated[str | None, typer.Option("--partner", "--org", help="your organisation id, e.g. npo-a "
                                                                   "(else the config's 'organisation')")] = None,
    intake_url: Annotated[str, typer.Option("--intake-url", envvar="TSUNAGU_INTAKE_URL")] = "http://127.0.0.1:8081",
    key_file: Annotated[Path | None, typer.Option("--key-file", help="partner API key (else TSUNAGU_API_KEY)")] = None,
    skip_unmappable: Annotated[bool, typer.Option("--skip-unmappable", help="send the contacts whose records "
                                                                            "all map, report the rest")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="map and report, send nothing")] = False,
) -> None:
    """Map contact records to tsunagu's events and send them to intake (re-sending is harmless)."""
    try:
        mapping = load_mapping(config)
    except (ValueError, yaml.YAMLError) as err:
        raise typer.BadParameter(str(err), param_hint="--config") from None
    partner = org or mapping.organisation
    if not partner:
        raise typer.BadParameter("give --partner or 'organisation' in the config", param_hint="--partner")
    records, problems = read_ctrs(paths)
    plan = plan_import(records, mapping, partner, skip_unmappable=skip_unmappable, unreadable=problems)
    typer.echo(f"読込 / read: {len(records)} records, {plan.superseded} superseded by a later update")
    for reason, n in sorted(plan.skipped.items()):
        typer.echo(f"対象外 / skipped: {n} — {reason}")
    for problem in plan.unmapped:
        typer.echo(f"変換不可 / unmappable: {problem}", err=True)
    if plan.unmapped and not skip_unmappable:
        typer.echo("送信なし / nothing sent: fix the records or the config, or give --skip-unmappable", err=True)
        raise typer.Exit(1)
    typer.echo(f"対象 / to send: {plan.contacts} contacts, {len(plan.events)} events")
    if dry_run:
        return
    try:
        with IntakeClient(intake_url, _key(key_file)) as client:
            report = client.send(plan.events, SendReport())
    except IntakeRefused as err:
        typer.echo(f"拒否 / refused: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"送信 / sent: {report.summary()}")
    for event_id, issues in report.refused.items():
        typer.echo(f"受付不可 / refused by intake: {event_id}: {issues}", err=True)
    if not report.ok:
        raise typer.Exit(2)
