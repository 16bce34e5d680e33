"""The secretariat's definitions (docs/definitions.md, binding), and the groupings and labels of its figures.

- call attempts (呼出件数): phone ``contact.received`` in the period (by its event time);
- connected (接続完了): ``contact.answered`` for those contacts, whenever it was answered;
- answer rate (応答率): connected / attempts; per field among the contacts that chose it;
- a contact that hangs up in the IVR before choosing counts as an attempt with no field.

``answer_rate_counts`` counts them over folded facts in Python: the definition the store's SQL is
checked against.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.codes import AgeBand, Channel, FieldCode, LabelledCode, ReceiverType, RiskLevel, Urgency
from schemas.timezone import JST
from services.metrics.domain.facts import ContactFacts
from services.metrics.domain.periods import Period

# group_by dimension -> the code list that labels its keys (None: keys are ids, hours or days)
DIMENSIONS: dict[str, type[LabelledCode] | None] = {
    "field": FieldCode,
    "organisation": None,
    "desk": None,
    "channel": Channel,
    "prefecture": None,
    "hour": None,
    "day": None,
}
CONSULTATION_DIMENSIONS: dict[str, type[LabelledCode] | None] = {
    "field": FieldCode, "organisation": None, "desk": None, "hour": None, "day": None,
    "age_band": AgeBand, "risk": RiskLevel,
}
REFERRAL_DIMENSIONS: dict[str, type[LabelledCode] | None] = {
    "receiver_type": ReceiverType, "state": None, "urgency": Urgency, "organisation": None, "day": None,
}
NO_FIELD = {"code": None, "ja": "分野未選択", "en": "no field chosen"}


def key_label(dimension: str, key: Any, codes: dict[str, type[LabelledCode] | None] = DIMENSIONS) -> dict[str, Any]:
    """``{"code", "ja", "en"}`` for a group key (the code list's labels where there is one)."""
    code_list = codes.get(dimension)
    if key is None:
        return NO_FIELD if dimension == "field" else {"code": None, "ja": "不明", "en": "unknown"}
    if code_list is not None:
        try:
            member = code_list(key)  # type: ignore[call-arg]  # a lookup by value, not the members' __new__
            return {"code": member.value, "ja": member.ja, "en": member.en}
        except ValueError:
            pass
    return {"code": key, "ja": str(key), "en": str(key)}


@dataclass(frozen=True)
class CountedContact:
    """A contact as the secretariat counts it (the same view store.sql.CONTACTS_VIEW computes in SQL)."""

    received_at: datetime
    channel: str
    prefecture: str | None
    caller_key: str | None
    field: str | None  # chosen in the menu, else the field routing assigned
    organisation: str | None  # that answered, else last assigned
    desk: str | None
    connected: bool
    abandon_stage: str | None  # only when not answered

    def key(self, dimension: str) -> Any:
        if dimension == "hour":
            return self.received_at.astimezone(JST).hour
        if dimension == "day":
            return self.received_at.astimezone(JST).date().isoformat()
        return getattr(self, dimension)


def counted(f: ContactFacts) -> CountedContact | None:
    """None until the contact's contact.received has arrived (it is not an attempt before that)."""
    if f.received is None:
        return None
    answered = f.answered
    assigned = f.assigned
    return CountedContact(
        received_at=f.received[0], channel=f.received[2], caller_key=f.received[3], prefecture=f.received[4],
        field=f.chosen[2] if f.chosen else (assigned[4] if assigned else None),
        organisation=answered[4] if answered else (assigned[3] if assigned else None),
        desk=answered[3] if answered else (assigned[2] if assigned else None),
        connected=answered is not None,
        abandon_stage=f.abandoned[2] if f.abandoned and answered is None else None,
    )


def answer_rate_counts(
    contacts: Iterable[ContactFacts], period: Period, dimension: str | None = None,
    channel: str | None = "phone", organisation: str | None = None,
) -> dict[Any, dict[str, int]]:
    """The secretariat's counts per group key (``"total"`` for all): attempts, connected, abandoned
    (and in the IVR / queue), callers and callers who got through at least once."""
    groups: dict[Any, dict[str, Any]] = {}
    for facts in contacts:
        c = counted(facts)
        if c is None or not (period.start <= c.received_at < period.end):
            continue
        if channel is not None and c.channel != channel:
            continue
        if organisation is not None and c.organisation != organisation:
            continue
        for key in ("total", *((c.key(dimension),) if dimension else ())):
            g = groups.setdefault(key, {"attempts": 0, "connected": 0, "abandoned": 0, "abandoned_ivr": 0,
                                        "abandoned_queue": 0, "callers": set(), "callers_connected": set()})
            g["attempts"] += 1
            g["connected"] += c.connected
            g["abandoned"] += c.abandon_stage is not None
            g["abandoned_ivr"] += c.abandon_stage == "ivr"
            g["abandoned_queue"] += c.abandon_stage == "queue"
            if c.caller_key is not None:
                g["callers"].add(c.caller_key)
                if c.connected:
                    g["callers_connected"].add(c.caller_key)
    return {k: {n: len(v) if isinstance(v, set) else v for n, v in g.items()} for k, g in groups.items()}


def rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None
