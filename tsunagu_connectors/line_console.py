"""The counsellors' console → tsunagu: the moments of a LINE conversation that LINE's webhook never shows.

A counsellor answers a LINE consultation from the partner's own console (LINE Official Account Manager's
chat, or a case system that calls the Messaging API). The webhook carries only the person's side, so the
console reports its own moments, one JSON object a line, to ``tsunagu connect line console``:

    {"id": "<the console's id of this moment>", "moment": "answered" | "transferred" | "ended",
     "time": "<ISO 8601 with offset>", "user": "<the person's LINE user id>", "desk": "<console desk name>",
     "to_desk": "<console desk name>", "to_field": "<field code>", "to_channel": "phone" | "chat" | "sns"}

- ``answered``: the desk's first response (初回応答) → ``contact.answered``; wait = the time from the
  conversation's opening (the person's first message) to it. After a transfer the desk taking the contact
  reports its own first response: metrics keep the earliest.
- ``transferred``: the desk hands the conversation on (``to_desk`` and/or ``to_field``, optionally
  ``to_channel``, e.g. to a phone desk) → ``contact.transferred``; routing acts on it only while
  ``desk`` holds the contact.
- ``ended``: the desk closes the conversation → ``contact.ended``; talk = end − first response. The
  person's next message opens a new contact.

The person's conversation is found in the receiver's state file (``--state-file``, shared with ``line
serve``): the contact is the conversation open for that user. The user id only enters digests; desk names
go through the config's ``desks`` table to tsunagu desk ids (a counsellor's name never goes into an event).
Event ids come from the console's own ``id``: sending a line again is a duplicate. A file with a line that
cannot be mapped sends nothing (each reason names the line, never its content).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.codes import Channel, FieldCode
from tsunagu_connectors import ids
from tsunagu_connectors.events import event
from tsunagu_connectors.line import NotMapped, contact_of, conversation_key, handling_key, openings
from tsunagu_connectors.line_config import PLATFORM, LineConfig
from tsunagu_connectors.report import Unmapped
from tsunagu_connectors.webhooks import Mapped, State, code_of

MOMENTS = ("answered", "transferred", "ended")


@dataclass
class Handled:
    """What the console reported about contacts, as this file leaves it (kept once intake stored it)."""

    state: State
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self.changed:
            return self.changed[key]
        found: dict[str, Any] | None = self.state.get(key)
        return found

    def commit(self) -> None:
        for key, value in self.changed.items():
            self.state.put(key, value, value["at_ms"] / 1000)


@dataclass(frozen=True)
class Moment:
    """One console line, read and checked."""

    id: str
    kind: str
    at: datetime
    user: str
    desk: str  # tsunagu's desk id

    @property
    def at_ms(self) -> int:
        return int(self.at.timestamp() * 1000)


def _text(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise NotMapped(f"no {name}")
    return value


def _desk(config: LineConfig, name: str, what: str) -> str:
    desk = config.desks.get(name)
    if desk is None:
        raise NotMapped(f"{what} is not in the config's desks")
    return desk


def moment_of(raw: Any, config: LineConfig) -> Moment:
    if not isinstance(raw, dict):
        raise NotMapped("not a JSON object")
    kind = raw.get("moment")
    if kind not in MOMENTS:
        raise NotMapped(f"moment: one of {list(MOMENTS)}")
    try:
        at = datetime.fromisoformat(_text(raw, "time"))
    except ValueError:
        raise NotMapped("time is not ISO 8601") from None
    if at.utcoffset() is None:
        raise NotMapped("time carries no UTC offset")
    return Moment(_text(raw, "id"), kind, at, _text(raw, "user"), _desk(config, _text(raw, "desk"), "desk"))


@dataclass(frozen=True)
class Console:
    partner: str
    config: LineConfig

    def event(self, kind: str, m: Moment, contact: str, data: dict[str, Any]) -> dict[str, Any]:
        return event(self.partner, self.config.system, kind, ids.event_id(PLATFORM, self.partner, "console", m.id),
                     contact, m.at, {"contact_id": contact, **data})


def _conversation(m: Moment, console: Console, state: State) -> tuple[str, int]:
    """The person's conversation the moment belongs to — the latest opened at or before its time, so that
    a file sent again finds the same one after newer conversations opened — and when it opened."""
    known = state.get(conversation_key(console.partner, m.user))
    if known is None:
        raise NotMapped("the person has no open conversation (their message has not reached the receiver)")
    before = [opened for opened in openings(known) if opened <= m.at_ms]
    if not before:
        raise NotMapped("time is before the person's conversation opened")
    return contact_of(console.partner, m.user, before[-1]), before[-1]


def _answered(m: Moment, console: Console, state: State, handled: Handled) -> list[dict[str, Any]]:
    contact, opened_ms = _conversation(m, console, state)
    key = handling_key(console.partner, contact)
    before = handled.get(key)
    if before is not None and before.get("ended") and m.at_ms > before["ended_ms"]:
        raise NotMapped("the conversation had ended: the person's next message opens a new one")
    if before is None or not before.get("ended"):
        first = m.at_ms if before is None else min(before["answered_ms"], m.at_ms)
        handled.changed[key] = {"answered_ms": first, "desk": m.desk, "ended": False, "at_ms": m.at_ms}
    return [console.event("contact.answered", m, contact, {
        "desk_id": m.desk, "organisation_id": console.partner, "wait_seconds": (m.at_ms - opened_ms) / 1000})]


def _transferred(raw: dict[str, Any], m: Moment, console: Console, state: State,
                 handled: Handled) -> list[dict[str, Any]]:
    contact, _ = _conversation(m, console, state)
    before = handled.get(handling_key(console.partner, contact))
    if before is not None and before.get("ended") and m.at_ms > before["ended_ms"]:
        raise NotMapped("the conversation had ended")
    data: dict[str, Any] = {"from_desk_id": m.desk}
    if raw.get("to_desk") is not None:
        data["to_desk_id"] = _desk(console.config, str(raw["to_desk"]), "to_desk")
    if raw.get("to_field") is not None:
        data["to_field"] = code_of(FieldCode, raw["to_field"], "to_field").value
    if raw.get("to_channel") is not None:
        data["to_channel"] = code_of(Channel, raw["to_channel"], "to_channel").value
    if "to_desk_id" not in data and "to_field" not in data:
        raise NotMapped("a transfer names to_desk or to_field")
    return [console.event("contact.transferred", m, contact, data)]


def _ended(m: Moment, console: Console, state: State, handled: Handled) -> list[dict[str, Any]]:
    contact, _ = _conversation(m, console, state)
    key = handling_key(console.partner, contact)
    before = handled.get(key)
    if before is None:
        raise NotMapped("ended before any first response (answered): a person who leaves unanswered is the "
                        "receiver's to report")
    own_id = ids.event_id(PLATFORM, console.partner, "console", m.id)
    if before.get("ended") and before.get("ended_by") != own_id:
        return []  # already ended (the person blocked the account first): nothing more to say
    if m.at_ms < before["answered_ms"]:
        raise NotMapped("time is before the first response")
    handled.changed[key] = {**before, "ended": True, "ended_ms": m.at_ms, "ended_by": own_id,
                            "at_ms": max(before["at_ms"], m.at_ms)}
    return [console.event("contact.ended", m, contact, {
        "talk_seconds": (m.at_ms - before["answered_ms"]) / 1000, "desk_id": m.desk})]


def _events_of_line(raw: Any, console: Console, state: State, handled: Handled) -> list[dict[str, Any]]:
    m = moment_of(raw, console.config)
    if m.kind == "answered":
        return _answered(m, console, state, handled)
    if m.kind == "transferred":
        return _transferred(raw, m, console, state, handled)
    return _ended(m, console, state, handled)


def map_console(body: bytes, partner: str, config: LineConfig, state: State) -> Mapped:
    """The events of a console file (JSON lines), all or nothing, in the order written."""
    try:
        lines = body.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return Mapped(unmapped=[Unmapped("body", "not UTF-8 text")])
    out = Mapped()
    console = Console(partner, config)
    handled = Handled(state)
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            try:
                raw = json.loads(text)
            except json.JSONDecodeError:
                raise NotMapped("not JSON") from None
            sent = _events_of_line(raw, console, state, handled)
        except (NotMapped, ValueError) as err:
            out.unmapped.append(Unmapped(f"line {n}", str(err)))
            continue
        out.events += sent
        out.ignored += not sent
    if out.unmapped:
        return Mapped(unmapped=out.unmapped)
    out.commit.append(handled.commit)
    return out
