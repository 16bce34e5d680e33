"""Asterisk queue_log → tsunagu's contact events: the pure part (parse a line, map a call, the mapping
config). No I/O here: ``asterisk.py`` reads files and sends, ``asterisk_follow.py`` tails a live log.

A queue_log line is ``epoch|callid|queuename|agent|event|data1|data2|...`` (Asterisk documentation,
"Queue Logs": https://docs.asterisk.org/Operation/Logging/Queue-Logs/). One caller's channel is one
``callid`` (its uniqueid), so one contact of tsunagu is one callid:

- ``ENTERQUEUE(url|callerid|origposition[|calleridname])`` → ``contact.received`` (callerid →
  ``data.caller_id``, which intake pseudonymises; the name is never read) and ``contact.field_selected``
  (the queue → a field through the mapping config). Entering another queue later (the dialplan's
  failover after a timeout) selects that queue's field again: metrics counts a contact in its latest field.
- ``JOINEMPTY`` / ``JOINUNAVAIL`` (the caller could not even join: no reachable member) → received,
  field selected and abandoned in the queue after 0 s: a caller who reached the line and was turned
  away is an attempt that was not connected.
- ``CONNECT(holdtime|bridgedchanneluniqueid|ringtime)`` → ``contact.answered`` (agent → desk id through
  the config, holdtime → ``wait_seconds``).
- ``ABANDON`` / ``EXITWITHTIMEOUT`` / ``EXITEMPTY`` ``(position|origposition|waittime)`` and
  ``EXITWITHKEY(key|position|origposition|waittime)`` → ``contact.abandoned`` with ``wait_seconds``.
  Stage ``ringing`` for an ABANDON right after ``RINGCANCELED`` (the caller hung up while a desk rang),
  ``queue`` for every other way of leaving the queue unanswered: AbandonStage names where the contact
  was lost, not who ended it, and the definitions (docs/definitions.md) count every attempt that was not
  answered the same way in the answer rate.
- ``COMPLETECALLER`` / ``COMPLETEAGENT(holdtime|calltime|origposition)``, ``TRANSFER`` / ``BLINDTRANSFER
  (extension|context|holdtime|calltime|origposition)`` and ``ATTENDEDTRANSFER(method|method-data|holdtime|
  calltime|origposition)`` → ``contact.ended`` (calltime → ``talk_seconds``): the talk at this line ended.
- ``RINGNOANSWER``, ``AGENTDUMP``, ``SYSCOMPAT``, ``DID``, ``INFO`` belong to a call but change nothing
  tsunagu counts; lines of no call (callid ``NONE``/``MANAGER``/``REALTIME``, or QUEUESTART, ADDMEMBER,
  PAUSE, AGENTLOGIN, …) are skipped. Neither is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as MappingABC
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas import FieldCode
from schemas.envelope import looks_like_phone
from tsunagu_connectors import ids
from tsunagu_connectors.events import event
from tsunagu_connectors.report import Unmapped

PLATFORM = "asterisk"
SYSTEM = "asterisk"

NO_CALL_IDS = frozenset({"", "NONE", "MANAGER", "REALTIME"})
NO_CALL_EVENTS = frozenset({
    "QUEUESTART", "CONFIGRELOAD", "ADDMEMBER", "REMOVEMEMBER", "PAUSE", "UNPAUSE", "PAUSEALL", "UNPAUSEALL",
    "PENALTY", "RINGINUSE", "AGENTLOGIN", "AGENTLOGOFF", "AGENTCALLBACKLOGIN", "AGENTCALLBACKLOGOFF",
})
NO_EFFECT_EVENTS = frozenset({"RINGNOANSWER", "RINGCANCELED", "AGENTDUMP", "SYSCOMPAT", "DID", "INFO"})
LEFT_UNANSWERED = {"ABANDON": 2, "EXITWITHTIMEOUT": 2, "EXITEMPTY": 2, "EXITWITHKEY": 3}  # -> waittime index
TURNED_AWAY = frozenset({"JOINEMPTY", "JOINUNAVAIL"})
TALK_ENDED = {"COMPLETECALLER": 1, "COMPLETEAGENT": 1, "TRANSFER": 3, "BLINDTRANSFER": 3,
              "ATTENDEDTRANSFER": 3}  # -> calltime index
CALL_EVENTS = frozenset({"ENTERQUEUE", "CONNECT", *LEFT_UNANSWERED, *TURNED_AWAY, *TALK_ENDED, *NO_EFFECT_EVENTS})

_EVENT_NAME = re.compile(r"^[A-Z][A-Z_]*$")
_EPOCH = re.compile(r"^\d{9,11}(\.\d+)?$")
_SECONDS = re.compile(r"^\d+(\.\d+)?$")
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_DIALABLE = re.compile(r"^\+?\d{6,15}$")
_CALLER_SEPARATORS = re.compile(r"[\s\-().]")
# Finished calls are kept this long (event time) after their last line, for a re-entry into another queue.
KEEP_FINISHED_S = 3600.0
# Calls with no line for this long are dropped from the state (their end was lost with a log).
KEEP_OPEN_S = 86400.0


# --- the mapping config ----------------------------------------------------------------------------


class QueueMapping(BaseModel):
    """One Asterisk queue: the field (相談分野) a caller chose by entering it, and the menu key that led there."""

    model_config = ConfigDict(extra="forbid")
    field: FieldCode
    menu_position: int = Field(ge=0, le=9, strict=True)


def _desk_id(value: str) -> str:
    if not _ID.match(value) or looks_like_phone(value):
        raise ValueError("a desk id is 1-100 of A-Z a-z 0-9 . _ : - and never a phone number")
    return value


class MappingConfig(BaseModel):
    """The YAML mapping config: queue name → field and menu key; agent (queue member) → desk id."""

    model_config = ConfigDict(extra="forbid")
    queues: dict[str, QueueMapping] = Field(min_length=1)
    desks: dict[str, str] = Field(default_factory=dict)

    @field_validator("desks")
    @classmethod
    def _desks_are_ids(cls, desks: dict[str, str]) -> dict[str, str]:
        for desk in desks.values():
            _desk_id(desk)
        return desks


class ConfigError(ValueError):
    """The mapping config cannot be used; the message names the setting, never a value."""


def load_mapping(text: str) -> MappingConfig:
    """The mapping config from its YAML text."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"the mapping config is not YAML: {type(err).__name__}") from None
    try:
        return MappingConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"the mapping config is not valid: {problems}") from None


# --- lines -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One parsed queue_log line; ``number`` counts lines in its file from 1."""

    number: int
    epoch: str
    at: datetime
    callid: str
    queue: str
    agent: str
    event: str
    data: tuple[str, ...]

    @property
    def of_a_call(self) -> bool:
        return self.callid not in NO_CALL_IDS and self.event not in NO_CALL_EVENTS

    def datum(self, index: int) -> str:
        return self.data[index] if index < len(self.data) else ""


def where(source: str | None, number: int) -> str:
    """``queue_log line 12``: where a report points, by file name and line number."""
    return f"{source} line {number}" if source else f"line {number}"


def parse_line(text: str, number: int, source: str | None = None) -> Line | Unmapped | None:
    """A queue_log line, or why it is not one (``None`` for a blank line)."""
    text = text.rstrip("\r\n")
    if not text.strip():
        return None
    parts = text.split("|")
    here = where(source, number)
    if len(parts) < 5:
        return Unmapped(here, "fewer than 5 fields (epoch|callid|queuename|agent|event)")
    epoch, callid, queue, agent, name = (p.strip() for p in parts[:5])
    if not _EPOCH.match(epoch):
        return Unmapped(here, "the first field is not a UNIX time")
    if not _EVENT_NAME.match(name):
        return Unmapped(here, "the fifth field is not a queue_log event name")
    at = datetime.fromtimestamp(float(epoch), UTC)
    return Line(number, epoch, at, callid, queue, agent, name, tuple(p.strip() for p in parts[5:]))


def seconds(text: str) -> float | None:
    """A duration field (whole or decimal seconds), or None when it is not one."""
    return float(text) if _SECONDS.match(text) else None


def caller_id(text: str) -> str | None:
    """The caller id to send as ``caller_id``: a dialable number, or None when withheld, anonymous or an
    internal extension (intake pseudonymises numbers and refuses anything else)."""
    compact = _CALLER_SEPARATORS.sub("", text)
    return compact if _DIALABLE.match(compact) else None


# --- calls -----------------------------------------------------------------------------------------


@dataclass
class Call:
    """What the mapper remembers of one call between its lines — no raw value of the platform (the key is
    the contact id, a digest; the desk a configured id)."""

    queue_field: str
    last_epoch: float
    ringing_cancelled: bool = False
    desk: str | None = None
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: MappingABC[str, Any]) -> Call:
        return cls(**raw)


@dataclass
class Mapped:
    """What one line gave: events to send, or why it cannot be mapped; ``contact`` is its call's contact id."""

    events: list[dict[str, Any]] = field(default_factory=list)
    unmapped: Unmapped | None = None
    contact: str | None = None


class CallMapper:
    """Maps queue_log lines, in file order, to contract events. Its only state is ``calls`` (contact id →
    Call), which ``asterisk_follow`` keeps in its state file; a line that cannot be mapped changes nothing."""

    def __init__(self, partner: str, mapping: MappingConfig, calls: dict[str, Call] | None = None) -> None:
        self.partner = partner
        self.mapping = mapping
        self.calls: dict[str, Call] = calls if calls is not None else {}

    def map(self, line: Line, source: str | None = None) -> Mapped:
        if not line.of_a_call:
            return Mapped()
        contact = ids.contact_id(PLATFORM, self.partner, line.callid)
        here = where(source, line.number)
        if line.event not in CALL_EVENTS:
            return Mapped(unmapped=Unmapped(here, f"unknown queue_log event {line.event} for a call"),
                          contact=contact)
        mapped = self._apply(line, contact, here)
        if mapped.unmapped is None and (call := self.calls.get(contact)) is not None:
            call.last_epoch = max(call.last_epoch, float(line.epoch))
        return mapped

    def _apply(self, line: Line, contact: str, here: str) -> Mapped:
        call = self.calls.get(contact)
        if line.event in ("ENTERQUEUE", *TURNED_AWAY):
            return self._entered(line, contact, call, here)
        if call is None:
            if line.event in NO_EFFECT_EVENTS:
                return Mapped(contact=contact)
            return Mapped(unmapped=Unmapped(here, f"{line.event} of a call whose ENTERQUEUE is not in the input"),
                          contact=contact)
        if line.event in NO_EFFECT_EVENTS:
            call.ringing_cancelled = line.event == "RINGCANCELED"
            return Mapped(contact=contact)
        if line.event == "CONNECT":
            return self._connected(line, contact, call, here)
        if line.event in LEFT_UNANSWERED:
            return self._left(line, contact, call, here)
        return self._talk_ended(line, contact, call, here)

    def _event(self, short: str, line: Line, contact: str, data: dict[str, Any]) -> dict[str, Any]:
        event_id = ids.event_id(PLATFORM, self.partner, line.callid, short, line.epoch, line.queue, line.event)
        if short == "contact.received":  # once per call, whichever queue it entered first
            event_id = ids.event_id(PLATFORM, self.partner, line.callid, short)
        return event(self.partner, SYSTEM, short, event_id, contact, line.at, {"contact_id": contact, **data})

    def _entered(self, line: Line, contact: str, call: Call | None, here: str) -> Mapped:
        queue = self.mapping.queues.get(line.queue)
        if queue is None:
            return Mapped(unmapped=Unmapped(here, "queue is not in the mapping config (queues:)"), contact=contact)
        events = []
        if call is None:
            caller = caller_id(line.datum(1)) if line.event == "ENTERQUEUE" else None
            received: dict[str, Any] = {"channel": "phone"} if caller is None else {"channel": "phone",
                                                                                  "caller_id": caller}
            events.append(self._event("contact.received", line, contact, received))
        events.append(self._event("contact.field_selected", line, contact,
                                  {"field": queue.field.value, "menu_position": queue.menu_position}))
        call = Call(queue.field.value, float(line.epoch))
        self.calls[contact] = call
        if line.event in TURNED_AWAY:
            call.finished = True
            events.append(self._event("contact.abandoned", line, contact, {"stage": "queue", "wait_seconds": 0.0}))
        return Mapped(events, contact=contact)

    def _desk(self, line: Line, here: str) -> str | Unmapped:
        desk = self.mapping.desks.get(line.agent)
        return desk if desk is not None else Unmapped(here, "agent is not in the mapping config (desks:)")

    def _connected(self, line: Line, contact: str, call: Call, here: str) -> Mapped:
        desk = self._desk(line, here)
        wait = seconds(line.datum(0))
        if isinstance(desk, Unmapped):
            return Mapped(unmapped=desk, contact=contact)
        if wait is None:
            return Mapped(unmapped=Unmapped(here, "CONNECT's holdtime is not a number of seconds"), contact=contact)
        call.desk, call.ringing_cancelled = desk, False
        return Mapped([self._event("contact.answered", line, contact,
                                   {"desk_id": desk, "organisation_id": self.partner, "wait_seconds": wait})],
                      contact=contact)

    def _left(self, line: Line, contact: str, call: Call, here: str) -> Mapped:
        wait = seconds(line.datum(LEFT_UNANSWERED[line.event]))
        if wait is None:
            return Mapped(unmapped=Unmapped(here, f"{line.event}'s waittime is not a number of seconds"),
                          contact=contact)
        stage = "ringing" if line.event == "ABANDON" and call.ringing_cancelled else "queue"
        call.finished, call.ringing_cancelled = True, False
        return Mapped([self._event("contact.abandoned", line, contact, {"stage": stage, "wait_seconds": wait})],
                      contact=contact)

    def _talk_ended(self, line: Line, contact: str, call: Call, here: str) -> Mapped:
        talk = seconds(line.datum(TALK_ENDED[line.event]))
        if talk is None:
            return Mapped(unmapped=Unmapped(here, f"{line.event}'s calltime is not a number of seconds"),
                          contact=contact)
        if call.desk is None:
            return Mapped(unmapped=Unmapped(here, f"{line.event} of a call that was never connected"),
                          contact=contact)
        desk = self.mapping.desks.get(line.agent, call.desk)
        call.finished = True
        return Mapped([self._event("contact.ended", line, contact, {"talk_seconds": talk, "desk_id": desk})],
                      contact=contact)

    def forget_old(self, now_epoch: float) -> None:
        """Drop finished calls past the re-entry window and calls silent for a day (event time)."""
        self.calls = {c: s for c, s in self.calls.items()
                      if now_epoch - s.last_epoch < (KEEP_FINISHED_S if s.finished else KEEP_OPEN_S)}


# --- a whole input ---------------------------------------------------------------------------------


@dataclass
class Batch:
    """A whole input mapped: each line's events in order with its call, and what could not be mapped."""

    lines: int = 0
    entries: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    tainted: set[str] = field(default_factory=set)  # calls with a line that could not be mapped

    @property
    def calls(self) -> int:
        return len({c for c, _ in self.entries if c is not None})

    def events(self, skip_unmappable: bool) -> list[dict[str, Any]]:
        """What may be sent: everything when all lines mapped; with ``skip_unmappable`` only the calls whose
        lines all mapped; otherwise nothing (a file is sent whole or not at all)."""
        if self.unmapped and not skip_unmappable:
            return []
        return [e for c, e in self.entries if c not in self.tainted]


def map_text(lines: list[tuple[str, str]], partner: str, mapping: MappingConfig) -> Batch:
    """Map ``(name, text)`` files, read in order as one stream (e.g. ``queue_log.1`` then ``queue_log``)."""
    mapper = CallMapper(partner, mapping)
    batch = Batch()
    for source, text in lines:
        for number, raw in enumerate(text.splitlines(), start=1):
            parsed = parse_line(raw, number, source)
            if parsed is None:
                continue
            batch.lines += 1
            if isinstance(parsed, Unmapped):
                batch.unmapped.append(parsed)
                continue
            mapped = mapper.map(parsed, source)
            if mapped.unmapped is not None:
                batch.unmapped.append(mapped.unmapped)
                if mapped.contact is not None:
                    batch.tainted.add(mapped.contact)
            batch.entries.extend((mapped.contact, e) for e in mapped.events)
    return batch
