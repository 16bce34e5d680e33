"""The envelope every tsunagu event travels in: CloudEvents 1.0, structured mode.

Required attributes are the CloudEvents ones plus ``time`` and ``subject`` (tsunagu always
needs event time and the contact or referral the event is about). Optional extensions are
limited to those tsunagu uses: ``partitionkey`` (Kafka binding) and ``traceparent`` /
``tracestate`` (distributed tracing). Anything else is refused.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

TIME_OFFSET_MESSAGE = "time must carry a UTC offset, e.g. 2022-07-07T10:00:00+09:00"
TYPE_PATTERN = r"^jp\.tsunagu\.[a-z_]+\.[a-z_]+\.v[0-9]+$"
ID_PATTERN = r"^\S+$"
# RFC 3986 URI-reference characters (percent-encoding included); no spaces, no controls.
SOURCE_PATTERN = r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$"
TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"

_PARTNER_SOURCE = re.compile(r"^/partners/([^/]+)(?:/|$)")


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
    """CloudEvents 1.0 イベント（構造化モード）/ a CloudEvents 1.0 event in structured mode."""

    model_config = ConfigDict(extra="forbid")

    specversion: Literal["1.0"] = Field(description="CloudEvents version / CloudEvents のバージョン")
    id: str = Field(
        min_length=1,
        max_length=200,
        pattern=ID_PATTERN,
        description="イベントID（source ごとに一意）/ event id, unique per source",
    )
    source: str = Field(
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
        description="発生時刻（RFC 3339、時差付き）/ event time, RFC 3339 with a UTC offset"
    )
    subject: str = Field(
        min_length=1,
        max_length=200,
        description="対象（contact_id または referral_id）/ the contact or referral the event is about",
    )
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = Field(default=None, min_length=1, max_length=500)
    partitionkey: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Kafka のキー（省略時は subject）/ Kafka key; the subject when absent",
    )
    traceparent: str | None = Field(default=None, pattern=TRACEPARENT_PATTERN, description="W3C traceparent")
    tracestate: str | None = Field(default=None, max_length=512, description="W3C tracestate")
    data: dict[str, Any] = Field(description="イベント種別ごとのデータ / the type's data")


def partner_org(source: str) -> str | None:
    """The organisation id in ``/partners/<org>/...``, or None for any other source."""
    match = _PARTNER_SOURCE.match(source) if isinstance(source, str) else None
    return match.group(1) if match else None
