"""The Prometheus scrape of a service whose uvicorn workers share one port.

A scrape reaches one worker. Each worker writes its metrics to a snapshot folder every few seconds;
the one scraped sums the others' counters and histograms with its own (gauges: the largest of the
live workers') — what prometheus_client's multiprocess mode does for its own metric classes.

That mode cannot be used here: it aggregates only the values prometheus_client's ``Counter``,
``Gauge`` and ``Histogram`` keep in memory-mapped files. Our metrics are OpenTelemetry instruments,
which ``PrometheusMetricReader`` turns into Prometheus families at scrape time through a custom
collector, and custom collectors are never written to those files; using the mode would mean
recreating every instrument (FastStream's, the HTTP instrumentation's, ours) as a prometheus_client
metric and losing them on OTLP.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest


def write_snapshot(registry: CollectorRegistry, folder: Path) -> None:
    """This process's metrics into ``folder``, for its siblings' scrapes (replaced atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}.prom"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(generate_latest(registry))
    tmp.replace(path)


def scrape(registry: CollectorRegistry, folder: Path | None) -> bytes:
    """This process's metrics in the Prometheus text format; with sibling workers' snapshots in
    ``folder``, all of theirs."""
    own = generate_latest(registry)
    if folder is None or not folder.is_dir():
        return own
    texts = [(own.decode(), True)]
    for path in folder.glob("*.prom"):
        pid = int(path.stem) if path.stem.isdigit() else 0
        if pid == os.getpid():
            continue
        with suppress(OSError):
            # a worker that exited still counts: its counters stay in the sum (else they would
            # drop and read as a reset), its gauges go
            texts.append((path.read_text(), _alive(pid)))
    return merge_prometheus(texts) if len(texts) > 1 else own


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge_prometheus(texts: Sequence[tuple[str, bool]]) -> bytes:
    """Several processes' Prometheus texts (text, process alive) as one: counters, histograms and
    summaries summed per series; gauges the largest of the live processes' (the facts gauges are the
    same in every process)."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    for text, alive in texts:
        for fam in text_string_to_metric_families(text):
            summed = fam.type in ("counter", "histogram", "summary")
            if not (summed or alive):
                continue
            families.setdefault(fam.name, Metric(fam.name, fam.documentation, fam.type, fam.unit))
            for sample in fam.samples:
                if sample.name.endswith("_created"):
                    continue
                key = (fam.name, sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    values[key] = sample.value
                elif summed:
                    values[key] += sample.value
                else:
                    values[key] = max(values[key], sample.value)
    for (fam_name, sample_name, labels), value in values.items():
        families[fam_name].add_sample(sample_name, dict(labels), value)

    class _Merged:
        def collect(self) -> Any:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)
