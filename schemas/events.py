"""The data of each event type: pydantic models, the source of truth of the contract.

Every model forbids extra fields, so no free text (names, notes, phone numbers) can ride
along in an event. Numbers and booleans are strict: ``"3"`` is not a menu position and
``true`` is not a number of seconds.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.codes import (
    AbandonStage,
    AgeBand,
    Channel,
    ConsultationCategory,
    FieldCode,
    LegalBasisKind,
    ReceiverType,
    ReferralOutcome,
    RiskLevel,
    Urgency,
)
from schemas.envelope import NoPhone
from schemas.municipalities import PREFECTURE_CODES, MunicipalityCode, PrefectureCode, split_region
from schemas.schema_rules import (
    REGION_PATTERN,
    caller_id_rules,
    legal_basis_rules,
    not_blank_pattern,
    prefecture_of_municipality_rules,
    string_branch,
)

Id = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$"), NoPhone]
Seconds = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False, description="秒 / seconds")]
StrictInt = Annotated[int, Strict()]
StrictBool = Annotated[bool, Strict()]
T = TypeVar("T")


def _unique(items: list[T]) -> list[T]:
    if len(set(items)) != len(items):
        raise PydanticCustomError("unique_items", "items must not repeat")
    return items


def _region(code: str) -> str:
    split_region(code)
    return code


class EventData(BaseModel):
    """Base of every event's data: closed (no extra fields), finite numbers only."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --- contact -------------------------------------------------------------------------------


class ContactReceivedIngress(EventData):
    """着信（パートナー送信形）/ a contact arrived — as partners send it, with the raw caller id.

    intake turns ``caller_id`` into a keyed pseudonym and drops it; ``region`` becomes
    ``prefecture`` / ``municipality``.
    """

    model_config = ConfigDict(json_schema_extra=caller_id_rules)

    contact_id: Id
    channel: Channel
    caller_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        json_schema_extra=string_branch(pattern=not_blank_pattern),
        description="発信者番号またはプラットフォームの利用者ID（非通知は null）/ raw phone number or "
        "platform user id; null when withheld. Never leaves intake.",
    )
    region: Annotated[str, AfterValidator(_region)] | None = Field(
        default=None,
        json_schema_extra=string_branch(pattern=REGION_PATTERN),
        description="都道府県コード（2桁）または市区町村コード（6桁）/ 2-digit prefecture or 6-digit "
        "municipality code, when known",
    )


class ContactReceived(EventData):
    """着信 / a contact arrived (canonical form: pseudonymised caller, split region)."""

    model_config = ConfigDict(json_schema_extra=prefecture_of_municipality_rules(PREFECTURE_CODES))

    contact_id: Id
    channel: Channel
    caller_key: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="発信者の仮名キー（HMAC-SHA256、小文字16進64桁、チャネルごとに別）/ keyed pseudonym of the "
        "caller (HMAC-SHA256, 64 lowercase hex; one channel's: intake hashes the E.164 number for phones and "
        "<channel>:<id> otherwise); null when withheld",
    )
    prefecture: PrefectureCode | None = None
    municipality: MunicipalityCode | None = None

    @model_validator(mode="after")
    def _municipality_lies_in_prefecture(self) -> ContactReceived:
        if self.municipality is not None and self.prefecture != self.municipality[:2]:
            raise PydanticCustomError(
                "region_mismatch", "prefecture must be the first two digits of municipality"
            )
        return self


class ContactFieldSelected(EventData):
    """分野選択 / the contact chose a field in the voice menu or chat triage."""

    contact_id: Id
    field: FieldCode
    menu_position: Annotated[StrictInt, Field(ge=0, le=9, description="押されたキー / key pressed (0-9)")]


class ContactAnswered(EventData):
    """応答 / a desk answered the contact."""

    contact_id: Id
    desk_id: Id
    organisation_id: Id
    wait_seconds: Seconds


class ContactAbandoned(EventData):
    """放棄 / the contact hung up before a counsellor answered."""

    contact_id: Id
    stage: AbandonStage
    wait_seconds: Seconds


class ContactEnded(EventData):
    """終話 / the contact ended."""

    contact_id: Id
    talk_seconds: Seconds
    desk_id: Id | None = None


class ContactTriaged(EventData):
    """トリアージ / a platform's screening result for a waiting or talking contact (codes only).

    Chat and SNS platforms ask screening questions before a counsellor takes the conversation;
    the result is a risk level, never the answers. routing orders a field's queue by it (then by
    priority, then by arrival) and re-orders when it comes late; ``imminent`` may reach desks that
    take imminent risk from any field. The latest triage of a contact counts.
    """

    contact_id: Id
    risk: RiskLevel = Field(description="スクリーニング結果のリスク / risk level from the screening")
    instrument: Id | None = Field(
        default=None, description="スクリーニング票のコード（例 k6）/ code of the screening questionnaire"
    )


class ContactTransferred(EventData):
    """転送 / a desk hands a live contact on: to another desk, another field, or another channel.

    routing releases the line or seat at ``from_desk_id``, keeps the contact's place (its arrival
    rank and history) and assigns it to ``to_desk_id`` (or a desk of ``to_field``); the contact
    stays one contact and one connection in the figures.
    """

    contact_id: Id
    from_desk_id: Id = Field(description="転送元の窓口 / desk handing the contact on")
    to_desk_id: Id | None = Field(default=None, description="転送先の窓口 / desk taking it")
    to_field: FieldCode | None = Field(default=None, description="転送先の分野 / field taking it")
    to_channel: Channel | None = Field(
        default=None, description="転送先のチャネル（例 チャット→電話）/ channel it continues on (e.g. chat to phone)"
    )

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": [name], "properties": {name: {"type": "string"}}} for name in ("to_desk_id", "to_field")
    ]})

    @model_validator(mode="after")
    def _goes_somewhere(self) -> ContactTransferred:
        if self.to_desk_id is None and self.to_field is None:
            raise PydanticCustomError("transfer_target", "a transfer names to_desk_id or to_field (or both)")
        return self


class PlatformHeartbeat(EventData):
    """生存通知 / a partner platform's periodic heartbeat: carries only event time.

    Telephony and chat platforms send one every few seconds (routing suggests 5 s) while they
    run, so that time-based rules (overflow waits, ring timeouts) advance by event time even when
    no contact arrives.
    """

    platform_id: Id


# --- routing -------------------------------------------------------------------------------


class RoutingAssigned(EventData):
    """割当 / routing assigned the contact to a desk line."""

    contact_id: Id
    desk_id: Id
    organisation_id: Id
    field: FieldCode
    reason: Literal["free_line", "line_freed", "overflow", "rerouted", "transferred"]
    queue_position: Annotated[StrictInt, Field(ge=1)] | None = None
    channel: Channel | None = Field(default=None, description="チャネル / the contact's channel")
    seat: Annotated[StrictInt, Field(ge=1)] | None = Field(
        default=None,
        description="席番号（チャット・SNS、または席で受けた電話）/ the seat holding it (chat and SNS, or a call "
        "taken at a seat); absent on a phone line",
    )
    seat_capacity: Annotated[StrictInt, Field(ge=1)] | None = Field(
        default=None,
        description="その席が同時に持てる会話数 / conversations that seat holds at most (the desk's "
        "conversations_per_seat when assigned); with seat",
    )


class RoutingQueued(EventData):
    """待ち行列へ / no line was free: the contact waits in the field's queue."""

    contact_id: Id
    field: FieldCode
    queue_position: Annotated[StrictInt, Field(ge=1)]
    priority: Annotated[StrictInt, Field(ge=0)]
    channel: Channel | None = Field(default=None, description="チャネル / the contact's channel")
    risk: RiskLevel | None = Field(default=None, description="トリアージ結果 / triaged risk, when reported")


class RoutingOverflowed(EventData):
    """あふれ / the contact waited too long and is offered to the next tier of desks."""

    contact_id: Id
    field: FieldCode
    waited_seconds: Seconds
    tier: Annotated[StrictInt, Field(ge=2)]


class RoutingWithdrawn(EventData):
    """割当取消 / an assignment was not answered in time: the line is released, the contact re-routed."""

    contact_id: Id
    desk_id: Id
    organisation_id: Id
    field: FieldCode
    reason: Literal["ring_timeout", "offer_timeout"] = Field(
        description="ring_timeout: a call rang unanswered; offer_timeout: a chat offered to a seat got no first "
        "response in time"
    )
    ring_seconds: Seconds


# --- consultation and referral -------------------------------------------------------------


class Consent(EventData):
    """本人同意 / the person's consent to pass their case on."""

    given: StrictBool
    scope: Annotated[
        list[ReceiverType],
        AfterValidator(_unique),
        Field(json_schema_extra={"uniqueItems": True}, description="同意した提供先 / receivers consented to"),
    ]
    recorded_by: Id = Field(description="記録した相談員（仮名ID）/ staff pseudonym id")
    recorded_at: AwareDatetime


class LegalBasis(EventData):
    """提供の根拠 / why the person's information may be passed on."""

    model_config = ConfigDict(json_schema_extra=legal_basis_rules())

    kind: LegalBasisKind
    consent: Consent | None = None
    reference: Id | None = Field(default=None, description="会議ID・法令ID / meeting or statute id")

    @model_validator(mode="after")
    def _basis_is_substantiated(self) -> LegalBasis:
        if self.kind is LegalBasisKind.consent and (self.consent is None or not self.consent.given):
            raise PydanticCustomError("consent_required", "kind consent requires consent with given true")
        if self.kind in (LegalBasisKind.support_meeting, LegalBasisKind.law) and self.reference is None:
            raise PydanticCustomError(
                "reference_required",
                "kind support_meeting or law requires a reference (meeting or statute id)",
            )
        return self


class ConsultationRecorded(EventData):
    """相談記録 / the partner recorded the consultation after the talk (codes only, no free text)."""

    contact_id: Id
    organisation_id: Id
    desk_id: Id | None = None
    field: FieldCode | None = None
    categories: Annotated[
        list[ConsultationCategory],
        AfterValidator(_unique),
        Field(min_length=1, max_length=13, json_schema_extra={"uniqueItems": True}),
    ]
    age_band: AgeBand
    risk: RiskLevel
    referral_needed: StrictBool
    municipality: MunicipalityCode | None = None
    consent: Consent | None = None
    talk_seconds: Seconds | None = None


class ReferralRequested(EventData):
    """つなぎ依頼 / a partner asks for the case to be handed on to a local agency."""

    referral_id: Id
    contact_id: Id
    organisation_id: Id = Field(description="依頼元の団体 / requesting organisation")
    municipality: MunicipalityCode
    need: ReceiverType | None = None
    urgency: Urgency
    legal_basis: LegalBasis


class ReferralChanged(EventData):
    """つなぎの状況変化 / a step in a referral's life (received, accepted, … escalated)."""

    referral_id: Id
    contact_id: Id
    receiver_id: Id | None = None
    receiver_type: ReceiverType | None = None
    urgency: Urgency | None = None
    deadline: AwareDatetime | None = None
    reason: Id | None = Field(default=None, description="理由コード（自由記述不可）/ a reason code, not text")
    outcome: ReferralOutcome | None = None
    # Added by the referral service (issue 4); optional, so earlier events stay valid.
    organisation_id: Id | None = Field(default=None, description="依頼元の団体 / requesting organisation")
    municipality: MunicipalityCode | None = Field(default=None, description="本人の市区町村 / person's municipality")
    legal_basis: LegalBasisKind | None = Field(default=None, description="提供の根拠 / legal basis of the referral")
    from_receiver_id: Id | None = Field(
        default=None, description="督促前の提供先（escalated のみ）/ receiver that missed the deadline (escalated)"
    )
    escalations: Annotated[StrictInt, Field(ge=0)] | None = Field(
        default=None, description="これまでの督促回数 / escalations so far"
    )
    actor: Id | None = Field(
        default=None, description="変更した団体（受け手・事務局・referral）/ organisation that made the change"
    )
