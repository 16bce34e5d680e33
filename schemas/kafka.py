"""How a tsunagu event sits in a Kafka record — the contract decision.

**Structured content mode** (CloudEvents Kafka protocol binding, section 3.2):

- value: the whole CloudEvent as one UTF-8 JSON object (compact, ``ensure_ascii=False``,
  times in RFC 3339 with offset);
- header ``content-type: application/cloudevents+json; charset=utf-8`` — the only header the
  contract needs (tracing middlewares may add ``traceparent``; consumers must not rely on it,
  the ``traceparent`` attribute inside the event is authoritative);
- key: the ``partitionkey`` attribute when present, else the type's key field value (which the
  registry guarantees equals ``subject``), UTF-8.

Why structured, not binary mode: a record is self-contained. Replays (metrics rebuilds), the
rejected topic's evidence and any tool that reads a topic see the complete event in the value,
with no dependency on header handling (Kafka headers are easy to drop in connectors and
mirrors). It is also byte-for-byte the HTTP body partners already send, so intake forwards
what it validated. The cost — attributes inside the JSON instead of headers — is a few dozen
bytes per record and is irrelevant at our volumes.

This is what tsunagu *publishes*. On the ingress topic intake reads partners' records in either
content mode of the Kafka binding — structured, or binary (``ce_*`` headers, ``content-type`` =
``datacontenttype``, the data as the value, ``partitionkey`` from the record key) — and publishes
each accepted event as above, without the extensions it does not use.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

from schemas.envelope import CloudEvent

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
_SERIALIZER = CloudEvent.__pydantic_serializer__
_HEADERS: tuple[tuple[str, bytes], ...] = (("content-type", CONTENT_TYPE.encode()),)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


def envelope_dict(envelope: CloudEvent | dict[str, Any]) -> dict[str, Any]:
    """The event as a JSON-ready dict; absent optional attributes are left out, not null."""
    if isinstance(envelope, dict):
        return envelope
    out = envelope.model_dump(mode="json", exclude={"data"}, exclude_none=True)
    out["data"] = envelope.data
    return out


def encode_value(envelope: CloudEvent | dict[str, Any]) -> bytes:
    """The record value: the whole event as compact UTF-8 JSON."""
    if isinstance(envelope, CloudEvent):
        # pydantic-core's serializer: same bytes as the dict path, about twice as fast.
        # warnings=False: `data` may hold the validated model itself, serialised by inference.
        return _SERIALIZER.to_json(envelope, exclude_none=True, warnings=False)
    return json.dumps(
        envelope_dict(envelope), ensure_ascii=False, separators=(",", ":"), default=_jsonable
    ).encode()


def kafka_headers() -> list[tuple[str, bytes]]:
    return list(_HEADERS)


def kafka_key(envelope: CloudEvent | dict[str, Any]) -> bytes:
    """The record key: ``partitionkey`` when set, else ``subject`` (= the type's key field)."""
    if isinstance(envelope, dict):
        key = envelope.get("partitionkey") or envelope["subject"]
    else:
        key = envelope.partitionkey or envelope.subject
    return str(key).encode()


def decode_value(value: bytes) -> dict[str, Any]:
    """The record value back to a dict (validate it with ``schemas.validate_event``)."""
    decoded = json.loads(value)
    if not isinstance(decoded, dict):
        raise ValueError("a tsunagu record value must be a JSON object")
    return decoded
