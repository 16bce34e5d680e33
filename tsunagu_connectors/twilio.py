"""Twilio TaskRouter → tsunagu: the partner's receiver for TaskRouter's Event Callbacks.

TaskRouter POSTs one form-encoded callback per event to the Workspace's EventCallbackUrl
(https://www.twilio.com/docs/taskrouter/api/event/reference), signed with ``X-Twilio-Signature``:
base64 HMAC-SHA1, keyed by the account's auth token, of the full URL followed by every POST parameter
sorted by name, name then value (https://www.twilio.com/docs/usage/security#validating-requests).

What maps to what (the rest is answered 200 and left aside — routing's own decisions, worker and
activity changes are not the partner's to report):

- ``task.created`` → ``contact.received`` (caller from the task attributes' ``from`` / ``caller``, only
  on a voice channel), and ``contact.field_selected`` when the config maps the task's workflow;
- ``task-queue.entered`` → ``contact.field_selected`` when the config maps the task queue;
- ``reservation.accepted`` → ``contact.answered`` (desk from the worker, wait = the task's age);
- ``task.canceled`` → ``contact.abandoned`` (stage ``queue``, wait = the task's age);
- ``task.wrapup`` (or ``task.completed``, per ``ended_on``) → ``contact.ended``, talk = the task's age
  at the end less its age when it was answered.

Channels: the task's ``TaskChannelUniqueName`` through the config's ``channels`` (default ``voice`` and
``default`` → ``phone``, ``chat`` and ``sms`` → ``chat``; a partner's own TaskChannel, e.g. one for LINE,
may map to ``sns``). A chat task is a chat contact with no caller id, routed, answered, abandoned and
ended by the same callbacks as a call. TaskRouter has no event for a counsellor's first message: a chat
is answered when the worker accepts its reservation (Flex opens the conversation then), so its wait is the
time to acceptance — at most the time to the first response.

Event ids come from the callback's own event SID when it carries one, else from TaskSid + EventType +
Timestamp: Twilio's retries of a callback are duplicates at intake.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

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

PLATFORM = "twilio"
SIGNATURE_HEADER = "X-Twilio-Signature"
AUTH_TOKEN_ENV = "TWILIO_AUTH_TOKEN"
DEFAULT_PATH = "/twilio/taskrouter"
DEFAULT_CHANNELS = {"voice": "phone", "default": "phone", "chat": "chat", "sms": "chat"}
ENDED_ON = ("task.wrapup", "task.completed")
# The numbers Twilio puts in ``From`` when the caller withheld theirs (anonymous, unknown, blocked,
# unavailable, restricted): not a caller to pseudonymise.
WITHHELD = {"anonymous", "+266696687", "+86282452253", "+8656696", "+2562533", "+7378742833"}


# --- X-Twilio-Signature ----------------------------------------------------------------------------


def signed_text(url: str, params: list[tuple[str, str]]) -> str:
    """What Twilio signs: the URL, then each parameter name followed by its value, names sorted (and a
    repeated name's values sorted), with nothing between them."""
    text = url
    for name in sorted({n for n, _ in params}):
        for value in sorted({v for n, v in params if n == name}):
            text += name + value
    return text


def signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """X-Twilio-Signature for a POST to ``url`` with form ``params``."""
    mac = hmac.new(auth_token.encode("utf-8"), signed_text(url, params).encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def url_variants(url: str) -> list[str]:
    """The URL as given, and with its scheme's default port written or left out: Twilio signs the URL as
    configured, and whether it names :443 (or :80) is a matter of spelling. Another port must match."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    default = {"https": 443, "http": 80}.get(parts.scheme)
    if default is None or parts.port not in (None, default):
        return [url]
    without = urlunsplit(parts._replace(netloc=host))
    with_port = urlunsplit(parts._replace(netloc=f"{host}:{default}"))
    return list(dict.fromkeys([url, without, with_port]))


def signature_valid(auth_token: str, url: str, params: list[tuple[str, str]], given: str) -> bool:
    return any(signatures_match(signature(auth_token, u, params), given) for u in url_variants(url))


# --- the mapping config ----------------------------------------------------------------------------


def _default_channels() -> dict[str, Channel]:
    return {name: code_of(Channel, code, "channels") for name, code in DEFAULT_CHANNELS.items()}


@dataclass(frozen=True)
class FieldRule:
    field: FieldCode
    menu_position: int = 0


@dataclass(frozen=True)
class TwilioConfig:
    """The partner's mapping: workflows or task queues (SID or friendly name) to a field, workers (SID)
    to desk ids, TaskRouter channels to tsunagu's, and the public URL Twilio signs."""

    workflows: dict[str, FieldRule] = field(default_factory=dict)
    queues: dict[str, FieldRule] = field(default_factory=dict)
    workers: dict[str, str] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=_default_channels)
    ended_on: str = "task.wrapup"
    region: str | None = None
    public_url: str | None = None
    system: str = PLATFORM


def _rules(raw: Any, where: str) -> dict[str, FieldRule]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must map a SID or name to {{field, menu_position}}")
    rules = {}
    for key, rule in raw.items():
        spec = rule if isinstance(rule, dict) else {"field": rule}
        position = spec.get("menu_position", 0)
        if type(position) is not int or not 0 <= position <= 9:
            raise ValueError(f"{where}.{key}.menu_position: 0-9")
        rules[str(key)] = FieldRule(code_of(FieldCode, spec.get("field"), f"{where}.{key}.field"), position)
    return rules


def config_from(raw: dict[str, Any]) -> TwilioConfig:
    """The config from its YAML form (see samples/twilio/mapping.yaml); refuses unknown codes early."""
    channels = _default_channels()
    for name, code in (raw.get("channels") or {}).items():
        channels[str(name)] = code_of(Channel, code, f"channels.{name}")
    ended_on = str(raw.get("ended_on", "task.wrapup"))
    if ended_on not in ENDED_ON:
        raise ValueError(f"ended_on: one of {list(ENDED_ON)}")
    workers = {str(k): str(v) for k, v in (raw.get("workers") or {}).items()}
    region = raw.get("region")
    return TwilioConfig(workflows=_rules(raw.get("workflows"), "workflows"), queues=_rules(raw.get("queues"), "queues"),
                        workers=workers, channels=channels, ended_on=ended_on,
                        region=None if region is None else str(region), public_url=raw.get("public_url"),
                        system=str(raw.get("system", PLATFORM)))


def load_config(path: Path) -> TwilioConfig:
    return config_from(load_yaml(path))


# --- mapping ---------------------------------------------------------------------------------------


class NotMapped(ValueError):
    """A callback the connector cannot map; the message is the reason (never a value of the callback)."""


def event_time(params: dict[str, str]) -> datetime:
    """The callback's event time: ``TimestampMs`` when present (added 2018), else ``Timestamp`` (epoch
    seconds)."""
    try:
        if params.get("TimestampMs"):
            return datetime.fromtimestamp(int(params["TimestampMs"]) / 1000, JST)
        return datetime.fromtimestamp(float(params["Timestamp"]), JST)
    except (KeyError, ValueError, OverflowError, OSError) as err:
        raise NotMapped("no valid Timestamp") from err


def _seconds(params: dict[str, str], name: str) -> float:
    try:
        value = float(params[name])
    except (KeyError, ValueError) as err:
        raise NotMapped(f"no valid {name}") from err
    if not value >= 0 or value == float("inf"):
        raise NotMapped(f"no valid {name}")
    return value


def _attributes(params: dict[str, str]) -> dict[str, Any]:
    try:
        attributes = json.loads(params.get("TaskAttributes") or "{}")
    except json.JSONDecodeError as err:
        raise NotMapped("TaskAttributes is not JSON") from err
    if not isinstance(attributes, dict):
        raise NotMapped("TaskAttributes is not a JSON object")
    return attributes


def _rule(rules: dict[str, FieldRule], *keys: str | None) -> FieldRule | None:
    return next((rules[k] for k in keys if k and k in rules), None)


def caller_of(attributes: dict[str, Any], channel: Channel) -> str | None:
    """The caller's number for intake to pseudonymise: a voice task's ``from`` (or ``caller``); none for
    other channels (a chat task's ``from`` is a name or handle) or when the number was withheld."""
    if channel is not Channel.phone:
        return None
    caller = attributes.get("from", attributes.get("caller"))
    if not isinstance(caller, str) or not caller.strip() or caller.strip().lower() in WITHHELD:
        return None
    return caller.strip()[:64]


@dataclass(frozen=True)
class Callback:
    """One TaskRouter callback, with what every mapping needs resolved."""

    params: dict[str, str]
    partner: str
    config: TwilioConfig

    @property
    def type(self) -> str:
        return self.params.get("EventType", "")

    @property
    def task(self) -> str:
        sid = self.params.get("TaskSid", "")
        if not sid:
            raise NotMapped("no TaskSid")
        return sid

    @property
    def contact_id(self) -> str:
        return ids.contact_id(PLATFORM, self.partner, self.task)

    def event_id(self, short_type: str) -> str:
        own = self.params.get("EventSid") or self.params.get("Sid")
        at = self.params.get("TimestampMs") or self.params.get("Timestamp", "")
        native = [own] if own else [self.task, self.type, at]
        return ids.event_id(PLATFORM, self.partner, *native, short_type)

    def event(self, short_type: str, data: dict[str, Any]) -> dict[str, Any]:
        return event(self.partner, self.config.system, short_type, self.event_id(short_type), self.contact_id,
                     event_time(self.params), {"contact_id": self.contact_id, **data})

    def field_selected(self, rule: FieldRule) -> dict[str, Any]:
        return self.event("contact.field_selected", {"field": rule.field.value, "menu_position": rule.menu_position})


def accepted_key(partner: str, task: str) -> str:
    return "twilio-accepted:" + ids.digest(PLATFORM, partner, task)


def _received(cb: Callback, out: Mapped) -> None:
    attributes = _attributes(cb.params)
    name = cb.params.get("TaskChannelUniqueName") or "default"
    channel = cb.config.channels.get(name)
    if channel is None:
        raise NotMapped(f"task channel {name!r} is not in the config's channels")
    data: dict[str, Any] = {"channel": channel.value, "caller_id": caller_of(attributes, channel)}
    if cb.config.region:
        data["region"] = cb.config.region
    out.events.append(cb.event("contact.received", data))
    rule = _rule(cb.config.workflows, cb.params.get("WorkflowSid"), cb.params.get("WorkflowName"))
    if rule is not None:
        out.events.append(cb.field_selected(rule))


def _queue_entered(cb: Callback, out: Mapped) -> None:
    rule = _rule(cb.config.queues, cb.params.get("TaskQueueSid"), cb.params.get("TaskQueueName"))
    if rule is None:
        out.ignored += 1
        return
    out.events.append(cb.field_selected(rule))


def _answered(cb: Callback, out: Mapped, state: State) -> None:
    worker = cb.params.get("WorkerSid", "")
    desk = cb.config.workers.get(worker)
    if desk is None:
        raise NotMapped("the worker is not in the config's workers" if worker else "no WorkerSid")
    wait = _seconds(cb.params, "TaskAge")
    out.events.append(cb.event("contact.answered", {"desk_id": desk, "organisation_id": cb.partner,
                                                    "wait_seconds": wait}))
    key, at = accepted_key(cb.partner, cb.task), event_time(cb.params).timestamp()
    out.commit.append(lambda: state.put(key, {"age": wait, "desk": desk}, at))


def _abandoned(cb: Callback, out: Mapped) -> None:
    out.events.append(cb.event("contact.abandoned", {"stage": "queue", "wait_seconds": _seconds(cb.params, "TaskAge")}))


def _ended(cb: Callback, out: Mapped, state: State) -> None:
    age = _seconds(cb.params, "TaskAge")
    accepted = state.get(accepted_key(cb.partner, cb.task))
    # Unanswered (or answered while the connector's state was lost): no talk time to report.
    talk = max(0.0, age - float(accepted["age"])) if accepted else 0.0
    data: dict[str, Any] = {"talk_seconds": round(talk, 3)}
    if accepted:
        data["desk_id"] = accepted["desk"]
    out.events.append(cb.event("contact.ended", data))


def map_callback(params: dict[str, str], partner: str, config: TwilioConfig, state: State) -> Mapped:
    """The events of one callback (pure but for reading ``state``; its writes wait in ``commit``)."""
    cb = Callback(params, partner, config)
    out = Mapped()
    try:
        if cb.type == "task.created":
            _received(cb, out)
        elif cb.type == "task-queue.entered":
            _queue_entered(cb, out)
        elif cb.type == "reservation.accepted":
            _answered(cb, out, state)
        elif cb.type == "task.canceled":
            _abandoned(cb, out)
        elif cb.type == config.ended_on:
            _ended(cb, out, state)
        else:
            out.ignored += 1
    except NotMapped as err:
        return Mapped(unmapped=[Unmapped(f"callback {cb.type or '(no EventType)'}", str(err))])
    return out


def form_params(body: bytes) -> list[tuple[str, str]]:
    """The callback's form parameters, blank values kept (they are signed too)."""
    return parse_qsl(body.decode("utf-8", errors="strict"), keep_blank_values=True)


def create_app(config: TwilioConfig, partner: str, auth_token: str, send: Send, state: State,
               path: str = DEFAULT_PATH) -> Starlette:
    """The receiver: verifies X-Twilio-Signature against ``public_url`` (the URL as configured in
    Twilio; behind a proxy the URL the app sees differs), maps, sends."""

    def verify(request: Request, body: bytes) -> int | None:
        given = request.headers.get(SIGNATURE_HEADER)
        if not given:
            return 401
        try:
            params = form_params(body)
        except UnicodeDecodeError:
            return 403
        url = config.public_url or str(request.url)
        return None if signature_valid(auth_token, url, params, given) else 403

    def map_body(request: Request, body: bytes) -> Mapped:
        return map_callback(dict(form_params(body)), partner, config, state)

    return webhook_app(path, verify, map_body, send)


def redacted(e: dict[str, Any]) -> dict[str, Any]:
    """An event as printed for a person: a caller number is shown as set, never itself."""
    if e["data"].get("caller_id") is None:
        return e
    return {**e, "data": {**e["data"], "caller_id": "(set: intake pseudonymises it)"}}


# --- commands --------------------------------------------------------------------------------------

app = typer.Typer(help="Twilio TaskRouter → tsunagu: receive TaskRouter's event callbacks and send them to "
                       "intake / TaskRouter のイベントを tsunagu へ", no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option("--config", exists=True, dir_okay=False,
                                            help="mapping config (YAML): workflows/queues → fields, workers → desks")]
PartnerOption = Annotated[str, typer.Option("--partner", help="your organisation id (the key's organisation)")]


@app.command("serve")
def serve_command(
    config: ConfigOption,
    partner: PartnerOption,
    intake_url: IntakeUrlOption = DEFAULT_INTAKE_URL,
    key_file: KeyFileOption = None,
    auth_token_file: Annotated[Path | None, typer.Option(
        "--auth-token-file", help=f"Twilio auth token (or env {AUTH_TOKEN_ENV})")] = None,
    state_file: Annotated[Path, typer.Option("--state-file", help="SQLite file of answered tasks")] = Path(
        "tsunagu-twilio-state.sqlite3"),
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8091,
    path: Annotated[str, typer.Option("--path", help="the callback path")] = DEFAULT_PATH,
) -> None:
    """Receive TaskRouter's Event Callbacks (set the Workspace's EventCallbackUrl to this server)."""
    cfg = load_config(config)
    key = read_secret(key_file, KEY_ENV, "the partner API key")
    token = read_secret(auth_token_file, AUTH_TOKEN_ENV, "the Twilio auth token")
    serve(create_app(cfg, partner, token, intake_sender(intake_url, key), State(state_file), path), host, port)


@app.command("check")
def check_command(
    config: ConfigOption,
    partner: PartnerOption,
    callbacks: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                    help="form-encoded callback bodies, one per file")],
) -> None:
    """Map callback bodies as the receiver would and print the events (nothing is sent); exit 1 when one
    cannot be mapped. Answered tasks are remembered across the files, in the order given."""
    cfg = load_config(config)
    state = State()
    check_saved(callbacks, lambda body: map_callback(dict(form_params(body)), partner, cfg, state), redacted)


@app.command("send")
def send_command(
    config: ConfigOption,
    partner: PartnerOption,
    callbacks: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                    help="form-encoded callback bodies, one per file")],
    intake_url: IntakeUrlOption = DEFAULT_INTAKE_URL,
    key_file: KeyFileOption = None,
) -> None:
    """Send saved callback bodies to intake as the receiver would, in the order given: your own saved
    copies of TaskRouter's callbacks (e.g. from while the receiver was down), so no signature is checked.
    Sending them again answers duplicate. Exit 1 at the first that cannot be mapped or stored (nothing
    after it is sent)."""
    cfg = load_config(config)
    key = read_secret(key_file, KEY_ENV, "the partner API key")
    state = State()
    send_saved_command(callbacks, lambda body: map_callback(dict(form_params(body)), partner, cfg, state),
                       intake_sender(intake_url, key))
