"""The CloudEvents protocol bindings intake reads: an HTTP request or a Kafka record to events.

Pure: no I/O. Each binding's content modes come to one shape, the event as the JSON event format
writes it (a dict), so that both doors then sort events one way (``domain.sorting_steps``):

- HTTP (CloudEvents 1.0 HTTP protocol binding): *structured* (``application/cloudevents+json``),
  *batched* (``application/cloudevents-batch+json``) and *binary* — any other ``Content-Type`` with a
  ``ce-specversion`` header: each attribute in its ``ce-<name>`` header (percent-encoded, possibly a
  quoted string), ``datacontenttype`` in ``Content-Type``, the data in the body.
- Kafka (Kafka protocol binding): *structured* (the value is the JSON event; ``content-type``
  ``application/cloudevents+json`` or absent) and *binary* (a ``ce_specversion`` header: attributes in
  ``ce_<name>`` headers as plain UTF-8, ``datacontenttype`` in ``content-type``, the data in the value,
  and ``partitionkey`` from the record key unless a ``ce_partitionkey`` header carries it).

tsunagu's data is JSON: a binary event whose data has another media type is refused on its own, with
the reason. Nothing here repeats a header's value in a problem: a header can hold anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from schemas import EventInvalid, Problem, decode_json
from services.intake.domain import (
    NOT_JSON_DATA,
    Framed,
    Unparsed,
    attribute_name_problem,
    is_json_media,
    media_type,
    utf8_charset,
)

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
CLOUDEVENTS_MEDIA = "application/cloudevents"  # the prefix of every CloudEvents event format's media type

Mode = Literal["structured", "batch", "binary"]
MODES_MESSAGE = (f"send one event as {STRUCTURED} (structured mode), a JSON array of events as {BATCH} "
                 "(batch mode), or one event in binary mode: its attributes in ce-* headers (ce-specversion: 1.0, "
                 "ce-id, ce-source, ce-type, ce-time, ce-subject) and its data in the body with Content-Type "
                 "application/json")


@dataclass(frozen=True)
class Unsupported:
    """A request no content mode reads (415); ``message`` says what would be read."""

    message: str


def http_mode(content_type: str | None, ce_specversion: bool) -> Mode | Unsupported:
    """The HTTP binding's content mode of a request, as section 3 tells them apart: by the
    ``Content-Type``'s CloudEvents media types, else binary when ``ce-specversion`` is present."""
    if content_type == BATCH:  # the hot path's usual header, without parsing
        return "batch"
    kind, params = media_type(content_type or "")
    if kind in (STRUCTURED, BATCH):
        if not utf8_charset(params):
            return Unsupported(f"{kind} is UTF-8 JSON: the charset must be utf-8 or absent")
        return "structured" if kind == STRUCTURED else "batch"
    if kind.startswith(CLOUDEVENTS_MEDIA):
        return Unsupported(f"intake reads the JSON event format only; {MODES_MESSAGE}")
    if ce_specversion:
        return "binary"
    return Unsupported(f"not a CloudEvents request: {MODES_MESSAGE}")


_QUOTED_PAIR = re.compile(rb"\\(.)", re.S)


def http_header_value(raw: bytes) -> str | None:
    """An attribute's value from its HTTP header (section 3.1.3.2): a double-quoted string unescaped
    (older senders), then one round of percent-decoding; None when the bytes are not UTF-8."""
    if len(raw) >= 2 and raw[:1] == raw[-1:] == b'"':
        raw = _QUOTED_PAIR.sub(rb"\1", raw[1:-1])
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def kafka_header_value(raw: bytes | None) -> str | None:
    """An attribute's value from its Kafka header: UTF-8, nothing else (section 3.2.3); None if not UTF-8."""
    try:
        return (raw or b"").decode("utf-8")
    except UnicodeDecodeError:
        return None


def _attributes(headers: Iterable[tuple[str, str | None]], prefix: str, problems: list[Problem]) -> dict[str, Any]:
    """``prefix``-ed headers (already decoded, None where the bytes were not UTF-8) as attributes."""
    attrs: dict[str, Any] = {}
    for name, value in headers:
        attr = name[len(prefix):]
        where = attr if attribute_name_problem(attr) is None else ""
        if attr in attrs:
            problems.append(Problem(where, f"the {prefix}{attr or '…'} header is sent more than once"))
        elif value is None:
            problems.append(Problem(where, f"the {prefix}{attr or '…'} header is not UTF-8 (once decoded)"))
        else:
            attrs[attr] = value
    return attrs


def _with_data(attrs: dict[str, Any], content_type: str | None, body: bytes | None,
               problems: list[Problem]) -> dict[str, Any] | Framed:
    """The event of a binary-mode message: ``datacontenttype`` from the content type, data from the body
    (JSON, as tsunagu's data is: no content type reads as JSON)."""
    if content_type is not None:
        attrs["datacontenttype"] = content_type
    if content_type is not None and not is_json_media(content_type):
        del attrs["datacontenttype"]  # refused here; not once more by the door
        problems.append(Problem("datacontenttype", f"{NOT_JSON_DATA}; in binary mode the content type "
                                "header declares it"))
    elif not body:
        problems.append(Problem("data", "binary mode carries the data as the body (HTTP) or the value "
                                "(Kafka), and it is empty"))
    else:
        try:
            attrs["data"] = decode_json(body)
        except EventInvalid as err:
            problems.append(Problem("data", err.problems[0].message))
    return Framed(attrs, tuple(problems)) if problems else attrs


def event_from_http_binary(headers: Iterable[tuple[bytes, bytes]], body: bytes) -> dict[str, Any] | Framed:
    """One event from an HTTP request in binary content mode (raw header pairs, as received)."""
    problems: list[Problem] = []
    ce: list[tuple[str, str | None]] = []
    content_type: str | None = None
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name.startswith("ce-"):
            ce.append((name, http_header_value(raw_value)))
        elif name == "content-type":
            content_type = raw_value.decode("latin-1")
    attrs = _attributes(ce, "ce-", problems)
    if attrs.pop("datacontenttype", None) is not None:
        problems.append(Problem("datacontenttype", "in binary mode Content-Type carries datacontenttype; "
                                "a ce-datacontenttype header must not be sent as well"))
    return _with_data(attrs, content_type, body, problems)


def event_from_kafka(headers: Iterable[tuple[str, bytes]], key: bytes | None,
                     value: bytes | None) -> object:
    """One event from a Kafka record (the ingress topic), in either content mode (section 3): a dict,
    a ``Framed`` event (binary mode, refused with its problems) or ``Unparsed`` (no event at all)."""
    ce: list[tuple[str, str | None]] = []
    content_type: str | None = None
    binary = False
    for raw_name, raw_value in headers:
        name = raw_name.lower()
        if name.startswith("ce_"):
            binary = binary or name == "ce_specversion"
            ce.append((name, kafka_header_value(raw_value)))
        elif name == "content-type":
            content_type = kafka_header_value(raw_value)
            if content_type is None:
                return Unparsed("the content-type header is not UTF-8")
    kind, params = media_type(content_type or "")
    if kind.startswith(CLOUDEVENTS_MEDIA):
        if kind != STRUCTURED or not utf8_charset(params):
            return Unparsed(f"content-type names an event format intake does not read: send {STRUCTURED} "
                            "(structured mode, UTF-8) or the event in binary mode (ce_* headers)")
        binary = False
    if not binary:  # structured: the value is the event (a record without content-type too, as always)
        try:
            return decode_json(value or b"")
        except EventInvalid as err:
            return Unparsed(err.problems[0].message)
    problems: list[Problem] = []
    attrs = _attributes(ce, "ce_", problems)
    if "partitionkey" not in attrs and key is not None:
        # the binding's key mapping, read back: the record key is the partitionkey attribute
        partition_key = kafka_header_value(key)
        if partition_key is None:
            problems.append(Problem("partitionkey", "the record key (partitionkey in binary mode) is not UTF-8"))
        else:
            attrs["partitionkey"] = partition_key
    return _with_data(attrs, content_type, value, problems)
