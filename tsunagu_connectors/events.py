"""tsunagu events as connectors build them: CloudEvents 1.0, structured JSON (the contract: schemas/)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas import EVENT_TYPES


def source_of(partner: str, system: str) -> str:
    """The partner's source for one of its systems, e.g. ``/partners/npo-a/asterisk``."""
    return f"/partners/{partner}/{system}"


def event(partner: str, system: str, short_type: str, event_id: str, subject: str, at: datetime,
          data: dict[str, Any]) -> dict[str, Any]:
    """One event of the contract; ``short_type`` as ``contact.received``. ``at`` must carry its offset."""
    type_ = f"jp.tsunagu.{short_type}.v1"
    if type_ not in EVENT_TYPES:
        raise ValueError(f"not an event type of the contract: {short_type}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("event time must carry a UTC offset")
    return {"specversion": "1.0", "id": event_id, "source": source_of(partner, system), "type": type_,
            "time": at.isoformat(), "subject": subject, "data": data}
