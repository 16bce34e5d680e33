"""Events of a mixed phone, chat and SNS log, as metrics reads them: builders one event each, and a
seeded log with triage, seats, withdrawn offers, transfers and abandonments (unit and integration tests)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from services.metrics.domain.periods import Period
from tests.integration.metrics_support import TRIAL1, caller_key, event

PLATFORM = "/partners/chat-platform/chat"
TEL = "/partners/tel-platform/telephony"
ROUTING = "/tsunagu/routing"
DAY = Period(TRIAL1, TRIAL1 + timedelta(days=1))


def s(seconds: float) -> datetime:
    return TRIAL1 + timedelta(seconds=seconds)


def received(cid: str, at: float, channel: str = "chat", caller: int = 1) -> dict[str, Any]:
    return event("contact.received", f"{cid}-r", s(at), {"contact_id": cid, "channel": channel,
                                                          "caller_key": caller_key(caller, channel)}, PLATFORM)


def assigned(cid: str, at: float, desk: str = "chat-a", seat: int | None = 1, capacity: int | None = 2,
             channel: str = "chat", n: int = 1, reason: str = "free_line") -> dict[str, Any]:
    data: dict[str, Any] = {"contact_id": cid, "desk_id": desk, "organisation_id": f"npo-{desk[-1]}",
                            "field": "loneliness", "reason": reason, "channel": channel}
    if seat is not None:
        data |= {"seat": seat, "seat_capacity": capacity}
    return event("routing.assigned", f"{cid}-s{n}", s(at), data, ROUTING)


def answered(cid: str, at: float, wait: float, desk: str = "chat-a", n: int = 1) -> dict[str, Any]:
    return event("contact.answered", f"{cid}-w{n}", s(at), {"contact_id": cid, "desk_id": desk,
                                                             "organisation_id": f"npo-{desk[-1]}",
                                                             "wait_seconds": wait}, PLATFORM)


def ended(cid: str, at: float, talk: float = 60.0) -> dict[str, Any]:
    return event("contact.ended", f"{cid}-e", s(at), {"contact_id": cid, "talk_seconds": talk}, PLATFORM)


def abandoned(cid: str, at: float, stage: str = "queue") -> dict[str, Any]:
    return event("contact.abandoned", f"{cid}-a", s(at), {"contact_id": cid, "stage": stage, "wait_seconds": 5.0},
                 PLATFORM)


def transferred(cid: str, at: float, frm: str = "chat-a", to: str = "chat-b", to_channel: str | None = None,
                n: int = 1) -> dict[str, Any]:
    data = {"contact_id": cid, "from_desk_id": frm, "to_desk_id": to, **({"to_channel": to_channel} if to_channel
                                                                        else {})}
    return event("contact.transferred", f"{cid}-t{n}", s(at), data, PLATFORM)


def withdrawn(cid: str, at: float, desk: str = "chat-a") -> dict[str, Any]:
    return event("routing.withdrawn", f"{cid}-x", s(at), {
        "contact_id": cid, "desk_id": desk, "organisation_id": f"npo-{desk[-1]}", "field": "loneliness",
        "reason": "offer_timeout", "ring_seconds": 120.0}, ROUTING)


def triaged(cid: str, at: float, risk: str, n: int = 1) -> dict[str, Any]:
    return event("contact.triaged", f"{cid}-g{n}", s(at), {"contact_id": cid, "risk": risk, "instrument": "k6"},
                 PLATFORM)


def channel_log(contacts: int, *, seed: int = 3, start: datetime = TRIAL1,
                span: timedelta = timedelta(hours=6)) -> list[dict[str, Any]]:
    """A mixed phone, chat and SNS log: triage, seats, offers withdrawn, transfers, abandonments."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    base = (start - TRIAL1).total_seconds()
    for i in range(contacts):
        cid = f"m{seed}-{i}"
        at = base + span.total_seconds() * i / contacts + rnd.random()
        channel = rnd.choice(["phone", "chat", "sns"])
        out.append(received(cid, at, channel, caller=rnd.randrange(contacts)))
        if channel != "phone" and rnd.random() < 0.7:
            out.append(triaged(cid, at + 5, rnd.choice(["none", "low", "high", "imminent"])))
        seat = None if channel == "phone" else 1 + rnd.randrange(3)
        desk = "tel-a" if channel == "phone" else rnd.choice(["chat-a", "chat-b"])
        t = at + 10 + rnd.random() * 60
        out.append(assigned(cid, t, desk, seat, 3 if seat else None, channel))
        if seat and rnd.random() < 0.15:
            out.append(withdrawn(cid, t + 120, desk))
            t += 125
            seat = 1 + rnd.randrange(3)
            out.append(assigned(cid, t, desk, seat, 3, channel, n=2, reason="rerouted"))
        if rnd.random() < 0.25:
            out.append(abandoned(cid, t + rnd.random() * 30, "ringing" if seat else "queue"))
            continue
        wait = t - at + 5
        out.append(answered(cid, at + wait, round(wait, 1), desk))
        t = at + wait + rnd.expovariate(1 / 600)
        if seat and rnd.random() < 0.2:
            to = "chat-b" if desk == "chat-a" else "chat-a"
            out.append(transferred(cid, t, desk, to))
            out.append(assigned(cid, t + 1, to, 1 + rnd.randrange(3), 3, channel, n=3, reason="transferred"))
            out.append(answered(cid, t + 20, round(t + 20 - at, 1), to, n=2))
            t += 300
        if rnd.random() < 0.9:
            out.append(ended(cid, t, round(t - at - wait, 1)))
    return out
