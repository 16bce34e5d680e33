"""The envelope every tsunagu event travels in: CloudEvents 1.0, structured mode.

Required attributes are the CloudEvents ones plus ``time`` and ``subject`` (tsunagu always
needs event time and the contact or referral the event is about). The model knows only the
extensions tsunagu uses: ``partitionkey`` (Kafka binding) and ``traceparent`` / ``tracestate``
(distributed tracing), and refuses any other attribute: a canonical event on a tsunagu topic
carries nothing else, and ``datacontenttype`` there is exactly ``application/json``.

A partner's event may carry other extensions (CloudEvents lets any producer add them): intake
accepts it, drops each such extension before it validates the event against this model — an
extension could hold anything, so it never travels past intake — and names it in its answer as
ignored. An attribute whose name is not a CloudEvents attribute name (``ATTRIBUTE_NAME_PATTERN``:
lower-case ASCII letters and digits, at most 20 characters as the specification recommends) is
still refused, as is ``data_base64`` (tsunagu's data is JSON).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from schemas.schema_rules import string_branch

TIME_OFFSET_MESSAGE = "time must carry a UTC offset, e.g. 2022-07-07T10:00:00+09:00"
TYPE_PATTERN = r"^jp\.tsunagu\.[a-z_]+\.[a-z_]+\.v[0-9]+$"
# Printable ASCII without spaces: no NUL, no control character, no lone surrogate reaches a topic or a table.
ID_PATTERN = r"^[\x21-\x7E]+$"
SUBJECT_PATTERN = r"^[A-Za-z0-9._:-]+$"  # what data's ids allow (schemas/events.py, Id)
TRACESTATE_PATTERN = r"^[\x20-\x7E]*$"
# RFC 3986 URI-reference characters (percent-encoding included); no spaces, no controls.
SOURCE_PATTERN = r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$"
TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
# CloudEvents 1.0 attribute names: lower-case a-z and 0-9; "SHOULD NOT exceed 20 characters", held as a rule.
ATTRIBUTE_NAME_PATTERN = r"^[a-z0-9]{1,20}$"

_PARTNER_SOURCE = re.compile(r"^/partners/([^/]+)(?:/|$)")


# A phone number written into an id: a run of digits (hyphens, dots, spaces and brackets between them
# allowed) that reads as a Japanese number — 0 and a non-zero digit, 10 or 11 digits in all — or as
# +81 and 9 or 10 digits. Ordinary ids (UUIDs, ULIDs, sequence numbers, dates) pass; see
# docs of the contract (README, "Envelope hygiene").
_DIGIT_RUN = re.compile(r"(?<![A-Za-z0-9])\+?\d(?:[\d\-. ()]*\d)?(?![A-Za-z0-9])")
_NOT_DIGIT = re.compile(r"\D")
PHONE_IN_TEXT_MESSAGE = ("must not carry a phone number (a run of 10-11 digits beginning 0, or +81 and 9-10 "
                         "digits); ids must hold no personal data")


def looks_like_phone(text: str) -> bool:
    for run in _DIGIT_RUN.findall(text):
        digits = _NOT_DIGIT.sub("", run)
        if digits[:1] == "0" and digits[1:2] not in ("", "0") and len(digits) in (10, 11):
            return True
        if run.startswith("+") and digits.startswith("81") and len(digits) in (11, 12):
            return True
    return False


def _no_phone(value: str | None) -> str | None:
    if value is not None and looks_like_phone(value):
        raise PydanticCustomError("phone_in_text", PHONE_IN_TEXT_MESSAGE)
    return value


NoPhone = AfterValidator(_no_phone)


def _text_or_datetime(value: Any) -> Any:
    # Numbers would be read as Unix timestamps: refused, the contract says RFC 3339 text.
    if type(value) is str or isinstance(value, datetime):
        return value
    raise PydanticCustomError("rfc3339_time", "time must be an RFC 3339 string with a UTC offset")


def _with_offset(value: datetime) -> datetime:
    # A plain datetime + this check (not AwareDatetime) lets the message say what to send.
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError("timezone_aware", TIME_OFFSET_MESSAGE)
    return value


EventTime = Annotated[datetime, BeforeValidator(_text_or_datetime), AfterValidator(_with_offset)]


class CloudEvent(BaseModel):
    """CloudEvents 1.0 イベント（構造化モード）/ a CloudEvents 1.0 event in structured mode.

    A contact id belongs to the organisation that first reports it (another may report its answer, end,
    consultation and referral once the owner's platform names it in contact.answered or routing assigns it
    the contact) and a referral id to the one that first requests it; data.organisation_id must be the
    sender's organisation or one its key acts for (README, "Who may say what").
    """

    model_config = ConfigDict(extra="forbid")

    specversion: Literal["1.0"] = Field(description="CloudEvents version / CloudEvents のバージョン")
    id: Annotated[str, NoPhone] = Field(
        min_length=1,
        max_length=200,
        pattern=ID_PATTERN,
        description="イベントID（source ごとに一意、印字可能なASCII、電話番号を含まない）/ event id, unique per "
        "source: printable ASCII without spaces, holding no phone number",
    )
    source: Annotated[str, NoPhone] = Field(
        min_length=1,
        max_length=500,
        pattern=SOURCE_PATTERN,
        description="発生元（URI参照）/ URI-reference of the producer: /partners/<org_id>/<system> or "
        "/tsunagu/<service>",
    )
    type: str = Field(
        pattern=TYPE_PATTERN,
        max_length=200,
        description="イベント種別 / event type, jp.tsunagu.<entity>.<verb>.v<N>",
    )
    time: EventTime = Field(
        description="発生時刻（RFC 3339、時差付き。受付時刻の5分先まで、7日前まで。過去期間の再生は back-fill "
        "キーのみ）/ event time, RFC 3339 with a UTC offset; intake takes it up to TSUNAGU_INTAKE_MAX_SKEW_S "
        "(300 s) ahead of its clock and TSUNAGU_INTAKE_HORIZON_S (7 days) behind it — older only from a "
        "back-fill key, never before 2000-01-01"
    )
    subject: Annotated[str, NoPhone] = Field(
        min_length=1,
        max_length=200,
        pattern=SUBJECT_PATTERN,
        description="対象（contact_id または referral_id）/ the contact or referral the event is about",
    )
    datacontenttype: Literal["application/json"] = "application/json"
    # string_branch: pydantic drops the pattern of an optional field whose type carries a validator from
    # the JSON Schema (it still checks it); the schema is told again.
    dataschema: Annotated[str, NoPhone] | None = Field(default=None, min_length=1, max_length=500,
                                                         pattern=SOURCE_PATTERN,
                                                         json_schema_extra=string_branch(pattern=SOURCE_PATTERN))
    partitionkey: Annotated[str, NoPhone] | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=SUBJECT_PATTERN,
        json_schema_extra=string_branch(pattern=SUBJECT_PATTERN),
        description="Kafka のキー（省略時は subject）/ Kafka key; the subject when absent",
    )
    traceparent: str | None = Field(default=None, pattern=TRACEPARENT_PATTERN, description="W3C traceparent")
    tracestate: Annotated[str, NoPhone] | None = Field(default=None, max_length=512, pattern=TRACESTATE_PATTERN,
                                                       json_schema_extra=string_branch(pattern=TRACESTATE_PATTERN),
                                                       description="W3C tracestate")
    data: dict[str, Any] = Field(description="イベント種別ごとのデータ / the type's data")


def partner_org(source: str) -> str | None:
    """The organisation id in ``/partners/<org>/...``, or None for any other source."""
    match = _PARTNER_SOURCE.match(source) if isinstance(source, str) else None
    return match.group(1) if match else None
