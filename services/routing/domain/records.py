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
Reason = Literal["free_line", "line_freed", "overflow", "rerouted", "transferred"]
# A field's queue, per channel: a call waits for a line, a chat for a seat.
QueueKey = tuple[str, str]  # (field, channel)
Entry = tuple[int, int, float, int, str]  # queue_entry(): the order within and across queues

# Triage orders a queue before priority: imminent first, none last. A contact with no triage ranks as
# medium — an unknown risk is not a reassuring one, so a contact triaged low or none waits behind it.
RISK_RANK = {"imminent": 4, "high": 3, "medium": 2, "low": 1, "none": 0}
UNTRIAGED_RANK = RISK_RANK["medium"]


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
    owner: str | None = None  # the organisation whose platform reported it (contact.received's sender)
    prefecture: str | None = None
    field: str | None = None
    channel: str = "phone"
    risk: str | None = None  # the latest triage (contact.triaged), if any
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
    seat: int | None = None  # the seat holding it (1-based); None on a phone line
    assigned_at: datetime | None = None
    ring_deadline: datetime | None = None
    target_desk: str | None = None  # a transfer's desk: offered there first
    transferred: bool = False  # handed on and not yet assigned again

    def as_dict(self) -> dict[str, Any]:
        # Times as POSIX seconds: this runs for every contact on the board once per batch.
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if v is None or v is False or (k == "channel" and v == "phone"):
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


def sender_of(source: str) -> str | None:
    """The organisation an event's source names (``/partners/<organisation>/<system>``, which intake
    checked against the partner's key); None for another producer's."""
    parts = source.split("/")
    return parts[2] if len(parts) > 3 and parts[1] == "partners" and parts[2] else None


def queue_entry(c: Contact) -> Entry:
    """A contact's place in its queue: triaged risk first, then priority, then its choice time, then arrival."""
    rank = RISK_RANK[c.risk] if c.risk is not None else UNTRIAGED_RANK
    return (-rank, -c.priority, c.arrived, c.seq, c.contact_id)


def queue_key(c: Contact) -> QueueKey:
    return (c.field or "", c.channel)

