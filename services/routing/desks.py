"""The desk registry, pure: organisations, their desks, and the routing parameters of one version.

A registry version is a YAML document (see ``config/trial1.yaml``) with an ``effective_from`` time;
routing uses, at each moment of event time, the newest version already in effect. So a partner
joining or a desk gaining lines between trial periods is a new file applied ahead of time — no
restart, and contacts in flight keep their queue place and their line.

Opening hours are in Asia/Tokyo. A desk is open when any of its ranges covers the moment; a range
whose ``close`` is not after its ``open`` runs past midnight. ``hours: always`` is 24 hours.
``closed_on_holidays`` closes a desk on Japanese public holidays (jpholiday).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Annotated, Literal

import jpholiday
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas import FieldCode, Id, PrefectureCode
from schemas.codes import Channel
from schemas.timezone import JST

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HoursRange(Closed):
    """One weekly opening range, e.g. mon–fri 10:00–22:00 (close ``24:00`` = midnight)."""

    days: Annotated[tuple[Day, ...], Field(min_length=1)]
    open: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    close: str = Field(pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")

    def minutes(self) -> tuple[int, int]:
        oh, om = map(int, self.open.split(":"))
        ch, cm = map(int, self.close.split(":"))
        return oh * 60 + om, ch * 60 + cm


class Desk(Closed):
    """A consultation desk (相談窓口) of one organisation."""

    id: Id
    fields: Annotated[tuple[FieldCode, ...], Field(min_length=1)]
    lines: int = Field(ge=0, le=10_000, description="phone lines: simultaneous calls the desk can hold")
    seats: int = Field(0, ge=0, le=10_000, description="chat/SNS seats: counsellors at a keyboard")
    conversations_per_seat: int = Field(
        1, ge=1, le=20, description="conversations one seat holds at once (chat and SNS)"
    )
    seat_channels: tuple[Channel, ...] = Field(
        (Channel.chat, Channel.sns), description="the text channels the seats take"
    )
    blended: bool = Field(
        False, description="a seat holding no conversation also answers a call (and takes no chat while on it)"
    )
    imminent: bool = Field(False, description="takes contacts triaged as imminent risk from any field")
    tier: int = Field(1, ge=1, le=2, description="1 = primary, 2 = backup (overflow only)")
    hours: Literal["always"] | tuple[HoursRange, ...] = "always"
    closed_on_holidays: bool = False
    regions: tuple[PrefectureCode, ...] = Field((), description="prefectures the desk prefers")
    languages: tuple[str, ...] = ("ja",)
    organisation_id: str = ""  # filled from the enclosing organisation

    def serves(self, field: str) -> bool:
        return field in self.fields

    def takes(self, channel: str) -> bool:
        """Can the desk hold a contact of ``channel`` at all (lines for calls, seats for text)?"""
        if channel == "phone":
            return self.lines > 0 or (self.blended and self.seats > 0)
        return self.seats > 0 and channel in self.seat_channels

    @field_validator("seat_channels")
    @classmethod
    def _text_only(cls, value: tuple[Channel, ...]) -> tuple[Channel, ...]:
        if Channel.phone in value:
            raise ValueError("seat_channels: seats take chat and sns; calls go to lines (or blended seats)")
        return value


class Organisation(Closed):
    id: Id
    name: str = Field(min_length=1, max_length=200)
    desks: Annotated[tuple[Desk, ...], Field(min_length=1)]


def _known_field_seconds(value: dict[str, float], name: str) -> dict[str, float]:
    allowed = {"default", *FieldCode}
    for key, seconds in value.items():
        if key not in allowed:
            raise ValueError(f"{name}: unknown field {key!r}")
        if seconds < 0:
            raise ValueError(f"{name}: seconds must not be negative")
    return value


class ChannelRules(Closed):
    """A text channel's own clock: a chat waits minutes where a call waits seconds."""

    overflow_after_s: dict[str, float] = Field(
        default_factory=lambda: {"default": 300.0},
        description="seconds a chat waits before tier-2 desks may take it; per field or 'default'",
    )
    offer_timeout_s: float = Field(
        120.0, gt=0, description="a chat offered to a seat with no first response by then is withdrawn"
    )

    @field_validator("overflow_after_s")
    @classmethod
    def _known_fields(cls, value: dict[str, float]) -> dict[str, float]:
        return _known_field_seconds(value, "overflow_after_s")


class RoutingRules(Closed):
    """The knobs of one registry version."""

    priority_fields: tuple[FieldCode, ...] = Field(
        (FieldCode.suicidal, FieldCode.under18), description="served first, in this order"
    )
    overflow_after_s: dict[str, float] = Field(
        default_factory=lambda: {"default": 30.0},
        description="seconds a contact waits before tier-2 desks may take it; per field or 'default'",
    )
    ring_timeout_s: float = Field(20.0, gt=0, description="an assignment not answered by then is withdrawn")
    channels: dict[Literal["chat", "sns"], ChannelRules] = Field(
        default_factory=dict,
        description="the text channels' own waits and offer timeouts (default: 300 s overflow, 120 s offer)",
    )

    @field_validator("overflow_after_s")
    @classmethod
    def _known_fields(cls, value: dict[str, float]) -> dict[str, float]:
        return _known_field_seconds(value, "overflow_after_s")

    def overflow_after(self, field: str, channel: str = "phone") -> float:
        waits = self.overflow_after_s if channel == "phone" else self._text(channel).overflow_after_s
        fallback = 30.0 if channel == "phone" else 300.0
        return float(waits.get(field, waits.get("default", fallback)))

    def offer_timeout(self, channel: str = "phone") -> float:
        """Seconds an assignment may ring (a call) or wait for its first response (a chat)."""
        return self.ring_timeout_s if channel == "phone" else self._text(channel).offer_timeout_s

    def _text(self, channel: str) -> ChannelRules:
        rules = self.channels.get(channel)  # type: ignore[call-overload]
        return rules if rules is not None else _DEFAULT_TEXT_RULES

    def priority(self, field: str) -> int:
        """Higher is served first: the first priority field gets the highest number; others 0."""
        if field in self.priority_fields:
            return len(self.priority_fields) - self.priority_fields.index(FieldCode(field))
        return 0


_DEFAULT_TEXT_RULES = ChannelRules()


class Registry(Closed):
    """One effective-dated version of the desk network."""

    version: Id
    effective_from: AwareDatetime
    rules: RoutingRules = Field(default_factory=RoutingRules)
    menu: dict[Annotated[int, Field(ge=0, le=9)], FieldCode] = Field(
        default_factory=dict, description="the voice menu's keys (documentation: events carry the key pressed)"
    )
    organisations: tuple[Organisation, ...] = ()

    @model_validator(mode="after")
    def _desks_know_their_organisation(self) -> Registry:
        seen: set[str] = set()
        orgs: list[Organisation] = []
        for org in self.organisations:
            desks = []
            for desk in org.desks:
                if desk.id in seen:
                    raise ValueError(f"desk id {desk.id!r} appears twice")
                seen.add(desk.id)
                desks.append(desk.model_copy(update={"organisation_id": org.id}))
            orgs.append(org.model_copy(update={"desks": tuple(desks)}))
        object.__setattr__(self, "organisations", tuple(orgs))
        return self

    @property
    def desks(self) -> tuple[Desk, ...]:
        return tuple(d for org in self.organisations for d in org.desks)

    def fields(self) -> set[str]:
        return {f.value for d in self.desks for f in d.fields}


def parse_registry(document: object) -> Registry:
    """A registry version from a decoded YAML/JSON document (pydantic errors name the path)."""
    return Registry.model_validate(document)


@lru_cache(maxsize=4096)
def _holiday(day: object) -> bool:
    return bool(jpholiday.is_holiday(day))


def is_open(desk: Desk, at: datetime) -> bool:
    """Is ``desk`` open at ``at`` (any timezone; hours are read in Asia/Tokyo)?"""
    if desk.hours == "always" and not desk.closed_on_holidays:
        return True
    local = at.astimezone(JST)
    if desk.closed_on_holidays and _holiday(local.date()):
        return False
    if desk.hours == "always":
        return True
    minute = local.hour * 60 + local.minute
    today = DAYS[local.weekday()]
    yesterday = DAYS[(local.weekday() - 1) % 7]
    for r in desk.hours:
        start, end = r.minutes()
        if start < end:
            if today in r.days and start <= minute < end:
                return True
        else:  # runs past midnight
            if today in r.days and minute >= start:
                return True
            if yesterday in r.days and minute < end:
                return True
    return False


def opening_summary(desk: Desk) -> str:
    if desk.hours == "always":
        text = "24h"
    else:
        text = ", ".join(f"{'/'.join(r.days)} {r.open}-{r.close}" for r in desk.hours)
    return text + (" (closed on holidays)" if desk.closed_on_holidays else "")


__all__ = ["ChannelRules", "Desk", "HoursRange", "Organisation", "Registry", "RoutingRules", "is_open",
           "opening_summary", "parse_registry"]
