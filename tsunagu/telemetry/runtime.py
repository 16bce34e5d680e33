"""``Telemetry``: one process's providers, its instruments, consumer lag and Prometheus scrape."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanContext, TraceFlags
from prometheus_client import CollectorRegistry

import tsunagu.telemetry.prometheus as prometheus
from tsunagu.telemetry.ids import contact_root
from tsunagu.telemetry.lag import Lag, consumer_lag

SCOPE = "tsunagu"


@dataclass
class Telemetry:
    service: str
    resource: Resource
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    registry: CollectorRegistry  # the Prometheus scrape's view of this process's metrics
    directory: Path | None = None
    processor: Any = None  # where hand-made spans go (None: spans are not recorded)

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer(SCOPE)

    @property
    def meter(self) -> otel_metrics.Meter:
        return self.meter_provider.get_meter(SCOPE)

    snapshot_dir: Path | None = None  # with several workers: where they leave their metrics for the scrape
    brokers: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)  # this process's, for consumer lag
    lag: Lag = field(default_factory=dict)  # (group, topic, partition) -> records
    _instruments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meter.create_observable_gauge(
            "tsunagu_consumer_lag", [self._observe_lag], unit="{record}",
            description="records not yet consumed, per consumer group, topic and partition this process reads")

    @property
    def recording(self) -> bool:
        return self.processor is not None

    def contact_root(self, key: str) -> SpanContext:
        """``contact_root`` flagged as sampled or not by the configured sampler: its trace id is
        deterministic, so a ratio sampler keeps or drops a contact's whole trace in every service."""
        root = contact_root(key)
        sampler = getattr(self.tracer_provider, "sampler", None)
        if sampler is None:
            return root
        decision = sampler.should_sample(Context(), root.trace_id, "contact").decision
        if decision.is_sampled():
            return root
        return SpanContext(root.trace_id, root.span_id, is_remote=True, trace_flags=TraceFlags(0))

    # business and pipeline instruments, created once per process

    def counter(self, name: str, description: str, unit: str = "") -> otel_metrics.Counter:
        if name not in self._instruments:
            self._instruments[name] = self.meter.create_counter(name, unit=unit, description=description)
        counter: otel_metrics.Counter = self._instruments[name]
        return counter

    def histogram(self, name: str, description: str, unit: str = "s") -> otel_metrics.Histogram:
        if name not in self._instruments:
            self._instruments[name] = self.meter.create_histogram(name, unit=unit, description=description)
        histogram: otel_metrics.Histogram = self._instruments[name]
        return histogram

    def handling(self) -> otel_metrics.Histogram:
        return self.histogram("tsunagu_event_handling_seconds",
                              "from a consumed batch reaching the handler to its commit (each record in it waited so)")

    def set_aside(self) -> otel_metrics.Counter:
        return self.counter("tsunagu_events_set_aside",
                            "records set aside as not canonical events (never retried)", unit="{record}")

    # consumer lag (lag.py)

    def _observe_lag(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(n, {"group": g, "topic": t, "partition": p}) for (g, t, p), n in list(self.lag.items())]

    async def refresh_lag(self) -> None:
        """Ask the broker for the lag of every partition this process's consumers hold."""
        self.lag = await consumer_lag(self.brokers)

    async def watch_lag(self, every: float = 5.0) -> None:
        while True:
            try:
                await self.refresh_lag()
                self.write_snapshot()
            except Exception:  # noqa: BLE001 - a gauge that lags must never stop a service
                pass
            await asyncio.sleep(every)

    # the Prometheus scrape, summed over sibling workers (prometheus.py)

    def write_snapshot(self) -> None:
        if self.snapshot_dir is not None:
            prometheus.write_snapshot(self.registry, self.snapshot_dir)

    def scrape(self) -> bytes:
        """This process's metrics in the Prometheus text format; with sibling workers, all of theirs."""
        return prometheus.scrape(self.registry, self.snapshot_dir)

    # wiring into FastStream and the app: broker.py and http.py build on this module, so it does not
    # import them; the package hands their functions in once (``wire``, in __init__)

    def broker_middlewares(self) -> list[Any]:
        """FastStream's telemetry middleware and ours (``broker.broker_middlewares``)."""
        return _wired().broker_middlewares(self)

    def instrument_app(self, app: Any) -> None:
        """HTTP server spans for a FastAPI app: health probes excluded, no query string, no body."""
        _wired().instrument_app(self, app)

    def attach(self, app: Any, *, scrape_route: bool = False, lag_seconds: float = 5.0) -> None:
        """Instrument a service's app, watch its consumers' lag while it runs and, with
        ``scrape_route``, give it ``GET /metrics`` if it has none."""
        _wired().attach(self, app, scrape_route=scrape_route, lag_seconds=lag_seconds)

    def flush(self) -> None:
        """Export what is pending now (spans, a last metrics snapshot)."""
        for provider in (self.tracer_provider, self.meter_provider):
            with suppress(Exception):
                provider.force_flush(5_000)  # bounded: a collector that is away must not hold up shutdown
        with suppress(Exception):
            self.write_snapshot()

    def shutdown(self) -> None:
        with suppress(Exception):
            self.write_snapshot()  # the last word of this worker's counters, for its siblings' scrape
        for provider in (self.tracer_provider, self.meter_provider):
            try:
                provider.shutdown()
            except Exception:  # noqa: BLE001 - exiting anyway; an exporter away must not block it
                pass


class _Attach(Protocol):
    def __call__(self, telemetry: Telemetry, app: Any, *, scrape_route: bool = ..., lag_seconds: float = ...) -> None:
        ...


@dataclass(frozen=True)
class Wiring:
    """The functions that plug a ``Telemetry`` into FastStream (broker.py) and an app (http.py)."""

    broker_middlewares: Callable[[Telemetry], list[Any]]
    instrument_app: Callable[[Telemetry, Any], None]
    attach: _Attach


_wiring: Wiring | None = None


def wire(wiring: Wiring) -> None:
    """Hand in the functions ``Telemetry.broker_middlewares``/``instrument_app``/``attach`` call (the
    package does it once, on import)."""
    global _wiring
    _wiring = wiring


def _wired() -> Wiring:
    if _wiring is None:
        raise RuntimeError("tsunagu.telemetry is not wired: import the package, not runtime alone")
    return _wiring
