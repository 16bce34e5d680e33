"""A replay scenario: who calls (demand), what the telephony platform does, which desks answer
under which routing rules, how counsellors and receivers behave, and the seed — and, optionally,
the chat/SNS users of a text window beside the phone line (``chat:``, see ``Chat``).

A scenario is a YAML file (see ``scenarios/``); ``load_scenario`` validates it and resolves the
desk registry it names (``desks:``, a registry version file like ``config/trial1.yaml``, relative
to the scenario file or the repository), optionally with ``rules:`` overriding the registry's
routing rules and ``drop_tier2: true`` removing backup desks (a routing policy with no overflow).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.codes import AgeBand, ConsultationCategory, FieldCode, ReferralOutcome, RiskLevel
from services.routing.desks import Registry, parse_registry

ROOT = Path(__file__).resolve().parents[2]
Weights = dict[str, Annotated[float, Field(ge=0)]]
Range = tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _known(weights: dict[str, float], codes: type, what: str) -> dict[str, float]:
    allowed = {c.value for c in codes} | {"default"}
    unknown = set(weights) - allowed
    if unknown:
        raise ValueError(f"{what}: unknown code(s) {sorted(unknown)}")
    return weights


class Demand(Closed):
    """The callers: how many, when, what they choose, how long they wait."""

    attempts: int = Field(ge=1, le=2_000_000, description="call attempts in the scenario (exactly this many)")
    hourly: Annotated[tuple[float, ...], Field(min_length=24, max_length=24)] = Field(
        (1.0,) * 24, description="relative arrival rate by hour of day (JST, 0-23)")
    repeat_share: float = Field(0.3, ge=0, lt=1, description="share of attempts that are a caller's redial")
    ivr_abandon: float = Field(0.05, ge=0, le=1, description="share who hang up in the menu before choosing")
    ivr_seconds: Range = Field((10.0, 25.0), description="menu greeting before the first key (uniform)")
    seconds_per_key: float = Field(2.5, ge=0, description="each earlier menu position adds this to the choice time")
    fields: Weights = Field(description="field mix among those who choose")
    patience_s: Weights = Field(
        {"default": 90.0}, description="mean queue patience (exponential) by field; 'default' for the rest")
    prefectures: Weights = Field(
        {"13": 11, "14": 7, "27": 7, "23": 6, "11": 6, "12": 5, "01": 4, "28": 4, "40": 4, "22": 3,
         "26": 2, "34": 2, "04": 2, "15": 2, "08": 2, "20": 2, "47": 1, "33": 1, "43": 1, "07": 1},
        description="callers' prefectures (population-like weights)")

    @model_validator(mode="after")
    def _codes(self) -> Demand:
        _known(self.fields, FieldCode, "demand.fields")
        _known(self.patience_s, FieldCode, "demand.patience_s")
        if not any(self.fields.values()):
            raise ValueError("demand.fields: at least one field needs a weight")
        return self

    def patience(self, field: str) -> float:
        return float(self.patience_s.get(field, self.patience_s.get("default", 90.0)))


class Platform(Closed):
    """The telephony platform: menu timing, a busy message after a capped queue wait, ringing."""

    max_queue_s: float | None = Field(
        None, gt=0, description="the platform plays a busy message and drops a caller queued this long")
    pickup_s: Range = Field((3.0, 12.0), description="ringing until a counsellor picks up (uniform; > 0)")
    no_pickup: float = Field(0.0, ge=0, le=1, description="share of rings nobody picks up (routing's ring timeout)")
    heartbeat_s: float = Field(0.0, ge=0, description="extra heartbeats every N s of quiet time (0 = only at syncs)")


class Counsellors(Closed):
    """After the talk, a consultation record (codes only)."""

    talk_s: Weights = Field({"default": 1200.0}, description="mean talk time by field (log-normal)")
    talk_sigma: float = Field(0.6, gt=0, le=2, description="log-normal sigma of the talk time")
    wrapup_s: Range = Field((60.0, 300.0), description="end of the talk to the consultation record")
    categories: Weights = Field(description="consultation types, weights; 1-3 drawn per consultation")
    age_bands: Weights
    risk: dict[str, Weights] = Field(description="risk level weights by field ('default' for the rest)")
    referral_by_risk: Weights = Field(description="chance a consultation needs a handoff, by risk level")
    consent: float = Field(0.8, ge=0, le=1, description="chance the person consents to a handoff")

    @model_validator(mode="after")
    def _codes(self) -> Counsellors:
        _known(self.talk_s, FieldCode, "counsellors.talk_s")
        _known(self.categories, ConsultationCategory, "counsellors.categories")
        _known(self.age_bands, AgeBand, "counsellors.age_bands")
        _known(self.referral_by_risk, RiskLevel, "counsellors.referral_by_risk")
        _known(self.risk, FieldCode, "counsellors.risk")
        for weights in self.risk.values():
            _known(weights, RiskLevel, "counsellors.risk")
        return self

    def talk(self, field: str) -> float:
        return float(self.talk_s.get(field, self.talk_s.get("default", 1200.0)))


class Triage(Closed):
    """The platform's screening (codes only): how many are screened, when the result comes, the risk."""

    share: float = Field(0.8, ge=0, le=1, description="share of chat users whose screening result is reported")
    after_s: Range = Field((30.0, 180.0), description="first message to the screening result (uniform)")
    late_share: float = Field(0.2, ge=0, le=1, description="share of results that come late (late_after_s)")
    late_after_s: Range = Field((300.0, 1200.0), description="first message to a late result (uniform)")
    instrument: str | None = Field(None, description="the screening questionnaire's code, if the platform names it")
    risk: dict[str, Weights] = Field(
        {"default": {"none": 20, "low": 40, "medium": 30, "high": 9, "imminent": 1}},
        description="risk level weights by field ('default' for the rest)")

    @model_validator(mode="after")
    def _codes(self) -> Triage:
        _known(dict.fromkeys(self.risk, 1.0), FieldCode, "chat.triage.risk")
        for weights in self.risk.values():
            _known(weights, RiskLevel, "chat.triage.risk")
        return self


class Transfer(Closed):
    """Chats a counsellor hands on to the phone desk (``contact.transferred`` with ``to_channel: phone``)."""

    share_by_risk: Weights = Field({}, description="chance an answered chat is handed to the phone, by its risk")
    after_s: Range = Field((600.0, 1800.0), description="first response to the hand-over (uniform)")
    to_desk: str | None = Field(None, description="the phone desk taking it (to_desk_id)")
    to_field: str | None = Field(None, description="or the field whose desks take it (to_field)")
    patience_s: float = Field(600.0, gt=0, description="the person waits this long for the phone counsellor, "
                              "then the conversation ends")

    @model_validator(mode="after")
    def _target(self) -> Transfer:
        _known(self.share_by_risk, RiskLevel, "chat.transfer.share_by_risk")
        if self.share_by_risk and self.to_desk is None and self.to_field is None:
            raise ValueError("chat.transfer: name to_desk or to_field")
        if self.to_field is not None:
            _known({self.to_field: 1.0}, FieldCode, "chat.transfer.to_field")
        return self


class Chat(Closed):
    """The users of a chat/SNS window: arrivals, typing, patience measured in minutes, leaving without a
    word, the platform's screening, the counsellors' first response and conversations at a seat holding
    several, and hand-overs to the phone desk."""

    channel: Literal["chat", "sns"] = Field("sns", description="the contacts' channel (LINE is sns)")
    attempts: int | None = Field(None, ge=0, le=2_000_000, description="conversations opened (exactly this many)")
    share: float | None = Field(None, ge=0, le=100, description="or: this many per phone call attempt")
    hourly: Annotated[tuple[float, ...], Field(min_length=24, max_length=24)] = Field(
        (1.0,) * 24, description="relative arrival rate by hour of day (JST, 0-23)")
    repeat_share: float = Field(0.3, ge=0, lt=1, description="share of conversations opened by a returning user")
    fields: Weights = Field(description="field mix (the window's menu or the account's field)")
    typing_s: Range = Field((20.0, 120.0), description="opening the talk to the first message (uniform)")
    silent_share: float = Field(0.0, ge=0, le=1, description="share who open the talk and never write")
    patience_s: Weights = Field({"default": 900.0}, description="mean wait (exponential) before leaving, by field")
    inactivity_timeout_s: float = Field(
        600.0, gt=0, description="the platform reports a silent user gone after this long without activity")
    triage: Triage = Triage()
    first_response_s: Range = Field((20.0, 90.0), description="offered to a seat to the counsellor's first "
                                    "response, at a seat holding only this conversation (uniform; > 0); one later "
                                    "than routing's offer timeout never comes: the offer is withdrawn first")
    no_response: float = Field(0.0, ge=0, le=1, description="share of offers with no first response before the "
                               "offer timeout (routing withdraws them)")
    conversation_s: Weights = Field({"default": 3600.0}, description="mean conversation (log-normal) by field, "
                                    "at a seat holding only this one")
    conversation_sigma: float = Field(0.5, gt=0, le=2, description="log-normal sigma of the conversation")
    slowdown_per_conversation: float = Field(
        0.25, ge=0, le=2, description="each further conversation the seat holds lengthens the first response and "
        "the conversation by this fraction")
    transfer: Transfer = Transfer()
    reference: str = Field("", description="a published figure to read the replay beside (printed by the demo)")
    age_bands: Weights | None = Field(None, description="age bands of chat consultations (else the counsellors')")
    categories: Weights | None = Field(None, description="consultation types of chats (else the counsellors')")

    @model_validator(mode="after")
    def _codes(self) -> Chat:
        _known(self.fields, FieldCode, "chat.fields")
        _known(self.patience_s, FieldCode, "chat.patience_s")
        _known(self.conversation_s, FieldCode, "chat.conversation_s")
        if self.age_bands is not None:
            _known(self.age_bands, AgeBand, "chat.age_bands")
        if self.categories is not None:
            _known(self.categories, ConsultationCategory, "chat.categories")
        if not any(self.fields.values()):
            raise ValueError("chat.fields: at least one field needs a weight")
        if (self.attempts is None) == (self.share is None):
            raise ValueError("chat: give attempts or share (per phone call attempt), not both")
        return self

    def count(self, phone_attempts: int) -> int:
        return self.attempts if self.attempts is not None else round((self.share or 0.0) * phone_attempts)

    def patience(self, field: str) -> float:
        return float(self.patience_s.get(field, self.patience_s.get("default", 900.0)))

    def conversation(self, field: str) -> float:
        return float(self.conversation_s.get(field, self.conversation_s.get("default", 3600.0)))

    def risk_weights(self, field: str) -> dict[str, float]:
        return self.triage.risk.get(field, self.triage.risk.get("default", {"medium": 1.0}))


class Receivers(Closed):
    """Receiving agencies working their referrals through the referral API."""

    acknowledge_s: Range = Field((300.0, 7200.0), description="referral created to acknowledged")
    accept_s: Range = Field((600.0, 14400.0), description="acknowledged to accepted (then started)")
    complete_s: Range = Field((3600.0, 172800.0), description="started to completed")
    outcomes: Weights = Field({"got_help": 6, "referred_elsewhere": 2, "could_not_contact": 1, "declined_by_person": 1})

    @model_validator(mode="after")
    def _codes(self) -> Receivers:
        _known(self.outcomes, ReferralOutcome, "receivers.outcomes")
        return self


class Published(Closed):
    """The published figures this scenario is meant to reproduce (for the side-by-side report)."""

    attempts: int | None = None
    connected: int | None = None
    answer_rate: float | None = None
    answer_rate_by_field: dict[str, float] = {}
    referrals: int | None = None
    source: str = ""


class Scenario(Closed):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    label: str = ""
    seed: int = 9999
    start: AwareDatetime
    days: float = Field(7.0, gt=0, le=60)
    desks: str = Field(description="a desk registry version file (YAML), relative to the scenario or the repo")
    rules: dict[str, Any] | None = Field(None, description="override of the registry's routing rules")
    drop_tier2: bool = Field(False, description="remove tier-2 (backup) desks: no overflow at all")
    demand: Demand
    platform: Platform = Platform()
    counsellors: Counsellors
    receivers: Receivers = Receivers()
    chat: Chat | None = Field(None, description="a chat/SNS window's users beside the callers (none: phone only)")
    published: Published = Published()
    path: Path | None = Field(None, exclude=True)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=round(self.days * 86400))

    def registry(self, version: str | None = None, effective_from: datetime | None = None) -> Registry:
        """The scenario's desk registry, optionally re-versioned and re-dated (for a shifted replay)."""
        document = self.registry_document(version, effective_from)
        return parse_registry(document)

    def registry_document(self, version: str | None = None, effective_from: datetime | None = None) -> dict:
        base = self.path.parent if self.path else ROOT
        path = next((p for p in (base / self.desks, ROOT / self.desks) if p.exists()), None)
        if path is None:
            raise ValueError(f"desks: {self.desks} not found (relative to {base} or {ROOT})")
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        if self.rules is not None:
            document["rules"] = {**document.get("rules", {}), **self.rules}
        if self.drop_tier2:
            document["organisations"] = [
                {**org, "desks": [d for d in org["desks"] if d.get("tier", 1) == 1]}
                for org in document["organisations"]
                if any(d.get("tier", 1) == 1 for d in org["desks"])
            ]
        document["version"] = version or f"sim.{self.name}"
        document["effective_from"] = (effective_from or self.start).isoformat()
        return document


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path) -> dict[str, Any]:
    """A scenario document; ``extends: other.yaml`` starts from another scenario (keys merged)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    parent = document.pop("extends", None)
    if parent is None:
        return document
    base = _read(path.parent / parent)
    base.pop("published", None)  # the published figures belong to the scenario that names them
    if "desks" not in document:  # the parent's desks, relative to the parent's file
        document["desks"] = str(((path.parent / parent).parent / base["desks"]).resolve())
    return _merge(base, document)


def load_scenario(path: str | Path, **overrides: Any) -> Scenario:
    """Read and validate a scenario file; ``overrides`` replace top-level keys (e.g. seed, days)."""
    p = Path(path)
    if not p.exists() and (ROOT / p).exists():
        p = ROOT / p
    document = _read(p)
    if overrides.get("days") is not None and overrides.get("demand") is None:
        # A shorter (or longer) replay of the same demand: the attempts scale with the days.
        scale = float(overrides["days"]) / float(document.get("days", 7.0))
        document["demand"] = {**document["demand"], "attempts": max(1, round(document["demand"]["attempts"] * scale))}
        chat = document.get("chat")
        if chat is not None and chat.get("attempts") is not None and overrides.get("chat") is None:
            document["chat"] = {**chat, "attempts": round(chat["attempts"] * scale)}
    document.update({k: v for k, v in overrides.items() if v is not None})
    scenario = Scenario.model_validate({**document, "path": p.resolve()})
    scenario.registry()  # the desks file must exist and be a valid registry
    return scenario
