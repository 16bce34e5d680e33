"""intake's rules, pure: who may publish what, how a caller becomes a caller key, and what
each event in a request comes to (accepted, duplicate, rejected with the reason).

No I/O here: the HTTP route and the ingress consumer both call these functions, so the two
doors apply exactly the same rules.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

import phonenumbers

from schemas import (
    Channel,
    ContactReceived,
    ContactReceivedIngress,
    EventInvalid,
    Problem,
    ValidatedEvent,
    partner_org,
    split_region,
    validate_event,
)
from schemas.envelope import ATTRIBUTE_NAME_PATTERN, CloudEvent, looks_like_phone
from schemas.kafka import encode_value
from tsunagu.speaker import Speaker

Status = Literal["accepted", "duplicate", "rejected", "conflict"]

# No event of this network is older: an earlier time is a mistake, even in a back-fill (and years
# before 1 AD offset into year 0 are not even representable).
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)

# Japanese numbers in their usual written forms; anything else goes through phonenumbers,
# which is exact but costs ~40 µs a number — too much for the hot path.
_SEPARATORS = re.compile(r"[\s\-‐－()（）.]")
_JP_DOMESTIC = re.compile(r"^0[1-9]\d{8,9}$")
_JP_E164 = re.compile(r"^\+81[1-9]\d{8,9}$")


@dataclass(frozen=True)
class Unparsed:
    """A record whose bytes were not JSON; ``message`` says where, never what."""

    message: str


@dataclass(frozen=True)
class Framed:
    """An event read from a binding's headers (binary content mode) whose binding already found problems
    (a header that is not UTF-8, data that is not JSON): it is refused with them, naming its id, source
    and type when those are well formed."""

    event: dict[str, Any]
    problems: tuple[Problem, ...]


class CallerIdInvalid(ValueError):
    """The caller identifier cannot be normalised; the message never contains it."""


@lru_cache(maxsize=65536)
def normalise_phone(raw: str, default_region: str = "JP") -> str:
    """A phone number in E.164 (``+819012345678``)."""
    compact = _SEPARATORS.sub("", raw)
    if default_region == "JP":
        if _JP_DOMESTIC.match(compact):
            return "+81" + compact[1:]
        if _JP_E164.match(compact):
            return compact
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        raise CallerIdInvalid("caller_id is not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise CallerIdInvalid("caller_id is not a possible phone number") from None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_caller(channel: Channel, raw: str, default_region: str = "JP") -> str:
    """The form that is hashed: E.164 for phones, ``<channel>:<id>`` for chat and SNS accounts."""
    if channel == Channel.phone:
        return normalise_phone(raw, default_region)
    compact = raw.strip()
    if not compact:
        raise CallerIdInvalid("caller_id is empty")
    return f"{channel.value}:{compact}"


def caller_key(secret: bytes, normalised: str) -> str:
    """Keyed pseudonym: repeat contacts link up, but nobody without the secret can reverse it."""
    return hmac.new(secret, normalised.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Outcome:
    """What became of one event of a request."""

    index: int
    status: Status
    id: str | None = None
    source: str | None = None
    type: str | None = None
    problems: tuple[Problem, ...] = ()
    ignored: tuple[str, ...] = ()  # extension attributes intake dropped at its door (at_the_door)


@dataclass(frozen=True)
class Canonical:
    """An accepted event as it will be published."""

    index: int
    source: str
    id: str
    type: str
    topic: str  # short topic name
    key: str
    value: bytes
    contact_id: str = ""  # whose trace it belongs to (tsunagu/telemetry.py)
    traceparent: str | None = None  # the span that accepted it, set by the handler
    every_partition: bool = False  # published to each partition of its topic (EVERY_PARTITION)
    short: str = ""  # contact.answered
    org: str = ""  # the organisation of its source
    about_contact: str | None = None  # data.contact_id, where the type has one
    referral_id: str | None = None  # referral.requested's
    named_org: str | None = None  # data.organisation_id, where the type has one
    fields: Mapping[str, str] = field(default_factory=dict)  # a digest of each attribute (fields_digest)


# Published once to each partition of its topic rather than by key: a platform's heartbeat says "time
# has reached t" to routing, which fires a timer only once every partition has been read past it
# (services/routing/domain/, the watermark).
EVERY_PARTITION = frozenset({"platform.heartbeat"})


@dataclass
class Sorted:
    """A request's events sorted into what to store and what was refused."""

    canonical: list[Canonical] = field(default_factory=list)
    refused: list[Outcome] = field(default_factory=list)  # rejected or duplicate within the request
    foreign: list[Outcome] = field(default_factory=list)  # sources of another organisation
    copies: dict[int, int] = field(default_factory=dict)  # index of a repeat within the request -> the first's
    ignored: dict[int, tuple[str, ...]] = field(default_factory=dict)  # index -> extensions dropped (at_the_door)


@dataclass(frozen=True)
class Rules:
    """The settings the rules depend on."""

    caller_secret: bytes
    default_region: str = "JP"
    max_event_bytes: int = 64 * 1024
    max_skew: timedelta = timedelta(minutes=5)  # how far ahead of intake's clock an event may be
    horizon: timedelta = timedelta(days=7)  # how far back, without a back-fill key


def time_problem(at: datetime, now: datetime, rules: Rules, backfill: bool) -> Problem | None:
    """Why an event's time cannot be taken, if it cannot: a partner's clock may be a little fast or
    its upload late, never years; a past period is replayed only with a back-fill key."""
    try:
        utc = at.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+09:00 is in year 0
        utc = None
    if utc is None or utc < EARLIEST_EVENT_TIME:
        return Problem("time", f"time is before {EARLIEST_EVENT_TIME:%Y-%m-%d} (UTC): no event of tsunagu is")
    if utc > now + rules.max_skew:
        return Problem("time", f"time is more than {rules.max_skew.total_seconds():g} s ahead of intake's clock: "
                       "check the sending system's clock")
    if not backfill and utc < now - rules.horizon:
        return Problem("time", f"time is more than {rules.horizon.total_seconds() / 86400:g} days in the past: "
                       "a past period is replayed with a back-fill key (tsunagu credentials issue --backfill)")
    return None


# --- the door: extensions and media-type parameters (CloudEvents 1.0) -----------------------------

ATTRIBUTES = frozenset(CloudEvent.model_fields)  # what the envelope knows, extensions tsunagu uses included
_ATTRIBUTE_NAME = re.compile(ATTRIBUTE_NAME_PATTERN).match
_ECHOABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}").fullmatch  # a name short and plain enough to repeat back
JSON_MEDIA = "application/json"
NOT_AN_ATTRIBUTE_NAME = ("is not a CloudEvents attribute name (lower-case letters a-z and digits 0-9, "
                         "at most 20 characters)")
NOT_JSON_DATA = ("tsunagu's data is JSON: the data's media type must be application/json or a +json type "
                 "(charset utf-8 if any)")


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` lower-cased and the parameters (names lower-cased, quotes removed) of a media-type
    expression (RFC 9110 8.3.1), e.g. ``application/json; charset=utf-8``."""
    kind, *params = value.split(";")
    out: dict[str, str] = {}
    for param in params:
        name, _, val = param.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        out[name.strip().lower()] = val
    return kind.strip().lower(), out


def utf8_charset(params: Mapping[str, str]) -> bool:
    """No charset, or UTF-8: JSON exchanged between systems is UTF-8 (RFC 8259 8.1)."""
    charset = params.get("charset")
    return charset is None or charset.lower() in ("utf-8", "utf8")


def is_json_media(value: str) -> bool:
    """``application/json`` or a ``+json`` type (RFC 6839), parameters allowed, a charset only if UTF-8."""
    kind, params = media_type(value)
    return (kind == JSON_MEDIA or ("/" in kind and kind.endswith("+json"))) and utf8_charset(params)


def attribute_name_problem(name: object) -> Problem | None:
    """Why a name sent as an attribute is refused (None: a well-formed extension name). The name is
    repeated back only when it is plain and holds no phone number: it is input too."""
    if isinstance(name, str) and _ATTRIBUTE_NAME(name) and not looks_like_phone(name):
        return None
    if name == "data_base64":
        return Problem("data_base64", "tsunagu's data is JSON: send it as data, not data_base64")
    if isinstance(name, str) and _ECHOABLE(name) and not looks_like_phone(name):
        return Problem(name, f"'{name}' {NOT_AN_ATTRIBUTE_NAME}")
    return Problem("", f"an attribute name {NOT_AN_ATTRIBUTE_NAME}, nor may one hold a phone number")


def at_the_door(raw: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...], tuple[Problem, ...]]:
    """A partner's event as the contract's model reads it: (the event, the extensions dropped, problems).

    An extension tsunagu does not use is dropped and named (it could hold anything: it goes no further
    than intake's door); a name that is no CloudEvents attribute name is a problem. A JSON
    ``datacontenttype`` with parameters (``application/json; charset=utf-8``) or of a ``+json`` type is
    written as plain ``application/json``: the canonical envelope stays as strict as the contract. The
    usual event has neither and costs a set difference (the batch path is intake's hot path)."""
    declared = raw.get("datacontenttype")
    known = ATTRIBUTES.issuperset(raw)  # no set built for the usual event
    if known and (declared is None or declared == JSON_MEDIA):
        return raw, (), ()
    extra = frozenset() if known else raw.keys() - ATTRIBUTES
    ignored: list[str] = []
    problems: list[Problem] = []
    for name in raw:
        if name in extra:
            problem = attribute_name_problem(name)
            if problem is None:
                ignored.append(name)
            else:
                problems.append(problem)
    event = {k: v for k, v in raw.items() if k not in extra} if extra else dict(raw)
    if isinstance(declared, str) and declared != JSON_MEDIA:
        if is_json_media(declared):
            event["datacontenttype"] = JSON_MEDIA
        else:
            problems.append(Problem("datacontenttype", NOT_JSON_DATA))
            del event["datacontenttype"]
    return event, tuple(ignored), tuple(problems)


def door_refusal(index: int, event: dict[str, Any], problems: tuple[Problem, ...], validate: bool) -> Outcome:
    """The outcome of an event refused at the door: its problems first, then (``validate``) the contract's
    own; id, source and type named as the contract's validation names them (only when well formed)."""
    try:
        valid = validate_event(event, form="ingress")
    except EventInvalid as err:
        more = tuple(err.problems) if validate else ()
        return Outcome(index, "rejected", err.id, err.source, err.type, problems + more)
    env = valid.envelope
    return Outcome(index, "rejected", env.id, env.source, env.type, problems)


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fields_digest(event: ValidatedEvent, data: Any) -> dict[str, str]:
    """A short digest of each attribute that says what an event is (type, time, subject and each data
    field, canonical: the caller is already a keyed pseudonym), so that the same (source, id) sent again
    with other content is told apart from a re-send and the differing attributes named — without
    keeping any value."""
    env = event.envelope
    out = {"type": _digest(env.type), "time": _digest(env.time.astimezone(UTC).isoformat()),
           "subject": _digest(env.subject)}
    for name, value in data.model_dump(mode="json").items():
        out[f"data.{name}"] = _digest(value)
    return out


def differing(stored: Mapping[str, str], sent: Mapping[str, str]) -> list[str]:
    """The attributes whose digests differ, in a stable order."""
    return sorted(k for k in set(stored) | set(sent) if stored.get(k) != sent.get(k))


def canonical_data(event: ValidatedEvent, rules: Rules) -> Any:
    """The event's data as published: a contact's caller turned into its keyed pseudonym."""
    data = event.data
    if isinstance(data, ContactReceivedIngress):
        key = None
        if data.caller_id is not None:
            key = caller_key(rules.caller_secret, normalise_caller(data.channel, data.caller_id, rules.default_region))
        prefecture, municipality = split_region(data.region) if data.region else (None, None)
        # Every part is already validated: construct without validating again (hot path).
        data = ContactReceived.model_construct(
            contact_id=data.contact_id,
            channel=data.channel,
            caller_key=key,
            prefecture=prefecture,
            municipality=municipality,
        )
    return data


def canonicalise(event: ValidatedEvent, data: Any) -> bytes:
    """The canonical CloudEvent for an accepted partner event, encoded for the topic."""
    # The raw caller identifier lives only in the ingress model, which is dropped here.
    canonical = event.envelope.model_copy(update={"data": data, "partitionkey": event.key})
    return encode_value(canonical)


def sort_events(
    raws: list[object], rules: Rules, now: datetime, *, caller: Speaker | None,
    speakers: Mapping[str, Speaker] | None = None, sizes: list[int] | None = None,
) -> Sorted:
    """Validate and canonicalise a request's events.

    ``caller`` is the authenticated partner (HTTP); the Kafka door has no caller identity of its own,
    so there each source's organisation speaks, as ``speakers`` (from its active keys) allow — an
    organisation missing there holds no partner registration. ``now`` is intake's clock, for the
    bounds on event time.
    """
    out = Sorted()
    for _ in sorting_steps(raws, rules, now, out, caller=caller, speakers=speakers, sizes=sizes):
        pass
    return out


def sorting_steps(
    raws: list[object], rules: Rules, now: datetime, out: Sorted, *, caller: Speaker | None,
    speakers: Mapping[str, Speaker] | None = None, sizes: list[int] | None = None,
) -> Iterator[int]:
    """``sort_events`` an event at a time, into ``out``: yields each event's index before sorting it,
    so that a caller may pause between events (a large batch then does not hold the event loop)."""
    seen: dict[tuple[str, str], tuple[int, Mapping[str, str]]] = {}
    for index, raw in enumerate(raws):
        yield index
        if sizes is not None and sizes[index] > rules.max_event_bytes:
            too_large = Problem("", f"event is larger than {rules.max_event_bytes} bytes")
            out.refused.append(Outcome(index, "rejected", problems=(too_large,)))
            continue
        if isinstance(raw, Unparsed):
            out.refused.append(Outcome(index, "rejected", problems=(Problem("", raw.message),)))
            continue
        framing: tuple[Problem, ...] = ()
        if isinstance(raw, Framed):
            framing, raw = raw.problems, raw.event
        if isinstance(raw, dict):
            raw, ignored, problems = at_the_door(raw)
            if ignored:
                out.ignored[index] = ignored
            if framing or problems:
                # a binding's problems (data not JSON, …) would only be echoed by the contract's: not repeated
                out.refused.append(door_refusal(index, raw, framing + problems, validate=not framing))
                continue
        try:
            event = validate_event(raw, form="ingress")
        except EventInvalid as err:
            out.refused.append(Outcome(index, "rejected", err.id, err.source, err.type, tuple(err.problems)))
            continue
        env = event.envelope
        ident = (env.source, env.id)
        if event.event_type.producer != "partner":
            problem = Problem(
                "type", f"{env.type} is published by tsunagu's {event.event_type.producer} service, not by partners"
            )
            out.refused.append(Outcome(index, "rejected", env.id, env.source, env.type, (problem,)))
            continue
        source_org = partner_org(env.source)
        if source_org is None:
            problem = Problem("source", "source must be /partners/<organisation id>/<system>")
            out.refused.append(Outcome(index, "rejected", env.id, env.source, env.type, (problem,)))
            continue
        if caller is not None and source_org != caller.org_id:
            problem = Problem("source", f"source belongs to organisation '{source_org}', not to the caller's")
            out.foreign.append(Outcome(index, "rejected", env.id, env.source, env.type, (problem,)))
            continue
        speaker = caller if caller is not None else (speakers or {}).get(source_org)
        if speaker is None:
            problem = Problem("source", f"organisation '{source_org}' holds no active partner registration")
            out.refused.append(Outcome(index, "rejected", env.id, env.source, env.type, (problem,)))
            continue
        timing = time_problem(env.time, now, rules, speaker.backfill)
        if timing is not None:
            out.refused.append(Outcome(index, "rejected", env.id, env.source, env.type, (timing,)))
            continue
        named_org = getattr(event.data, "organisation_id", None)
        if named_org is not None and not speaker.may_speak_for(named_org):
            problem = Problem("data.organisation_id", "names an organisation other than the sender's, and the "
                              "sender's key is not registered to act for it")
            out.refused.append(Outcome(index, "rejected", env.id, env.source, env.type, (problem,)))
            continue
        try:
            data = canonical_data(event, rules)
            value = canonicalise(event, data)
        except CallerIdInvalid as err:
            problem = Problem("data.caller_id", str(err))
            out.refused.append(Outcome(index, "rejected", env.id, env.source, env.type, (problem,)))
            continue
        except ValueError as err:  # a region the schema let through but cannot split
            problem = Problem("data.region", str(err))
            out.refused.append(Outcome(index, "rejected", env.id, env.source, env.type, (problem,)))
            continue
        digest = fields_digest(event, data)
        if ident in seen:
            first, earlier = seen[ident]
            changed = differing(earlier, digest)
            if changed:
                problem = conflict_problem(changed)
                out.refused.append(Outcome(index, "conflict", env.id, env.source, env.type, (problem,)))
            else:  # a repeat: it fares as the first copy does (outcomes)
                out.copies[index] = first
            continue
        seen[ident] = (index, digest)
        contact = getattr(event.data, "contact_id", None)
        out.canonical.append(
            Canonical(index, env.source, env.id, env.type, event.event_type.topic, event.key, value,
                      contact or event.key,
                      every_partition=event.event_type.short in EVERY_PARTITION,
                      short=event.event_type.short, org=source_org, about_contact=contact,
                      referral_id=getattr(event.data, "referral_id", None), named_org=named_org, fields=digest)
        )


def conflict_problem(changed: list[str]) -> Problem:
    return Problem("", "this (source, id) was already accepted with other content; differing: "
                   + ", ".join(changed) + " (send new content under a new id)")



def outcomes(sorted_: Sorted, stored: set[tuple[str, str]],
             settled: Mapping[int, Outcome] | None = None) -> list[Outcome]:
    """Every event's outcome, in request order, once the store said which ones were new (and which
    it refused itself: ``settled``, by index — ownership, conflicts with what was stored)."""
    results = list(sorted_.refused) + list(sorted_.foreign)
    settled = settled or {}
    for c in sorted_.canonical:
        if c.index in settled:
            results.append(settled[c.index])
            continue
        status: Status = "accepted" if (c.source, c.id) in stored else "duplicate"
        results.append(Outcome(c.index, status, c.id, c.source, c.type))
    by_index = {o.index: o for o in results}
    for index, first in sorted_.copies.items():
        original = by_index[first]
        # a repeat of an accepted event is a duplicate; of a refused one, refused for the same reason
        status = "duplicate" if original.status in ("accepted", "duplicate") else original.status
        problems = () if status == "duplicate" else original.problems
        results.append(Outcome(index, status, original.id, original.source, original.type, problems))
    if sorted_.ignored:
        results = [replace(o, ignored=sorted_.ignored[o.index]) if o.index in sorted_.ignored else o
                   for o in results]
    return sorted(results, key=lambda o: o.index)
