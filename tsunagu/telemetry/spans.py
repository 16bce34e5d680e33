"""One span per event, in its contact's trace, around a step done for a whole batch.

Each span's parent is the traceparent the event arrived with, or its contact's root; while the step
runs, ``traceparent_for(key)`` names the span of the event being handled for ``key``, so the records
it enqueues (and the log lines it writes) carry that span on.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tsunagu.telemetry.ids import format_traceparent, parse_traceparent
from tsunagu.telemetry.process import get
from tsunagu.telemetry.runtime import SCOPE, Telemetry

_SCOPE = InstrumentationScope(SCOPE)

# key (contact id, or the record key) -> the span of the event being handled for it, in this task
_ACTIVE: contextvars.ContextVar[dict[str, Span] | None] = contextvars.ContextVar("tsunagu_event_spans", default=None)


@dataclass(frozen=True)
class EventRef:
    """What an event span needs: the key its contact trace is derived from, the traceparent it
    arrived with (if any) and a few attributes (ids and codes only)."""

    key: str
    upstream: str | bytes | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


def traceparent_for(key: str) -> str:
    """The traceparent for an outgoing record about ``key`` (a contact id, or the key of the record
    being handled): the span of the event being handled for it, else the contact's root."""
    active = _ACTIVE.get()
    span = active.get(key) if active else None
    if span is not None:
        ctx = span.get_span_context()
        if ctx.is_valid:
            return format_traceparent(ctx)
    return format_traceparent(get().contact_root(key))


def traceparent_about(contact_id: str, key: str) -> str | None:
    """For an outgoing record keyed ``key`` about contact ``contact_id``: ``traceparent_for`` the
    contact — or None when nothing is recorded here and the key is the contact (the consumer derives
    the same root from the key; saves the work on the hot path)."""
    if key == contact_id and not get().recording:
        return None
    return traceparent_for(contact_id)


class _EventSpan(Span):
    """A recorded span of one event in a step done for a whole batch. The SDK's spans cost ~30 µs
    each to start and end (locks, attribute and link bounding, processor hooks); an event's span has
    ids, a parent, a few attributes, one link and a status, and is handed to the span processor as a
    finished ``ReadableSpan`` when it ends — as ``emit_contact_root`` does for the root."""

    def __init__(self, tel: Telemetry, name: str, context: SpanContext, parent: SpanContext, kind: SpanKind,
                 links: Sequence[Link], attributes: dict[str, Any], start: int) -> None:
        self._tel, self._name, self._context, self._parent = tel, name, context, parent
        self._kind, self._links, self._attributes, self._start = kind, links, dict(attributes), start
        self._status = Status(StatusCode.UNSET)
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended:
            self._attributes[key] = value

    def set_attributes(self, attributes: Any) -> None:
        if not self._ended:
            self._attributes.update(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        pass  # event spans carry no span events

    def update_name(self, name: str) -> None:
        self._name = name

    def set_status(self, status: Any, description: str | None = None) -> None:
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: int | None = None,
                         escaped: bool = False) -> None:
        self.set_status(Status(StatusCode.ERROR, type(exception).__name__))

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        tel = self._tel
        tel.processor.on_end(ReadableSpan(
            self._name, context=self._context, parent=self._parent, resource=tel.resource,
            attributes=self._attributes, links=self._links, kind=self._kind, status=self._status,
            start_time=self._start, end_time=end_time or time.time_ns(), instrumentation_scope=_SCOPE,
        ))


@contextmanager
def event_spans(name: str, refs: Sequence[EventRef], *, kind: SpanKind = SpanKind.CONSUMER) -> Iterator[list[Span]]:
    """One span per event around a step done for a whole batch; ``traceparent_for(ref.key)`` names
    them meanwhile. Each span's parent is the traceparent the event arrived with, or its contact's
    root; each is linked to the current span (the HTTP request or FastStream's batch span). The
    configured sampler decides per event, as for any span."""
    tel = get()
    if not tel.recording:
        # Nothing is exported: no spans (they would cost CPU on the hot path); records carry the
        # contact's root on, and log lines its trace id.
        yield [trace.INVALID_SPAN] * len(refs)
        return
    provider = tel.tracer_provider
    sampler, new_span_id = provider.sampler, provider.id_generator.generate_span_id
    here = trace.get_current_span().get_span_context()
    links = (Link(here),) if here.is_valid else ()
    start = time.time_ns()
    spans: list[Span] = []
    active = dict(_ACTIVE.get() or {})
    for ref in refs:
        parent = parse_traceparent(ref.upstream) or tel.contact_root(ref.key)
        decision = sampler.should_sample(trace.set_span_in_context(NonRecordingSpan(parent), Context()),
                                         parent.trace_id, name, kind, ref.attributes, links)
        sampled = decision.decision.is_sampled()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated
        context = SpanContext(parent.trace_id, new_span_id(), is_remote=False,
                              trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0),
                              trace_state=decision.trace_state or parent.trace_state)
        span: Span = (_EventSpan(tel, name, context, parent, kind, links, ref.attributes, start) if sampled
                      else NonRecordingSpan(context))
        spans.append(span)
        active[ref.key] = span
    token = _ACTIVE.set(active)
    try:
        yield spans
    except BaseException as err:
        for span in spans:
            span.set_status(Status(StatusCode.ERROR, type(err).__name__))
        raise
    finally:
        _ACTIVE.reset(token)
        for span in spans:
            span.end()


def emit_contact_root(key: str, at_ns: int | None = None) -> None:
    """Record the contact's root span itself (intake calls this once per new contact), so the trace
    has a root in the backend; its ids are ``contact_root``'s."""
    tel = get()
    root = tel.contact_root(key)
    if tel.processor is None or not root.trace_flags.sampled:
        return
    now = at_ns or time.time_ns()
    tel.processor.on_end(ReadableSpan(
        "contact", context=SpanContext(root.trace_id, root.span_id, False, root.trace_flags), parent=None,
        resource=tel.resource,
        attributes={"tsunagu.contact_id": key}, kind=SpanKind.INTERNAL, start_time=now, end_time=now,
        instrumentation_scope=_SCOPE,
    ))
