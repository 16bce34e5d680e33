"""What intake writes to ``tsunagu.intake.rejected`` for every event it refuses.

The record says where the event came from and why it was refused; it never carries the
payload (it may hold a phone number or free text), only its SHA-256 and size so an operator
can match it against the partner's own copy.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.registry import EventInvalid


class RejectedProblem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(max_length=500, description='問題の場所（例 "data.field"、全体は ""）/ where')
    message: str = Field(max_length=2000, description="入力値を含まない説明 / what is wrong, never the value")


class RejectedRecord(BaseModel):
    """却下記録 / a record of one event intake refused (without the payload)."""

    model_config = ConfigDict(extra="forbid")

    rejected_at: AwareDatetime = Field(description="却下した時刻 / when intake refused it")
    topic: str | None = Field(
        default=None, description="受信したトピック（HTTP なら null）/ topic it was read from; null for HTTP"
    )
    partition: int | None = Field(default=None, ge=0)
    offset: int | None = Field(default=None, ge=0)
    id: str | None = Field(default=None, description="読めた場合のイベントID / event id, when readable")
    source: str | None = Field(default=None, description="読めた場合の source / source, when readable")
    type: str | None = Field(default=None, description="読めた場合の type / type, when readable")
    problems: list[RejectedProblem] = Field(min_length=1)
    payload_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="元データの SHA-256 / of the payload")
    payload_bytes: int = Field(ge=0, description="元データのバイト数 / payload size")


def rejected_record(
    payload: bytes,
    invalid: EventInvalid,
    *,
    rejected_at: datetime,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> RejectedRecord:
    """The record for one refused payload: its problems, digest and size, never its content."""
    return RejectedRecord(
        rejected_at=rejected_at,
        topic=topic,
        partition=partition,
        offset=offset,
        id=invalid.id,
        source=invalid.source,
        type=invalid.type,
        problems=[RejectedProblem(path=p.path, message=p.message) for p in invalid.problems],
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_bytes=len(payload),
    )
