"""Routing's own knobs (``TSUNAGU_ROUTING_*``): how it reads and orders contact events, and the desk
registries it applies at start. The shared ones are tsunagu.settings.Settings'."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tsunagu.settings import Settings


class RoutingSettings(Settings):
    routing_fetch_wait_ms: int = Field(
        20, ge=1, le=5000, description="how long routing's consumer waits on the broker for contact events "
        "(bounds routing's latency on the embedded broker; lower costs more idle fetches)"
    )
    routing_order: Literal["arrival", "event_time"] = Field(
        "arrival", description="arrival: routing applies each contact event as soon as it reads it (live: an "
        "assignment never waits for other partitions; only timers wait until every partition passed them); "
        "event_time: it holds each event until every partition has been read past its time and applies them "
        "in event-time order (replays: decisions independent of the order partitions are read in)"
    )
    routing_max_clock_lead_s: float = Field(
        300.0, gt=0, le=86_400, description="how far (seconds) an event's time may run ahead of routing's wall "
        "clock and still move routing's event time: a heartbeat further ahead is ignored, a contact event "
        "further ahead is applied at the wall clock plus this lead (a partner's clock may be a little fast, never "
        "years)"
    )
    routing_desks_files: str = Field(
        "config/trial1.yaml,config/trial2.yaml",
        description="desk registry versions routing applies at start when not yet stored (comma-separated "
        "YAML files; relative to the working directory or the project root; empty = none)",
    )
