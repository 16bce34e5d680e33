"""LINE Messaging API → tsunagu: the partner's receiver for a LINE Official Account's webhook, an SNS
consultation window.

LINE POSTs ``{"destination", "events": [...]}`` (https://developers.line.biz/en/reference/messaging-api/
#webhook-event-objects), signed with ``X-Line-Signature``: base64 HMAC-SHA256 of the raw body keyed by
the channel secret (https://developers.line.biz/en/docs/messaging-api/verify-webhook-signature/).

What maps to what. A person's message opens a chat contact (``contact.received``, channel ``chat`` by
default, no ``caller_id``; and ``contact.field_selected`` when the config names the field this account
serves); their further messages belong to that contact until ``silence_minutes`` pass without one, and
the next message opens a new contact. Nothing else is sent: the webhook never says when a counsellor
replies (replies go out through the Messaging API, not the webhook), and chat routing — which would
report answers and ends — needs a channel model tsunagu does not have yet. ``follow`` is not a
consultation (left aside); ``unfollow`` (the person blocked the account) closes the open conversation, so
a later message opens a new contact. Messages in groups and rooms are left aside: a consultation window
is one person's.

Privacy: the LINE user id is personal data. It only enters digests (the contact id, the connector's
state keys); message text is never read, sent or logged.

Event ids come from ``webhookEventId``: a redelivered event (``deliveryContext.isRedelivery``) is a
duplicate at intake.
"""

from __future__ import annotations

import base64
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

from schemas.codes import Channel, FieldCode
from schemas.timezone import JST
from tsunagu_connectors import ids
from tsunagu_connectors.client import DEFAULT_INTAKE_URL, KEY_ENV, read_secret
from tsunagu_connectors.events import event
from tsunagu_connectors.report import Unmapped
from tsunagu_connectors.webhooks import (
    IntakeUrlOption,
    KeyFileOption,
    Mapped,
    Send,
    State,
    check_saved,
    code_of,
    intake_sender,
    load_yaml,
    send_saved_command,
    serve,
    signatures_match,
    webhook_app,
)

PLATFORM = "line"
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


# --- the mapping config ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LineConfig:
    """The partner's mapping: how long a silence ends a conversation, the channel code, and the field
    this LINE account serves (when it serves one)."""

    silence_minutes: float = 30.0
    channel: Channel = Channel.chat
    field: FieldCode | None = None
    menu_position: int = 0
    region: str | None = None
    system: str = PLATFORM

    @property
    def silence_ms(self) -> int:
        return int(self.silence_minutes * 60_000)


def config_from(raw: dict[str, Any]) -> LineConfig:
    """The config from its YAML form (see samples/line/mapping.yaml); refuses unknown codes early."""
    try:
        silence = float(raw.get("silence_minutes", 30))
        if not silence > 0:
            raise ValueError
    except (TypeError, ValueError) as err:
        raise ValueError("silence_minutes: a positive number of minutes") from err
    channel = code_of(Channel, raw.get("channel", "chat"), "channel")
    field = None if raw.get("field") is None else code_of(FieldCode, raw["field"], "field")
    position = raw.get("menu_position", 0)
    if not isinstance(position, int) or not 0 <= position <= 9:
        raise ValueError("menu_position: 0-9")
    region = raw.get("region")
    return LineConfig(silence_minutes=silence, channel=channel, field=field, menu_position=position,
                      region=None if region is None else str(region), system=str(raw.get("system", PLATFORM)))


def load_config(path: Path) -> LineConfig:
    return config_from(load_yaml(path))


# --- mapping ---------------------------------------------------------------------------------------


class NotMapped(ValueError):
    """An event the connector cannot map; the message is the reason (never a value of the event)."""


def conversation_key(partner: str, user_id: str) -> str:
    """The state key of a person's conversation: a digest, the user id itself is never stored."""
    return "line-conversation:" + ids.digest(PLATFORM, partner, user_id)


@dataclass
class Conversations:
    """The people's open conversations as this body leaves them: the stored state overlaid with this
    body's changes, which are kept only once intake stored the events (``commit``)."""

    state: State
    changed: dict[str, dict[str, Any] | None]

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self.changed:
            return self.changed[key]
        found: dict[str, Any] | None = self.state.get(key)
        return found

    def commit(self) -> None:
        for key, value in self.changed.items():
            if value is None:
                self.state.delete(key)
            else:
                self.state.put(key, value, value["last_ms"] / 1000)


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


def _opened(ev_id: str, at_ms: int, user: str, partner: str, config: LineConfig) -> list[dict[str, Any]]:
    """The events of a message that opens a conversation."""
    contact = ids.contact_id(PLATFORM, partner, f"{user}:{at_ms}")
    at = datetime.fromtimestamp(at_ms / 1000, JST)
    data: dict[str, Any] = {"contact_id": contact, "channel": config.channel.value, "caller_id": None}
    if config.region:
        data["region"] = config.region
    out = [event(partner, config.system, "contact.received", ids.event_id(PLATFORM, partner, ev_id, "received"),
                 contact, at, data)]
    if config.field is not None:
        out.append(event(partner, config.system, "contact.field_selected",
                         ids.event_id(PLATFORM, partner, ev_id, "field"), contact, at,
                         {"contact_id": contact, "field": config.field.value, "menu_position": config.menu_position}))
    return out


def _message(ev: dict[str, Any], user: str, partner: str, config: LineConfig,
             talks: Conversations) -> list[dict[str, Any]]:
    ev_id, at_ms = _required(ev)
    key = conversation_key(partner, user)
    open_ = talks.get(key)
    if open_ is not None and open_["opening"] == ev_id:  # the opening message again (redelivered)
        return _opened(ev_id, open_["opened_ms"], user, partner, config)
    if open_ is None or at_ms - open_["last_ms"] > config.silence_ms:
        talks.changed[key] = {"opening": ev_id, "opened_ms": at_ms, "last_ms": at_ms}
        return _opened(ev_id, at_ms, user, partner, config)
    talks.changed[key] = {**open_, "last_ms": max(open_["last_ms"], at_ms)}
    return []


def _events_of(body: bytes) -> list[Any]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NotMapped("the body is not JSON") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise NotMapped("the body has no events list")
    events: list[Any] = payload["events"]
    return events


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
            if not isinstance(ev, dict):
                raise NotMapped("not an event object")
            kind = ev.get("type")
            user = _user(ev) if kind in ("message", "unfollow") else None
            if kind == "message" and user is not None:
                sent = _message(ev, user, partner, config, talks)
                out.events += sent
                out.ignored += not sent
            elif kind == "unfollow" and user is not None:
                _required(ev)
                talks.changed[conversation_key(partner, user)] = None
                out.ignored += 1
            else:
                out.ignored += 1
        except NotMapped as err:
            out.unmapped.append(Unmapped(f"event {index}", str(err)))
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

app = typer.Typer(help="LINE Messaging API → tsunagu: receive a LINE Official Account's webhook and send "
                       "its consultations to intake / LINE の相談窓口を tsunagu へ", no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option("--config", exists=True, dir_okay=False,
                                            help="mapping config (YAML): silence, channel, field")]
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
) -> None:
    """Send saved webhook bodies to intake as the receiver would, in the order given: your own saved copies
    of LINE's webhook requests (e.g. from while the receiver was down), so no signature is checked.
    Conversations carry across the files; sending them again answers duplicate. Exit 1 at the first body
    that cannot be mapped or stored (nothing after it is sent)."""
    cfg = load_config(config)
    key = read_secret(key_file, KEY_ENV, "the partner API key")
    state = State()
    send_saved_command(bodies, lambda body: map_webhook(body, partner, cfg, state), intake_sender(intake_url, key))
