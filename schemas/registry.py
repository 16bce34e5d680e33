"""Every event type tsunagu knows, and the one function that checks an incoming event.

``validate_event`` is on intake's hot path: the models' validators are built once at import
and nothing here creates models per call. Problems never repeat input values — a field can
hold a phone number — only where the problem is and what is expected.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from schemas import events as ev
from schemas.envelope import CloudEvent, looks_like_phone

Producer = Literal["partner", "routing", "referral"]
Form = Literal["ingress", "canonical"]

PREFIX = "jp.tsunagu."
VERSION = "v1"


@dataclass(frozen=True)
class EventType:
    type: str  # jp.tsunagu.contact.received.v1
    short: str  # contact.received
    # builtins.type: the field ``type`` above shadows the builtin in the class body
    data_model: builtins.type[BaseModel]  # canonical data, as intake publishes it
    ingress_model: builtins.type[BaseModel]  # what partners send; differs only for contact.received
    topic: str  # short topic name, e.g. contact.events (full name: "tsunagu." + topic)
    key_field: str  # the data field that is the Kafka key and the subject
    producer: Producer
    label_ja: str
    label_en: str

    def model_for(self, form: Form) -> builtins.type[BaseModel]:
        return self.ingress_model if form == "ingress" else self.data_model


_C, _R, _Q, _F = "contact.events", "routing.decisions", "consultation.events", "referral.events"

# short type, data model, topic, key field, producer
_TABLE: tuple[tuple[str, type[BaseModel], str, str, Producer], ...] = (
    ("contact.received", ev.ContactReceived, _C, "contact_id", "partner"),
    ("contact.field_selected", ev.ContactFieldSelected, _C, "contact_id", "partner"),
    ("contact.answered", ev.ContactAnswered, _C, "contact_id", "partner"),
    ("contact.abandoned", ev.ContactAbandoned, _C, "contact_id", "partner"),
    ("contact.ended", ev.ContactEnded, _C, "contact_id", "partner"),
    ("contact.triaged", ev.ContactTriaged, _C, "contact_id", "partner"),
    ("contact.transferred", ev.ContactTransferred, _C, "contact_id", "partner"),
    ("platform.heartbeat", ev.PlatformHeartbeat, _C, "platform_id", "partner"),
    ("routing.assigned", ev.RoutingAssigned, _R, "contact_id", "routing"),
    ("routing.queued", ev.RoutingQueued, _R, "contact_id", "routing"),
    ("routing.overflowed", ev.RoutingOverflowed, _R, "contact_id", "routing"),
    ("routing.withdrawn", ev.RoutingWithdrawn, _R, "contact_id", "routing"),
    ("consultation.recorded", ev.ConsultationRecorded, _Q, "contact_id", "partner"),
    # keyed by contact so it stays in order with the consultation that asked for it
    ("referral.requested", ev.ReferralRequested, _Q, "contact_id", "partner"),
    *(
        (f"referral.{step}", ev.ReferralChanged, _F, "referral_id", "referral")
        for step in (
            "created",
            "received",
            "accepted",
            "rejected",
            "in_progress",
            "completed",
            "failed",
            "cancelled",
            "escalated",
        )
    ),
)
_LABELS: dict[str, tuple[str, str]] = {
    "contact.received": ("着信", "contact received"),
    "contact.field_selected": ("分野選択", "field selected"),
    "contact.answered": ("応答", "contact answered"),
    "contact.abandoned": ("放棄", "contact abandoned"),
    "contact.ended": ("終話", "contact ended"),
    "contact.triaged": ("トリアージ", "contact triaged"),
    "contact.transferred": ("転送", "contact transferred"),
    "routing.assigned": ("割当", "assigned to a desk"),
    "routing.queued": ("待ち行列へ", "queued"),
    "routing.overflowed": ("あふれ", "overflowed to the next tier"),
    "routing.withdrawn": ("割当取消", "assignment withdrawn (not answered in time)"),
    "platform.heartbeat": ("生存通知", "platform heartbeat"),
    "consultation.recorded": ("相談記録", "consultation recorded"),
    "referral.requested": ("つなぎ依頼", "referral requested"),
    "referral.created": ("つなぎ作成", "referral created"),
    "referral.received": ("つなぎ受付", "referral received"),
    "referral.accepted": ("つなぎ受諾", "referral accepted"),
    "referral.rejected": ("つなぎ辞退", "referral rejected"),
    "referral.in_progress": ("つなぎ対応中", "referral in progress"),
    "referral.completed": ("つなぎ完了", "referral completed"),
    "referral.failed": ("つなぎ不成立", "referral failed"),
    "referral.cancelled": ("つなぎ取消", "referral cancelled"),
    "referral.escalated": ("つなぎ督促", "referral escalated"),
}
# Only contact.received differs on the way in: partners send the raw caller id and one region code.
_INGRESS: dict[str, type[BaseModel]] = {"contact.received": ev.ContactReceivedIngress}

_ALL = tuple(
    EventType(
        type=f"{PREFIX}{short}.{VERSION}",
        short=short,
        data_model=model,
        ingress_model=_INGRESS.get(short, model),
        topic=topic,
        key_field=key_field,
        producer=producer,
        label_ja=_LABELS[short][0],
        label_en=_LABELS[short][1],
    )
    for short, model, topic, key_field, producer in _TABLE
)
EVENT_TYPES: dict[str, EventType] = {t.type: t for t in _ALL}
TOPICS: tuple[str, ...] = tuple(dict.fromkeys(t.topic for t in _ALL))

_UNKNOWN_TYPE_MESSAGE = "unknown event type; known types: " + ", ".join(EVENT_TYPES)


def event_type(short_or_full: str) -> EventType:
    """Look a type up by its full name or its short name ("contact.received"); KeyError if unknown."""
    found = EVENT_TYPES.get(short_or_full) or EVENT_TYPES.get(f"{PREFIX}{short_or_full}.{VERSION}")
    if found is None:
        raise KeyError(short_or_full)
    return found


# --- problems ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    path: str  # "time", "data.field", "data.categories.1"; "" for the whole event
    message: str  # never contains the input value

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class EventInvalid(ValueError):
    """An event failed validation. ``problems`` lists all that were found."""

    def __init__(
        self,
        problems: list[Problem],
        *,
        id: str | None = None,
        source: str | None = None,
        type: str | None = None,
    ) -> None:
        self.problems = problems
        self.id = id
        self.source = source
        self.type = type
        super().__init__(self._summary())

    def _summary(self) -> str:
        head = f"invalid event ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''})"
        body = "; ".join(f"{p.path or '<event>'}: {p.message}" for p in self.problems)
        return f"{head}: {body}"

    def __reduce__(self) -> Any:  # keep it picklable despite the keyword-only arguments
        return (_rebuild_invalid, (self.problems, self.id, self.source, self.type))


def _rebuild_invalid(
    problems: list[Problem], id: str | None, source: str | None, type: str | None
) -> EventInvalid:
    return EventInvalid(problems, id=id, source=source, type=type)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}").fullmatch


def _name(part: str | int) -> str:
    # Keys are input too: one that does not look like a field name is not repeated back.
    if isinstance(part, int) or _NAME(part):
        return str(part)
    return "<unrecognised key>"


def problems_from(exc: ValidationError, prefix: str = "") -> list[Problem]:
    """Turn a pydantic error into Problems, without the input values."""
    out: list[Problem] = []
    for e in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = [_name(p) for p in e["loc"]]
        path = ".".join([prefix, *loc] if prefix else loc)
        kind = e["type"]
        if kind == "extra_forbidden":
            where = "attribute" if not prefix and len(loc) == 1 else "field"
            message = (
                f"unknown {where} '{loc[-1]}' is not allowed"
                if loc and not loc[-1].startswith("<")
                else f"unknown {where} (not a valid name) is not allowed"
            )
        elif kind == "missing":
            message = (
                "required attribute is missing"
                if not prefix and len(loc) == 1
                else "required field is missing"
            )
        else:
            message = e["msg"]
        out.append(Problem(path, message))
    return out


# --- validation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValidatedEvent:
    envelope: CloudEvent
    event_type: EventType
    data: BaseModel

    @property
    def key(self) -> str:
        key: str = getattr(self.data, self.event_type.key_field)
        return key


_validate_envelope = CloudEvent.model_validate
# id / source / type are echoed in error responses only when each is itself well-formed.
# Echoed back only when well formed and holding no phone number (a refused id may be the reason).
_READABLE: dict[str, Callable[[str], object]] = {
    "id": lambda v: re.fullmatch(r"[\x21-\x7E]{1,200}", v) is not None and not looks_like_phone(v),
    "source": lambda v: (re.fullmatch(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]{1,500}", v) is not None
                         and not looks_like_phone(v)),
    "type": re.compile(r"jp\.tsunagu\.[a-z_]+\.[a-z_]+\.v[0-9]{1,9}").fullmatch,
}


def _readable(raw: dict[Any, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, well_formed in _READABLE.items():
        value = raw.get(name)
        out[name] = value if isinstance(value, str) and well_formed(value) else None
    return out


def validate_event(raw: object, *, form: Form = "canonical") -> ValidatedEvent:
    """Check one already-decoded event; raises EventInvalid listing every problem found."""
    if not isinstance(raw, dict):
        raise EventInvalid([Problem("", "an event must be a JSON object")])
    problems: list[Problem] = []
    envelope: CloudEvent | None = None
    try:
        envelope = _validate_envelope(raw)
    except ValidationError as exc:
        problems.extend(problems_from(exc))

    type_name = raw.get("type")
    etype = EVENT_TYPES.get(type_name) if isinstance(type_name, str) else None
    if etype is None and isinstance(type_name, str) and not any(p.path == "type" for p in problems):
        problems.append(Problem("type", _UNKNOWN_TYPE_MESSAGE))

    data: BaseModel | None = None
    raw_data = raw.get("data")
    if etype is not None and isinstance(raw_data, dict):
        try:
            data = etype.model_for(form).model_validate(raw_data)
        except ValidationError as exc:
            problems.extend(problems_from(exc, "data"))

    if data is not None and etype is not None:
        subject = raw.get("subject")
        if isinstance(subject, str) and subject != getattr(data, etype.key_field):
            problems.append(Problem("subject", f"subject must equal data.{etype.key_field}"))

    if problems or envelope is None or etype is None or data is None:
        raise EventInvalid(problems or [Problem("", "invalid event")], **_readable(raw))
    return ValidatedEvent(envelope=envelope, event_type=etype, data=data)


class _NonStandardConstant(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonStandardConstant(f"non-standard constant {name} is not JSON")


# One decoder for every call: ``json.loads(..., parse_constant=...)`` builds a new one each time.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode_json(raw: bytes | str) -> Any:
    """Strict JSON decoding (no NaN/Infinity); EventInvalid with position info on failure.

    Bytes are decoded as ``json.loads`` does (UTF-8, -16 or -32 by the first bytes); a str must not
    start with a byte-order mark."""
    try:
        if isinstance(raw, str):
            if raw.startswith("\ufeff"):
                raise json.JSONDecodeError("Unexpected UTF-8 BOM", raw, 0)
            return _DECODER.decode(raw)
        if not isinstance(raw, (bytes, bytearray)):
            raise TypeError("not bytes or str")
        return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except json.JSONDecodeError as exc:
        # exc.msg is a fixed phrase ("Expecting value"); the document itself is never quoted.
        reason = f"{exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
    except UnicodeDecodeError as exc:
        reason = f"not valid UTF-8 at byte {exc.start}"
    except _NonStandardConstant as exc:
        reason = str(exc)
    except RecursionError:
        reason = "nested too deeply"
    except (ValueError, TypeError):
        reason = "not a JSON document"
    raise EventInvalid([Problem("", f"malformed JSON: {reason}")])


def validate_event_json(raw: bytes | str, *, form: Form = "canonical") -> ValidatedEvent:
    """Decode one JSON document and validate it as an event."""
    return validate_event(decode_json(raw), form=form)
