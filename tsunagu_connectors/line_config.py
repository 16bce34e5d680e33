"""The LINE connector's mapping config (YAML; samples/line/mapping.yaml and samples/line/with-console/
mapping.yaml): silence, channel, field, the screening table, and the console's desks. Read once at start,
refusing unknown codes there rather than at the first webhook."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.codes import Channel, FieldCode, RiskLevel
from tsunagu_connectors.webhooks import code_of, load_yaml

PLATFORM = "line"


@dataclass(frozen=True)
class Triage:
    """How the account's screening buttons become a risk code: each postback ``data`` string a button
    carries → a risk code (``none`` … ``imminent``), and the questionnaire's code (e.g. ``k6``)."""

    postbacks: Mapping[str, RiskLevel] = dataclasses.field(default_factory=dict)
    instrument: str | None = None


@dataclass(frozen=True)
class LineConfig:
    """The partner's mapping: how long a silence ends a conversation, the channel code, the field this
    LINE account serves (when it serves one), the screening table, and whether the counsellors' console
    reports first responses (``console``) with the desks it names."""

    silence_minutes: float = 30.0
    channel: Channel = Channel.chat
    field: FieldCode | None = None
    menu_position: int = 0
    region: str | None = None
    system: str = PLATFORM
    triage: Triage = dataclasses.field(default_factory=Triage)
    console: bool = False
    desks: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the console's desk name → tsunagu desk id

    @property
    def silence_ms(self) -> int:
        return int(self.silence_minutes * 60_000)


_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}").fullmatch  # the contract's Id (schemas/events.py)


def _triage_from(raw: object) -> Triage:
    if raw is None:
        return Triage()
    if not isinstance(raw, dict) or not isinstance(raw.get("postbacks"), dict):
        raise ValueError("triage: a mapping with postbacks: {<postback data>: <risk>}")
    postbacks = {str(data): code_of(RiskLevel, risk, "triage.postbacks") for data, risk in raw["postbacks"].items()}
    instrument = raw.get("instrument")
    if instrument is not None and not (isinstance(instrument, str) and _ID(instrument)):
        raise ValueError("triage.instrument: a code of letters, digits and . _ : - (e.g. k6)")
    return Triage(postbacks, instrument)


def _desks_from(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) and _ID(v) for v in raw.values()):
        raise ValueError("desks: a mapping of the console's desk names to tsunagu desk ids")
    return {str(name): desk for name, desk in raw.items()}


def config_from(raw: dict[str, Any]) -> LineConfig:
    """The config from its YAML form (see samples/line/mapping.yaml); refuses unknown codes early."""
    try:
        silence = float(raw.get("silence_minutes", 30))
        if not silence > 0:
            raise ValueError
    except (TypeError, ValueError) as err:
        raise ValueError("silence_minutes: a positive number of minutes") from err
    channel = code_of(Channel, raw.get("channel", "chat"), "channel")
    field_ = None if raw.get("field") is None else code_of(FieldCode, raw["field"], "field")
    position = raw.get("menu_position", 0)
    if not isinstance(position, int) or not 0 <= position <= 9:
        raise ValueError("menu_position: 0-9")
    region = raw.get("region")
    console = raw.get("console", False)
    if not isinstance(console, bool):
        raise ValueError("console: true or false")
    return LineConfig(silence_minutes=silence, channel=channel, field=field_, menu_position=position,
                      region=None if region is None else str(region), system=str(raw.get("system", PLATFORM)),
                      triage=_triage_from(raw.get("triage")), console=console, desks=_desks_from(raw.get("desks")))


def load_config(path: Path) -> LineConfig:
    return config_from(load_yaml(path))
