"""A replay scenario: who calls (demand), what the telephony platform does, which desks answer
under which routing rules, how counsellors and receivers behave, and the seed.

A scenario is a YAML file (see ``scenarios/``); ``load_scenario`` validates it and resolves the
desk registry it names (``desks:``, a registry version file like ``config/trial1.yaml``, relative
to the scenario file or the repository), optionally with ``rules:`` overriding the registry's
routing rules and ``drop_tier2: true`` removing backup desks (a routing policy with no overflow).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

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
    document.update({k: v for k, v in overrides.items() if v is not None})
    scenario = Scenario.model_validate({**document, "path": p.resolve()})
    scenario.registry()  # the desks file must exist and be a valid registry
    return scenario
