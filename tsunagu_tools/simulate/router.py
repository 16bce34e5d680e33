"""How the replay engine talks to routing: the events it sends through intake, the decisions it reads
back, and the routers that carry them — the running services' (simulate/stack.py) or, for a dry run,
routing's pure core in-process (``DryRouter``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

PLATFORM = "tel-platform"  # the platform partner: IVR, call events, heartbeats, its chat window's events


@dataclass
class Outgoing:
    """One event the simulator sends through intake: the partner organisation and the envelope."""

    org: str
    envelope: dict[str, Any]


@dataclass
class Seen:
    """A routing decision as the simulator reads it."""

    id: str
    kind: str
    contact_id: str
    at: float  # seconds from the replay's start
    desk_id: str | None = None
    organisation_id: str | None = None
    seat: int | None = None  # the seat of a chat/SNS assignment (routing.assigned); None on a phone line


class Router(Protocol):
    async def send(self, events: list[Outgoing]) -> None: ...
    async def sync(self, until: float, expect: set[str], model: list[Seen]) -> list[Seen]: ...
    async def decisions(self, timeout_ms: int) -> list[Seen]: ...
    async def settled(self, until: float) -> bool: ...
    async def referral_events(self) -> list[dict[str, Any]]: ...
    async def receiver_action(self, referral_id: str, receiver_id: str, action: str, body: dict | None) -> bool: ...


class DryRouter:
    """routing's pure core in-process: the model's decisions are the decisions."""

    async def send(self, events: list[Outgoing]) -> None:
        return None

    async def sync(self, until: float, expect: set[str], model: list[Seen]) -> list[Seen]:
        return model

    async def decisions(self, timeout_ms: int) -> list[Seen]:
        return []

    async def settled(self, until: float) -> bool:
        return True

    async def referral_events(self) -> list[dict[str, Any]]:
        return []

    async def receiver_action(self, referral_id: str, receiver_id: str, action: str, body: dict | None) -> bool:
        return True


