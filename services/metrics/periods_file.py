"""The named periods, read from their YAML file at the edge (the app and the CLI): the domain only
parses the times (domain.periods)."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.metrics.domain.periods import Period, parse_instant
from services.metrics.settings import MetricsSettings
from tsunagu.settings import SettingsError

DEFAULT_PERIODS = Path(__file__).parents[2] / "config" / "periods.yaml"


def load_periods(path: Path) -> dict[str, Period]:
    """Named periods from a YAML file: ``name: {from: ..., to: ..., label: ...}``."""
    raw = yaml.safe_load(path.read_text()) or {}
    periods: dict[str, Period] = {}
    for name, spec in (raw.get("periods") or {}).items():
        start, end = str(spec["from"]), str(spec["to"])
        periods[name] = Period(parse_instant(start), parse_instant(end, end=True), name)
    return periods


def periods_of(settings: MetricsSettings) -> dict[str, Period]:
    """The periods of the file the settings name, else of the project's config (none when it is absent)."""
    path = settings.metrics_periods_file or DEFAULT_PERIODS
    if not path.exists():
        if settings.metrics_periods_file is not None:
            raise SettingsError(f"TSUNAGU_METRICS_PERIODS_FILE: {path} does not exist")
        return {}
    return load_periods(path)
