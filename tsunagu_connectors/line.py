"""LINE Messaging API → tsunagu: the partner's receiver for a LINE Official Account's webhook, an SNS
consultation window.

LINE POSTs ``{"destination", "events": [...]}`` (https://developers.line.biz/en/reference/messaging-api/
#webhook-event-objects), signed with ``X-Line-Signature``: base64 HMAC-SHA256 of the raw body keyed by
the channel secret (https://developers.line.biz/en/docs/messaging-api/verify-webhook-signature/).

What maps to what. A person's message opens a chat contact (``contact.received``, channel ``chat`` by
default, no ``caller_id``; and ``contact.field_selected`` when the config names the field this account
serves); their further messages belong to that contact until ``silence_minutes`` pass without one, and
the next message opens a new contact. A screening answer is a ``postback`` event whose ``data`` — a string
the account's own buttons carry, never what the person typed — the config's ``triage.postbacks`` table
maps to a risk code: ``contact.triaged`` for the person's open contact (opening one if none is open).
Postback data missing from the table is left aside and never sent. ``follow`` is not a consultation (left
aside); ``unfollow`` (the person blocked the account) closes the open conversation, so a later message
opens a new contact. Messages in groups and rooms are left aside: a consultation window is one person's.

The webhook never shows the account's side of a conversation: a counsellor's replies go out through the
Messaging API, not the webhook, and LINE has no webhook event for them. The counsellors' console reports
its own moments instead — the first response, a transfer and the end — through
``tsunagu connect line console`` (``line_console.py``), with the same state file. With ``console: true``
the receiver then also reports what only it sees: a person who leaves before any first response
(``contact.abandoned``, stage ``queue``: blocking the account, or a message after ``silence_minutes`` of an
unanswered conversation, which opens a new contact), and a person who blocks the account during an answered
conversation (``contact.ended``). An answered conversation stays open, whatever the silence, until the
console ends it.

Privacy: the LINE user id is personal data. It only enters digests (the contact id, the connector's
state keys); message text is never read, sent or logged, nor is unmapped postback data.

Event ids come from ``webhookEventId``: a redelivered event (``deliveryContext.isRedelivery``) is a
duplicate at intake.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from starlette.applications import Starlette
from starlette.requests import Request

from schemas.codes import RiskLevel
from schemas.timezone import JST
from tsunagu_connectors import ids
from tsunagu_connectors.client import DEFAULT_INTAKE_URL, KEY_ENV, read_secret
from tsunagu_connectors.events import event
from tsunagu_connectors.line_config import PLATFORM as PLATFORM
from tsunagu_connectors.line_config import LineConfig as LineConfig
from tsunagu_connectors.line_config import config_from as config_from
from tsunagu_connectors.line_config import load_config
from tsunagu_connectors.report import Unmapped
from tsunagu_connectors.webhooks import (
    IntakeUrlOption,
    KeyFileOption,
    Mapped,
    Send,
    State,
    check_saved,
    intake_sender,
    send_saved_command,
    serve,
    signatures_match,
    webhook_app,
)

SIGNATURE_HEADER = "X-Line-Signature"
CHANNEL_SECRET_ENV = "LINE_CHANNEL_SECRET"
DEFAULT_PATH = "/line/webhook"


# --- X-Line-Signature ------------------------------------------------------------------------------


def signature(channel_secret: str, body: bytes) -> str:
    """X-Line-Signature of a raw body: base64 of its HMAC-SHA256 keyed by the channel secret."""
    mac = hmac.new(channel_secret.encode("utf-8"), body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def signature_valid(channel_secret: str, body: bytes, given: str) -> bool:
    return signatures_match(signature(channel_secret, body), given)


# --- mapping ---------------------------------------------------------------------------------------


class NotMapped(ValueError):
    """An event the connector cannot map; the message is the reason (never a value of the event)."""


def conversation_key(partner: str, user: str) -> str:
    """The state key of a person's conversation: a digest, the user id itself is never stored."""
    return "line-conversation:" + ids.digest(PLATFORM, partner, user)


def contact_of(partner: str, user: str, opened_ms: int) -> str:
    """The contact id of the person's conversation opened at ``opened_ms`` (a digest of both)."""
    return ids.contact_id(PLATFORM, partner, f"{user}:{opened_ms}")


def handling_key(partner: str, contact: str) -> str:
    """The state key of what the counsellors' console reported about a contact: when it was first
    answered, by which desk, and whether it ended (written by ``line_console``, read here)."""
    return "line-handling:" + ids.digest(PLATFORM, partner, contact)


def time_of(at_ms: int) -> datetime:
    return datetime.fromtimestamp(at_ms / 1000, JST)


@dataclass
class Conversations:
    """The people's open conversations as this body leaves them: the stored state overlaid with this
    body's changes, which are kept only once intake stored the events (``commit``). ``handled`` holds
    the contacts this body ended (the person blocked the account mid-conversation)."""

    state: State
    changed: dict[str, dict[str, Any] | None]
    handled: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self.changed:
            return self.changed[key]
        found: dict[str, Any] | None = self.state.get(key)
        return found

    def handling(self, key: str) -> dict[str, Any] | None:
        if key in self.handled:
            return self.handled[key]
        found: dict[str, Any] | None = self.state.get(key)
        return found

    def commit(self) -> None:
        for key, value in self.changed.items():
            if value is None:
                self.state.delete(key)
            else:
                self.state.put(key, value, value["last_ms"] / 1000)
        for key, value in self.handled.items():
            self.state.put(key, value, value["ended_ms"] / 1000)


def _required(ev: dict[str, Any]) -> tuple[str, int]:
    event_id = ev.get("webhookEventId")
    timestamp = ev.get("timestamp")
    if not isinstance(event_id, str) or not event_id:
        raise NotMapped("no webhookEventId")
    if type(timestamp) is not int or timestamp < 0:
        raise NotMapped("no valid timestamp (milliseconds)")
    return event_id, timestamp


def _user(ev: dict[str, Any]) -> str | None:
    """The person's user id for a one-to-one chat; None for groups and rooms."""
    source = ev.get("source")
    if not isinstance(source, dict):
        raise NotMapped("no source")
    if source.get("type") != "user":
        return None
    user = source.get("userId")
    if not isinstance(user, str) or not user:
        raise NotMapped("no source.userId")
    return user


@dataclass(frozen=True)
class Person:
    """Whose conversation an event is about, and where it is mapped."""

    user: str
    partner: str
    config: LineConfig

    @property
    def key(self) -> str:
        return conversation_key(self.partner, self.user)

    def contact(self, opened_ms: int) -> str:
        return contact_of(self.partner, self.user, opened_ms)

    def event(self, kind: str, native_id: str, suffix: str, contact: str, at_ms: int,
              data: dict[str, Any]) -> dict[str, Any]:
        return event(self.partner, self.config.system, kind, ids.event_id(PLATFORM, self.partner, native_id, suffix),
                     contact, time_of(at_ms), {"contact_id": contact, **data})


def _opened(ev_id: str, at_ms: int, who: Person) -> list[dict[str, Any]]:
    """The events of a person's action that opens a conversation."""
    config = who.config
    contact = who.contact(at_ms)
    data: dict[str, Any] = {"channel": config.channel.value, "caller_id": None}
    if config.region:
        data["region"] = config.region
    out = [who.event("contact.received", ev_id, "received", contact, at_ms, data)]
    if config.field is not None:
        out.append(who.event("contact.field_selected", ev_id, "field", contact, at_ms,
                             {"field": config.field.value, "menu_position": config.menu_position}))
    return out


def _left_unanswered(open_: dict[str, Any], at_ms: int, who: Person) -> dict[str, Any]:
    """The person left before any first response: abandoned while waiting. Its id comes from the
    conversation's opening, so the conversation is abandoned once, whichever event tells it."""
    return who.event("contact.abandoned", open_["opening"], "abandoned", who.contact(open_["opened_ms"]), at_ms,
                     {"stage": "queue", "wait_seconds": max(0, at_ms - open_["opened_ms"]) / 1000})


def _silent_past(open_: dict[str, Any], at_ms: int, config: LineConfig) -> bool:
    last: int = open_["last_ms"]
    return at_ms - last > config.silence_ms


def _conversation_for(ev_id: str, at_ms: int, who: Person, talks: Conversations) -> tuple[str, list[dict[str, Any]]]:
    """The contact a person's message or screening answer belongs to, and the events it leads to: none
    within an open conversation; the opening (after the abandonment of the one the silence closed,
    when the console reports answers) otherwise."""
    open_ = talks.get(who.key)
    if open_ is not None and open_["opening"] == ev_id:  # the opening event again (redelivered)
        return who.contact(open_["opened_ms"]), _opened(ev_id, open_["opened_ms"], who)
    if open_ is not None and _before_the_latest(open_, at_ms, talks, who):
        # a redelivery (or a saved body sent again) of what happened before the latest conversation opened
        # or closed: it belongs to the conversation open at its time, and changes nothing
        return who.contact(max(o for o in openings(open_) if o <= at_ms)), []
    stays, left = (False, []) if open_ is None else _still_open(open_, at_ms, who, talks)
    if open_ is not None and stays:
        talks.changed[who.key] = {**open_, "last_ms": max(open_["last_ms"], at_ms)}
        return who.contact(open_["opened_ms"]), []
    talks.changed[who.key] = {"opening": ev_id, "opened_ms": at_ms, "last_ms": at_ms, "earlier": openings(open_)}
    return who.contact(at_ms), left + _opened(ev_id, at_ms, who)


def _still_open(open_: dict[str, Any], at_ms: int, who: Person,
                talks: Conversations) -> tuple[bool, list[dict[str, Any]]]:
    """Whether the person's latest conversation is still open at ``at_ms``, and, when it is not, what its
    closing says: with the console's answers known, an unanswered conversation the silence closed was
    abandoned; an answered one lasts until the console ends it, whatever the silence."""
    if open_.get("closed"):
        return False, []
    silent = _silent_past(open_, at_ms, who.config)
    if not who.config.console:
        return not silent, []
    handling = talks.handling(handling_key(who.partner, who.contact(open_["opened_ms"])))
    if handling is not None:
        return not handling.get("ended"), []
    if silent:
        return False, [_left_unanswered(open_, open_["last_ms"] + who.config.silence_ms, who)]
    return True, []


def _before_the_latest(open_: dict[str, Any], at_ms: int, talks: Conversations, who: Person) -> bool:
    """Whether an event's time lies before the latest conversation opened, or before it closed (blocked, or
    ended by the console): then it is no new action of the person's."""
    if at_ms < open_["opened_ms"]:
        return any(o <= at_ms for o in openings(open_))
    closed_ms = open_.get("closed_ms")
    if closed_ms is None and who.config.console:
        handling = talks.handling(handling_key(who.partner, who.contact(open_["opened_ms"])))
        closed_ms = (handling or {}).get("ended_ms")
    return closed_ms is not None and at_ms <= closed_ms


# How many of a person's earlier conversations the state remembers (within the retention, a week), so that
# the console's moments find the conversation they belong to by their time, even once a newer one opened.
EARLIER_KEPT = 50


def openings(conversation: dict[str, Any] | None) -> list[int]:
    """When each of the person's conversations opened, oldest first, the latest included."""
    if conversation is None:
        return []
    earlier: list[int] = conversation.get("earlier", [])
    return [*earlier, conversation["opened_ms"]][-EARLIER_KEPT:]


def _message(ev: dict[str, Any], who: Person, talks: Conversations) -> list[dict[str, Any]]:
    ev_id, at_ms = _required(ev)
    return _conversation_for(ev_id, at_ms, who, talks)[1]


def postback_data(ev: dict[str, Any]) -> str | None:
    postback = ev.get("postback")
    data = postback.get("data") if isinstance(postback, dict) else None
    return data if isinstance(data, str) else None


def _screening(ev: dict[str, Any], risk: RiskLevel, who: Person, talks: Conversations) -> list[dict[str, Any]]:
    """A screening answer: the risk its button stands for, for the person's conversation."""
    ev_id, at_ms = _required(ev)
    contact, opened = _conversation_for(ev_id, at_ms, who, talks)
    data: dict[str, Any] = {"risk": risk.value}
    if who.config.triage.instrument is not None:
        data["instrument"] = who.config.triage.instrument
    return [*opened, who.event("contact.triaged", ev_id, "triaged", contact, at_ms, data)]


def _unfollow(ev: dict[str, Any], who: Person, talks: Conversations) -> list[dict[str, Any]]:
    """Blocking the account closes the conversation; with the console's answers known, it is also the
    person leaving: abandoned when no first response came, ended when one did."""
    ev_id, at_ms = _required(ev)
    open_ = talks.get(who.key)
    if open_ is None or open_.get("closed") or at_ms < open_["opened_ms"]:  # nothing open, or a past block
        return []
    # kept, closed: the console's later moments still find the conversation they belong to
    talks.changed[who.key] = {**open_, "closed": True, "closed_ms": at_ms, "last_ms": max(open_["last_ms"], at_ms)}
    if not who.config.console:
        return []
    contact = who.contact(open_["opened_ms"])
    key = handling_key(who.partner, contact)
    handling = talks.handling(key)
    if handling is None:
        silent = _silent_past(open_, at_ms, who.config)
        return [_left_unanswered(open_, open_["last_ms"] + who.config.silence_ms if silent else at_ms, who)]
    if handling.get("ended"):
        return []
    talks.handled[key] = {**handling, "ended": True, "ended_ms": at_ms}
    return [who.event("contact.ended", ev_id, "ended", contact, at_ms, {
        "talk_seconds": max(0, at_ms - handling["answered_ms"]) / 1000, "desk_id": handling["desk"]})]


def _events_of(body: bytes) -> list[Any]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NotMapped("the body is not JSON") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise NotMapped("the body has no events list")
    events: list[Any] = payload["events"]
    return events


def _mapped_event(ev: Any, partner: str, config: LineConfig, talks: Conversations) -> list[dict[str, Any]] | None:
    """One webhook event's tsunagu events; None when it is left aside on purpose."""
    if not isinstance(ev, dict):
        raise NotMapped("not an event object")
    kind = ev.get("type")
    # a postback that is no screening answer of the table is left aside unread
    risk = config.triage.postbacks.get(postback_data(ev) or "") if kind == "postback" else None
    user = _user(ev) if kind in ("message", "unfollow") or risk is not None else None
    if user is None:
        return None
    who = Person(user, partner, config)
    if kind == "message":
        return _message(ev, who, talks) or None
    if kind == "unfollow":
        return _unfollow(ev, who, talks) or None
    return _screening(ev, risk, who, talks) if risk is not None else None


def map_webhook(body: bytes, partner: str, config: LineConfig, state: State) -> Mapped:
    """The events of one webhook body, all or nothing: an event that cannot be mapped refuses the body
    (LINE redelivers it, if redelivery is on, once the config or connector is fixed)."""
    try:
        raw_events = _events_of(body)
    except NotMapped as err:
        return Mapped(unmapped=[Unmapped("body", str(err))])
    out = Mapped()
    talks = Conversations(state, {})
    for index, ev in enumerate(raw_events):
        try:
            sent = _mapped_event(ev, partner, config, talks)
        except NotMapped as err:
            out.unmapped.append(Unmapped(f"event {index}", str(err)))
            continue
        out.events += sent or []
        out.ignored += not sent
    if out.unmapped:
        return Mapped(unmapped=out.unmapped)
    out.commit.append(talks.commit)
    return out


def create_app(config: LineConfig, partner: str, channel_secret: str, send: Send, state: State,
               path: str = DEFAULT_PATH) -> Starlette:
    """The receiver: verifies X-Line-Signature over the raw body, maps, sends. LINE's "Verify" button
    in the console posts an empty events list: answered 200, nothing sent."""

    def verify(request: Request, body: bytes) -> int | None:
        given = request.headers.get(SIGNATURE_HEADER)
        if not given:
            return 401
        return None if signature_valid(channel_secret, body, given) else 403

    def map_body(request: Request, body: bytes) -> Mapped:
        return map_webhook(body, partner, config, state)

    return webhook_app(path, verify, map_body, send)


# --- commands --------------------------------------------------------------------------------------

app = typer.Typer(help="LINE Messaging API → tsunagu: receive a LINE Official Account's webhook, and its "
                       "counsellors' console moments, and send its consultations to intake / LINE の相談窓口を "
                       "tsunagu へ", no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option(
    "--config", exists=True, dir_okay=False,
    help="mapping config (YAML): silence, channel, field, screening table, console and desks")]
PartnerOption = Annotated[str, typer.Option("--partner", help="your organisation id (the key's organisation)")]


@app.command("serve")
def serve_command(
    config: ConfigOption,
    partner: PartnerOption,
    intake_url: IntakeUrlOption = DEFAULT_INTAKE_URL,
    key_file: KeyFileOption = None,
    channel_secret_file: Annotated[Path | None, typer.Option(
        "--channel-secret-file", help=f"the LINE channel secret (or env {CHANNEL_SECRET_ENV})")] = None,
    state_file: Annotated[Path, typer.Option("--state-file", help="SQLite file of open conversations")] = Path(
        "tsunagu-line-state.sqlite3"),
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8092,
    path: Annotated[str, typer.Option("--path", help="the webhook path")] = DEFAULT_PATH,
) -> None:
    """Receive the LINE webhook (set the channel's Webhook URL to this server, behind HTTPS)."""
    cfg = load_config(config)
    key = read_secret(key_file, KEY_ENV, "the partner API key")
    secret = read_secret(channel_secret_file, CHANNEL_SECRET_ENV, "the LINE channel secret")
    serve(create_app(cfg, partner, secret, intake_sender(intake_url, key), State(state_file), path), host, port)


@app.command("check")
def check_command(
    config: ConfigOption,
    partner: PartnerOption,
    bodies: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                 help="webhook bodies (JSON), one per file")],
) -> None:
    """Map webhook bodies as the receiver would and print the events (nothing is sent); exit 1 when one
    cannot be mapped. Conversations carry across the files, in the order given."""
    cfg = load_config(config)
    state = State()
    check_saved(bodies, lambda body: map_webhook(body, partner, cfg, state))


@app.command("send")
def send_command(
    config: ConfigOption,
    partner: PartnerOption,
    bodies: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                 help="webhook bodies (JSON), one per file")],
    intake_url: IntakeUrlOption = DEFAULT_INTAKE_URL,
    key_file: KeyFileOption = None,
    state_file: Annotated[Path | None, typer.Option(
        "--state-file", help="the receiver's SQLite file of conversations (default: none kept)")] = None,
) -> None:
    """Send saved webhook bodies to intake as the receiver would, in the order given: your own saved copies
    of LINE's webhook requests (e.g. from while the receiver was down), so no signature is checked.
    Conversations carry across the files (and into ``--state-file``, the receiver's, when given); sending
    them again answers duplicate. Exit 1 at the first body that cannot be mapped or stored (nothing after
    it is sent)."""
    cfg = load_config(config)
    key = read_secret(key_file, KEY_ENV, "the partner API key")
    state = State() if state_file is None else State(state_file)
    send_saved_command(bodies, lambda body: map_webhook(body, partner, cfg, state), intake_sender(intake_url, key))


@app.command("console")
def console_command(
    config: ConfigOption,
    partner: PartnerOption,
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                help="the console's moments, JSON lines (a file, or /dev/stdin)")],
    state_file: Annotated[Path, typer.Option("--state-file", help="the receiver's SQLite file of conversations")] = (
        Path("tsunagu-line-state.sqlite3")),
    intake_url: IntakeUrlOption = DEFAULT_INTAKE_URL,
    key_file: KeyFileOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="map and print the events; send and keep nothing")] = False,
) -> None:
    """Report the counsellors' console moments — first response, transfer, end — that LINE's webhook never
    shows (line_console.py has the line format). The person's conversation comes from the receiver's state
    file; each file is sent all or nothing, in the order given; sending a line again answers duplicate."""
    from tsunagu_connectors.line_console import map_console  # the console's module builds on this one

    cfg = load_config(config)
    state = State(state_file)
    if dry_run:
        for path in files:
            mapped = map_console(path.read_bytes(), partner, cfg, state)
            for u in mapped.unmapped:
                typer.echo(f"{path.name}: {u}", err=True)
            for e in mapped.events:
                typer.echo(json.dumps(e, ensure_ascii=False))
            if mapped.unmapped:
                raise typer.Exit(1)
        return
    key = read_secret(key_file, KEY_ENV, "the partner API key")
    send_saved_command(files, lambda body: map_console(body, partner, cfg, state), intake_sender(intake_url, key))
