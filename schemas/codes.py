"""The code lists of the contract, each code with its Japanese and English label.

Codes travel on the wire; labels are for people (reports, the secretariat's CLI, partners
reading the generated JSON Schema, where they appear as ``x-labels``).
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import Any, ClassVar, TypeVar

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs


class LabelledCode(StrEnum):
    """A StrEnum whose members are declared as ``code = "code", "ja label", "en label"``."""

    LABELS: ClassVar[dict[Enum, tuple[str, str]]]
    ja: str
    en: str

    def __new__(cls, code: str, ja: str, en: str) -> LabelledCode:
        member = str.__new__(cls, code)
        member._value_ = code
        member.ja = ja
        member.en = en
        return member

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: cs.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler.resolve_ref_schema(handler(schema))
        json_schema["x-labels"] = {m.value: {"ja": m.ja, "en": m.en} for m in cls}
        return json_schema


E = TypeVar("E", bound=type[LabelledCode])


def _labelled(cls: E) -> E:
    # Set after creation: inside the class body a dict would become an enum member.
    cls.LABELS = {member: (member.ja, member.en) for member in cls}
    return cls


def label(code: LabelledCode) -> dict[str, str]:
    """``{"code", "ja", "en"}`` for any code of any list in this module."""
    return {"code": code.value, "ja": code.ja, "en": code.en}


@_labelled
class FieldCode(LabelledCode):
    """相談分野 — the field a contact chooses in the voice menu / chat triage (consultation field)."""

    hardship = "hardship", "生活に困窮されている方", "financial hardship"
    foreign_language = "foreign_language", "外国語での相談", "consultation in a foreign language"
    suicidal = "suicidal", "死にたいほどつらい方", "feeling like wanting to die"
    women_dv = "women_dv", "DVや性暴力など女性の悩み", "domestic / sexual violence, women's troubles"
    gender = "gender", "性別の違和や同性愛", "gender dysphoria, same-sex attraction"
    single_mother = "single_mother", "シングルマザー", "single mothers"
    under18 = "under18", "18歳以下", "aged 18 or under"
    loneliness = "loneliness", "孤独・孤立でお悩みの方", "loneliness and isolation"


@_labelled
class Channel(LabelledCode):
    """チャネル — how the person reached the line (channel)."""

    phone = "phone", "電話", "phone"
    chat = "chat", "チャット", "chat"
    sns = "sns", "SNS", "social media"


@_labelled
class AbandonStage(LabelledCode):
    """放棄段階 — where a caller hung up before a counsellor answered (abandonment stage)."""

    ivr = "ivr", "音声ガイダンス中", "during the voice menu"
    queue = "queue", "待ち行列", "waiting in the queue"
    ringing = "ringing", "呼出中", "while the desk was ringing"


@_labelled
class ConsultationCategory(LabelledCode):
    """相談内容 — what the consultation was about (consultation category)."""

    mental_health = "mental_health", "心の病・体調不良", "mental illness or poor health"
    no_place_to_talk = "no_place_to_talk", "悩みを話す場がない", "no place to talk about one's worries"
    living_money = "living_money", "生活・お金", "living and money"
    home_family = "home_family", "家庭・家族", "home and family"
    cohabitant_relations = (
        "cohabitant_relations",
        "同居人との関係",
        "relationship with someone one lives with",
    )
    wanting_to_die = "wanting_to_die", "死にたい・消えたい", "wanting to die or disappear"
    loneliness = "loneliness", "孤独・孤立感", "loneliness and isolation"
    work = "work", "仕事", "work"
    school = "school", "学校", "school"
    violence_abuse = "violence_abuse", "暴力・虐待", "violence and abuse"
    sexuality_gender = "sexuality_gender", "性・ジェンダー", "sexuality and gender"
    caregiving = "caregiving", "介護・看病", "caregiving"
    other = "other", "その他", "other"


@_labelled
class AgeBand(LabelledCode):
    """推定年代 — the counsellor's estimate of the person's age (estimated age band)."""

    under18 = "under18", "18歳以下", "18 or under"
    age19_29 = "age19_29", "19〜29歳", "19 to 29"
    age30s = "age30s", "30代", "30s"
    age40s = "age40s", "40代", "40s"
    age50s = "age50s", "50代", "50s"
    age60s = "age60s", "60代", "60s"
    age70plus = "age70plus", "70代以上", "70 or over"
    unknown = "unknown", "不明", "unknown"


@_labelled
class RiskLevel(LabelledCode):
    """リスク — the counsellor's assessment of risk to the person (risk level)."""

    none = "none", "なし", "none"
    low = "low", "低", "low"
    medium = "medium", "中", "medium"
    high = "high", "高", "high"
    imminent = "imminent", "切迫（生命の危険）", "imminent (danger to life)"


@_labelled
class Urgency(LabelledCode):
    """緊急度 — how fast a referral must be acknowledged (urgency)."""

    imminent = "imminent", "緊急", "imminent"
    urgent = "urgent", "至急", "urgent"
    standard = "standard", "通常", "standard"


@_labelled
class LegalBasisKind(LabelledCode):
    """提供の根拠 — why the person's information may be passed on (legal basis)."""

    consent = "consent", "本人同意", "the person's consent"
    vital_interest = "vital_interest", "生命等の保護", "protection of life, body or property"
    support_meeting = "support_meeting", "支援会議", "support meeting"
    law = "law", "法令", "laws and regulations"


@_labelled
class ReceiverType(LabelledCode):
    """つなぎ先の種別 — the kind of agency a referral goes to (receiver type)."""

    municipality = "municipality", "市区町村窓口", "municipal office"
    self_reliance_centre = "self_reliance_centre", "自立相談支援機関", "self-reliance support centre"
    police = "police", "警察", "police"
    npo = "npo", "NPO", "NPO"
    secretariat = "secretariat", "事務局", "secretariat"


@_labelled
class ReferralOutcome(LabelledCode):
    """つなぎの結果 — how a referral ended (referral outcome)."""

    got_help = "got_help", "支援につながった", "got help"
    referred_elsewhere = "referred_elsewhere", "他機関へつないだ", "referred elsewhere"
    could_not_contact = "could_not_contact", "本人と連絡がつかなかった", "could not contact the person"
    not_eligible = "not_eligible", "支援の対象外", "not eligible"
    no_capacity = "no_capacity", "受入れ余力なし", "no capacity"
    declined_by_person = "declined_by_person", "本人が辞退", "declined by the person"
    other = "other", "その他", "other"


@_labelled
class ReferralReason(LabelledCode):
    """つなぎの理由コード — why a referral was rejected, failed, cancelled or escalated."""

    no_legal_basis = "no_legal_basis", "提供の根拠なし", "no legal basis to pass the case on"
    consent_out_of_scope = "consent_out_of_scope", "同意の範囲外", "no receiver within the consent's scope"
    vital_interest_not_imminent = (
        "vital_interest_not_imminent",
        "生命等の保護は切迫時のみ",
        "vital interest applies only to imminent risk",
    )
    deadline_missed = "deadline_missed", "期限超過", "deadline missed"
    out_of_area = "out_of_area", "管轄外", "outside the receiver's area"
    not_our_service = "not_our_service", "対応分野外", "not a service the receiver provides"
    no_capacity = "no_capacity", "受入れ余力なし", "no capacity"
    could_not_contact = "could_not_contact", "本人と連絡がつかない", "could not contact the person"
    declined_by_person = "declined_by_person", "本人が辞退", "declined by the person"
    duplicate = "duplicate", "重複", "duplicate of another referral"
    withdrawn = "withdrawn", "依頼の取下げ", "request withdrawn"
    other = "other", "その他", "other"


ALL_CODE_LISTS: tuple[type[LabelledCode], ...] = (
    FieldCode,
    Channel,
    AbandonStage,
    ConsultationCategory,
    AgeBand,
    RiskLevel,
    Urgency,
    LegalBasisKind,
    ReceiverType,
    ReferralOutcome,
    ReferralReason,
)


def labels_of(code_list: type[LabelledCode]) -> list[dict[str, Any]]:
    """Every code of one list with its labels, in declaration order (for reports and docs)."""
    return [label(member) for member in code_list]
