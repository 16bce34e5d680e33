"""intake's rules, pure: who may publish what, how a caller becomes a caller key, and what
each event in a request comes to (accepted, duplicate, rejected with the reason).

No I/O here: the HTTP route and the ingress consumer both call these functions, so the two
doors apply exactly the same rules.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

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
from schemas.kafka import encode_value

Status = Literal["accepted", "duplicate", "rejected"]

# Japanese numbers in their usual written forms; anything else goes through phonenumbers,
# which is exact but costs ~40 µs a number — too much for the hot path.
_SEPARATORS = re.compile(r"[\s\-‐－()（）.]")
_JP_DOMESTIC = re.compile(r"^0[1-9]\d{8,9}$")
_JP_E164 = re.compile(r"^\+81[1-9]\d{8,9}$")


@dataclass(frozen=True)
class Unparsed:
    """A record whose bytes were not JSON; ``message`` says where, never what."""

    message: str


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


# Published once to each partition of its topic rather than by key: a platform's heartbeat says "time
# has reached t" to routing, which fires a timer only once every partition has been read past it
# (services/routing/domain.py, the watermark).
EVERY_PARTITION = frozenset({"platform.heartbeat"})


@dataclass
class Sorted:
    """A request's events sorted into what to store and what was refused."""

    canonical: list[Canonical] = field(default_factory=list)
    refused: list[Outcome] = field(default_factory=list)  # rejected or duplicate within the request
    foreign: list[Outcome] = field(default_factory=list)  # sources of another organisation


@dataclass(frozen=True)
class Rules:
    """The settings the rules depend on."""

    caller_secret: bytes
    default_region: str = "JP"
    max_event_bytes: int = 64 * 1024


def canonicalise(event: ValidatedEvent, rules: Rules) -> bytes:
    """The canonical CloudEvent for an accepted partner event, encoded for the topic."""
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
    # The raw caller identifier lives only in the ingress model, which is dropped here.
    canonical = event.envelope.model_copy(update={"data": data, "partitionkey": event.key})
    return encode_value(canonical)


def sort_events(
    raws: list[object], org_id: str | None, rules: Rules, sizes: list[int] | None = None
) -> Sorted:
    """Validate and canonicalise a request's events.

    ``org_id`` is the authenticated partner organisation (HTTP), or None where the door has
    no caller identity of its own and the source's organisation is checked elsewhere (Kafka).
    """
    out = Sorted()
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(raws):
        if sizes is not None and sizes[index] > rules.max_event_bytes:
            too_large = Problem("", f"event is larger than {rules.max_event_bytes} bytes")
            out.refused.append(Outcome(index, "rejected", problems=(too_large,)))
            continue
        if isinstance(raw, Unparsed):
            out.refused.append(Outcome(index, "rejected", problems=(Problem("", raw.message),)))
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
        if org_id is not None and source_org != org_id:
            problem = Problem("source", f"source belongs to organisation '{source_org}', not to the caller's")
            out.foreign.append(Outcome(index, "rejected", env.id, env.source, env.type, (problem,)))
            continue
        if ident in seen:
            out.refused.append(Outcome(index, "duplicate", env.id, env.source, env.type))
            continue
        try:
            value = canonicalise(event, rules)
        except CallerIdInvalid as err:
            problem = Problem("data.caller_id", str(err))
            out.refused.append(Outcome(index, "rejected", env.id, env.source, env.type, (problem,)))
            continue
        except ValueError as err:  # a region the schema let through but cannot split
            problem = Problem("data.region", str(err))
            out.refused.append(Outcome(index, "rejected", env.id, env.source, env.type, (problem,)))
            continue
        seen.add(ident)
        out.canonical.append(
            Canonical(index, env.source, env.id, env.type, event.event_type.topic, event.key, value,
                      getattr(event.data, "contact_id", None) or event.key,
                      every_partition=event.event_type.short in EVERY_PARTITION)
        )
    return out


def outcomes(sorted_: Sorted, stored: set[tuple[str, str]]) -> list[Outcome]:
    """Every event's outcome, in request order, once the store said which ones were new."""
    results = list(sorted_.refused) + list(sorted_.foreign)
    for c in sorted_.canonical:
        status: Status = "accepted" if (c.source, c.id) in stored else "duplicate"
        results.append(Outcome(c.index, status, c.id, c.source, c.type))
    return sorted(results, key=lambda o: o.index)
