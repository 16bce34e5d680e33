"""What the board keeps and returns: contacts, events held for the watermark, and decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

from schemas import event_type
from schemas.timezone import JST
from services.routing.domain.clock import parse_time

State = Literal["received", "waiting", "ringing", "talking"]
Reason = Literal["free_line", "line_freed", "overflow", "rerouted"]


@dataclass(frozen=True)
class Decision:
    """One event routing publishes: its short type, its event time and its data."""

    kind: str  # routing.assigned, routing.queued, routing.overflowed, routing.withdrawn
    at: datetime
    data: BaseModel

    @property
    def contact_id(self) -> str:
        contact_id: str = self.data.contact_id  # type: ignore[attr-defined]  # every routing event's data has one
        return contact_id


@dataclass
class Contact:
    contact_id: str
    prefecture: str | None = None
    field: str | None = None
    state: State = "received"
    priority: int = 0
    seq: int = 0  # tie-break of the queue order; kept when an assignment is withdrawn
    arrived: float = 0.0  # the field choice's own event time (POSIX seconds): the FIFO order
    queued_at: datetime | None = None
    overflow_at: datetime | None = None
    overflowed: bool = False
    rerouted: bool = False
    withdrawn_from: str | None = None  # the desk that let it ring out: offered elsewhere first
    received_at: datetime | None = None
    desk_id: str | None = None
    assigned_at: datetime | None = None
    ring_deadline: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        # Times as POSIX seconds: this runs for every contact on the board once per batch.
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if v is None or v is False:
                continue
            out[k] = v.timestamp() if type(v) is datetime else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Contact:
        c = cls(**d)
        for name in _TIMES:
            value = getattr(c, name)
            if isinstance(value, (int, float)):
                setattr(c, name, datetime.fromtimestamp(value, JST))
        return c


_TIMES = ("queued_at", "overflow_at", "assigned_at", "ring_deadline", "received_at")
# A contact that never chose a field (and whose end was never reported) is dropped after this.
FORGET_UNROUTED_AFTER = timedelta(hours=1)


class Held(NamedTuple):
    """An event read but not applied yet (event-time order): it waits for the watermark."""

    at: datetime
    kind: str  # short type
    data: BaseModel
    ident: tuple[str, str]  # (source, id): what the decisions it causes are named after

    def as_dict(self, stream: str) -> dict[str, Any]:
        return {"stream": stream, "at": self.at.isoformat(), "kind": self.kind, "ident": list(self.ident),
                "data": self.data.model_dump(mode="json", exclude_none=True)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Held:
        data = event_type(d["kind"]).data_model.model_validate(d["data"])
        return cls(parse_time(d["at"]), d["kind"], data, (d["ident"][0], d["ident"][1]))


def queue_entry(c: Contact) -> tuple[int, float, int, str]:
    """A contact's place in its field's queue: priority first, then its choice time, then arrival."""
    return (-c.priority, c.arrived, c.seq, c.contact_id)

