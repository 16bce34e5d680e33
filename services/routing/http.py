"""Live state over HTTP: ``GET /v1/desks`` (lines free and busy) and ``GET /v1/queues``.

Read from the last committed board, so every instance answers the same. The secretariat sees
every desk and every queue with its contacts; a partner key sees its own organisation's desks and
only the sizes of the queues for the fields those desks serve.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from schemas import FieldCode
from services.routing.desks import is_open, opening_summary
from services.routing.handlers import Routing
from tsunagu.auth import Caller
from tsunagu.http_auth import AUTH_RESPONSES, require_roles

router = APIRouter(tags=["live state"], responses=AUTH_RESPONSES)
Reader = Annotated[Caller, Depends(require_roles("secretariat", "partner"))]


class DeskOut(BaseModel):
    desk_id: str
    organisation_id: str
    fields: list[str]
    tier: int
    lines: int
    busy: int = Field(description="calls ringing or talking on the desk's phone lines")
    free: int
    seats: int = Field(0, description="chat/SNS seats (席)")
    conversations_per_seat: int = Field(1, description="conversations one seat holds at once")
    seat_channels: list[str] = Field(default_factory=list, description="the text channels the seats take")
    blended: bool = Field(False, description="a seat holding nothing also takes a call")
    imminent: bool = Field(False, description="takes contacts triaged imminent from any field")
    seat_load: list[int] = Field(default_factory=list, description="conversations on each seat now (seat 1 first); "
                                 "a seat on a call shows its whole capacity")
    conversations_free: int = Field(0, description="conversations the seats could still take")
    open: bool
    hours: str
    regions: list[str]


class DesksOut(BaseModel):
    at: str | None = Field(description="the event time the board has reached")
    watermark: str | None = Field(None, description="every partition of contact.events has been read past this "
                                  "event time (timers fire up to it)")
    order: str = Field("arrival", description="arrival: events applied as read; event_time: held until every "
                       "partition passed them, then applied in event-time order (TSUNAGU_ROUTING_ORDER)")
    held: int = Field(0, description="events read and not applied yet (event_time order)")
    registry_version: str | None
    desks: list[DeskOut]


class WaitingOut(BaseModel):
    contact_id: str
    position: int
    priority: int
    channel: str = "phone"
    risk: str | None = Field(None, description="the latest triage, if any")
    waited_seconds: float
    overflowed: bool


class QueueOut(BaseModel):
    field: str
    label_ja: str
    waiting: int
    by_channel: dict[str, int] = Field(default_factory=dict, description="of them, per channel (phone, chat, sns)")
    overflowed: int
    oldest_wait_seconds: float | None
    contacts: list[WaitingOut] | None = Field(None, description="secretariat only")


class QueuesOut(BaseModel):
    at: str | None
    queues: list[QueueOut]


def _routing(request: Request) -> Routing:
    return request.app.state.routing


@router.get("/v1/desks", response_model=DesksOut, summary="Every desk's lines now: busy, free, open")
async def desks(request: Request, caller: Reader) -> DesksOut:
    board = await _routing(request).live_board()
    registry = board.registry_at(board.clock)
    out: list[DeskOut] = []
    for d in registry.desks if registry else ():
        if caller.role != "secretariat" and d.organisation_id != caller.org_id:
            continue
        busy = board.on_lines.get(d.id, 0)
        loads = board.seat_load.get(d.id, {})
        calls = board.seat_calls.get(d.id, set())
        out.append(DeskOut(
            desk_id=d.id, organisation_id=d.organisation_id, fields=[f.value for f in d.fields], tier=d.tier,
            lines=d.lines, busy=busy, free=max(0, d.lines - busy), seats=d.seats,
            conversations_per_seat=d.conversations_per_seat, seat_channels=[c.value for c in d.seat_channels],
            blended=d.blended, imminent=d.imminent,
            seat_load=[d.conversations_per_seat if k in calls else loads.get(k, 0)
                       for k in range(1, max([d.seats, *loads, *calls]) + 1)],
            conversations_free=board.free_conversations(d),
            open=is_open(d, board.clock) if board.clock else False, hours=opening_summary(d),
            regions=list(d.regions),
        ))
    watermark = board.watermark
    return DesksOut(at=board.clock.isoformat() if board.clock else None,
                    watermark=watermark.isoformat() if watermark else None,
                    order=_routing(request).settings.routing_order, held=sum(len(q) for q in board.held.values()),
                    registry_version=registry.version if registry else None, desks=out)


@router.get("/v1/queues", response_model=QueuesOut, summary="Who waits for which field, and how long")
async def queues(request: Request, caller: Reader) -> QueuesOut:
    board = await _routing(request).live_board()
    registry = board.registry_at(board.clock)
    visible = {f.value for f in FieldCode}
    if caller.role != "secretariat":
        visible = {f.value for d in (registry.desks if registry else ()) if d.organisation_id == caller.org_id
                   for f in d.fields}
    out: list[QueueOut] = []
    for code in FieldCode:
        if code.value not in visible:
            continue
        waiting = board.waiting(code.value)
        waits = [(board.clock - c.queued_at).total_seconds() if board.clock and c.queued_at else 0.0
                 for c in waiting]
        contacts = None
        if caller.role == "secretariat":
            contacts = [WaitingOut(contact_id=c.contact_id, position=i + 1, priority=c.priority, channel=c.channel,
                                   risk=c.risk, waited_seconds=w, overflowed=c.overflowed)
                        for i, (c, w) in enumerate(zip(waiting, waits, strict=True))]
        by_channel: dict[str, int] = {}
        for c in waiting:
            by_channel[c.channel] = by_channel.get(c.channel, 0) + 1
        out.append(QueueOut(field=code.value, label_ja=code.ja, waiting=len(waiting), by_channel=by_channel,
                            overflowed=sum(1 for c in waiting if c.overflowed),
                            oldest_wait_seconds=max(waits) if waits else None, contacts=contacts))
    return QueuesOut(at=board.clock.isoformat() if board.clock else None, queues=out)
