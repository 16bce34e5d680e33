"""Metrics' own knobs (``TSUNAGU_METRICS_*``): its consumer group (a rebuild), its periods, its live
gauges. The shared ones are tsunagu.settings.Settings'."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from tsunagu.settings import Settings


class MetricsSettings(Settings):
    metrics_consumer_group: str = Field(
        "metrics", min_length=1, description="metrics' consumer group; a new name replays every topic from the "
        "start (a rebuild into an empty schema)",
    )
    metrics_periods_file: Path | None = Field(
        None, description="YAML file of named periods (trial1, ...); unset = config/periods.yaml of the repository"
    )
    metrics_live_seconds: float = Field(
        5.0, gt=0, le=300, description="how often metrics refreshes its live gauges (queue, busy lines, 15-min rate)"
    )
