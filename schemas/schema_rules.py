"""What the models check in code, said again in JSON Schema, so the published schemas refuse what intake refuses.

pydantic writes a field's type, lengths, patterns and enums into the JSON Schema by itself; a rule that
lives in a validator function (``AfterValidator``, ``model_validator``) it cannot see. The models attach
the fragments below through ``json_schema_extra``: the runtime check stays the code, and the schema says
as much of it as JSON Schema (2020-12, with ECMA-262 regular expressions) can. What it cannot say is
listed in schemas/README.md, "What the schemas cannot say".

Every regular expression here means the same in ECMA-262 with the ``u`` flag (ajv) and in Python's
``re`` (the ``jsonschema`` package): no ``\\d``, ``\\s`` or ``\\w`` alone (their meanings differ; ``[\\s\\S]``,
any character, is alike in both), only explicit character classes, generated from Python's own
definitions where intake uses them; characters outside the Basic Multilingual Plane are written literally.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

JsonDict = dict[str, Any]

_PREFECTURE = r"(?:0[1-9]|[1-3][0-9]|4[0-7])"
# A municipality: its prefecture's two digits, then four digits; "000" in the middle is a prefecture's own
# row (130001 東京都), never a municipality. The check digit and the official list are checked in code.
MUNICIPALITY_PATTERN = rf"^{_PREFECTURE}(?!000)[0-9]{{4}}$"
# A region: a prefecture's two digits, or six digits beginning with them (a municipality or the
# prefecture's own row).
REGION_PATTERN = rf"^{_PREFECTURE}(?:[0-9]{{4}})?$"
# A partner's events come from its own organisation's namespace.
PARTNER_SOURCE_PATTERN = r"^/partners/[^/]+(?:/|$)"
# libphonenumber reads a number only when it holds at least three digits (letters of a vanity number
# come after them), so a phone contact's caller_id with fewer is never a phone number.
PHONE_MIN_DIGITS = 3


def _escaped(char: str) -> str:
    # Astral characters literally: Python's re has no \u{...} and ECMA-262 no \U........
    return char if ord(char) > 0xFFFF else f"\\u{ord(char):04x}"


def _class_ranges(chars: Iterable[str]) -> str:
    """The inside of a character class matching exactly ``chars``, as ranges of consecutive code points."""
    points = sorted(ord(c) for c in chars)
    parts: list[str] = []
    start = prev = points[0]
    for point in [*points[1:], -1]:
        if point == prev + 1:
            prev = point
            continue
        first, last = _escaped(chr(start)), _escaped(chr(prev))
        parts.append(first if start == prev else f"{first}-{last}")
        start = prev = point
    return "".join(parts)


def _all_chars(keep: Callable[[str], bool]) -> list[str]:
    return [c for c in map(chr, range(sys.maxunicode + 1)) if keep(c)]


# The classes below are built from Python's Unicode tables, a scan of every code point (a fifth of a
# second): only when a schema is written, never when a service imports the contract.


@cache
def digit_class() -> str:
    """Decimal digits of every script (Unicode category Nd): what Python's \\d and libphonenumber read."""
    return "[" + _class_ranges(_all_chars(lambda c: unicodedata.category(c) == "Nd")) + "]"


@cache
def _spaces() -> str:
    """The inside of a class of what str.strip() removes."""
    return _class_ranges(_all_chars(str.isspace))


def not_blank_pattern() -> str:
    """Something besides what str.strip() removes: a caller_id made only of that is empty to intake."""
    return f"[^{_spaces()}]"


_ANY = r"[\s\S]*"  # any characters, line breaks included (a class and its complement: alike in both engines)


def phone_digits_pattern() -> str:
    """At least PHONE_MIN_DIGITS digits, anything between them."""
    return _ANY.join([digit_class()] * PHONE_MIN_DIGITS)


@cache
def json_media_pattern() -> str:
    """A JSON media type as intake reads datacontenttype at its door: application/json or any
    type/subtype+json, in any case, parameters allowed; the last charset parameter, if any, UTF-8 (quoted or
    not). Parameters are split at every ";", names and values stripped as str.strip() does, as intake does."""
    sp = f"[{_spaces()}]*"
    json = "[Jj][Ss][Oo][Nn]"
    charset = f"{sp}[Cc][Hh][Aa][Rr][Ss][Ee][Tt]{sp}"
    utf8 = "[Uu][Tt][Ff]-?8"
    bad_charset = f';{charset}(?:=(?!{sp}(?:{utf8}|"{utf8}"){sp}(?:;|$))|(?=;|$))'
    return (
        f"^(?!{_ANY}{bad_charset}(?!{_ANY};{charset}(?:=|;|$)))"
        f"{sp}(?:[Aa][Pp][Pp][Ll][Ii][Cc][Aa][Tt][Ii][Oo][Nn]/{json}|[^;/]*/[^;]*\\+{json}){sp}(?:;{_ANY})?$"
    )


def string_branch(**keywords: str | Callable[[], str]) -> Callable[[JsonDict], None]:
    """A ``json_schema_extra`` that adds ``keywords`` to the string part of a field's schema.

    For an optional field pydantic writes ``anyOf: [{type: string, ...}, {type: null}]``; the keywords
    belong beside ``type: string`` (ajv's strict mode refuses a ``pattern`` with no type beside it), and
    a ``pattern`` given here replaces the one the runtime uses when the schema can say more than it. A
    value may be a function, called when the schema is written.
    """

    def extra(schema: JsonDict) -> None:
        values = {k: v() if callable(v) else v for k, v in keywords.items()}
        branches = [b for b in schema.get("anyOf", []) if b.get("type") == "string"]
        for branch in branches or [schema]:
            branch.update(values)

    return extra


def caller_id_rules(schema: JsonDict) -> None:
    """ContactReceivedIngress (a model's ``json_schema_extra``): a phone contact's caller_id holds at least
    three digits (intake refuses anything libphonenumber cannot read as a possible number)."""
    schema.update({
        "allOf": [
            {
                "if": {
                    "type": "object",
                    "properties": {"channel": {"const": "phone"}},
                    "required": ["channel"],
                },
                "then": {
                    "type": "object",
                    "properties": {
                        "caller_id": {
                            "anyOf": [{"type": "string", "pattern": phone_digits_pattern()}, {"type": "null"}]
                        }
                    },
                },
            }
        ]
    })


def prefecture_of_municipality_rules(prefecture_codes: Iterable[str]) -> JsonDict:
    """ContactReceived (a model's ``json_schema_extra``): when municipality is given, prefecture is present
    and is its first two digits (one if/then per prefecture: JSON Schema cannot compare two fields)."""
    return {
        "allOf": [
            {
                "if": {
                    "type": "object",
                    "properties": {"municipality": {"type": "string", "pattern": f"^{code}"}},
                    "required": ["municipality"],
                },
                "then": {
                    "type": "object",
                    "properties": {"prefecture": {"const": code}},
                    "required": ["prefecture"],
                },
            }
            for code in sorted(prefecture_codes)
        ]
    }


def legal_basis_rules() -> JsonDict:
    """LegalBasis (a model's ``json_schema_extra``): kind consent needs a consent with given true;
    support_meeting and law need a reference."""
    return {
        "allOf": [
            {
                "if": {"type": "object", "properties": {"kind": {"const": "consent"}}, "required": ["kind"]},
                "then": {
                    "type": "object",
                    "properties": {
                        "consent": {
                            "type": "object",
                            "properties": {"given": {"const": True}},
                            "required": ["given"],
                        }
                    },
                    "required": ["consent"],
                },
            },
            {
                "if": {
                    "type": "object",
                    "properties": {"kind": {"enum": ["support_meeting", "law"]}},
                    "required": ["kind"],
                },
                "then": {
                    "type": "object",
                    "properties": {"reference": {"type": "string"}},
                    "required": ["reference"],
                },
            },
        ]
    }


def open_to_extensions(envelope: JsonDict, name_pattern: str) -> None:
    """The ingress envelope: besides the attributes tsunagu knows, CloudEvents extension attributes whose
    names match ``name_pattern`` (a-z0-9, at most 20 characters), whatever their value (intake drops them
    unread); and datacontenttype may be any JSON media type (intake writes it as application/json). The
    canonical envelope stays closed."""
    envelope["patternProperties"] = {name_pattern: True}
    envelope["properties"]["datacontenttype"] = {
        "default": "application/json",
        "description": "JSON のメディアタイプ（intake が application/json に揃える）/ a JSON media type: "
        "application/json or any +json type, a charset only if UTF-8; intake publishes application/json",
        "pattern": json_media_pattern(),
        "title": "Datacontenttype",
        "type": "string",
    }
    envelope["description"] += (
        " Extension attributes (names a-z0-9, at most 20 characters) are accepted and ignored: intake does "
        "not forward them."
    )


def partner_source(envelope: JsonDict) -> None:
    """The ingress envelope: a partner's source names its organisation, /partners/<org>/<system>."""
    source = envelope["properties"]["source"]
    source["allOf"] = [{"pattern": PARTNER_SOURCE_PATTERN}]
