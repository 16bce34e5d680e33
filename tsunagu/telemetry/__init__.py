"""OpenTelemetry for every service, set up once: traces, metrics, and the ids the logs join them by.

**One contact is one trace.** A contact's events reach tsunagu in many requests, hours apart
(received, field selected, answered, consultation recorded, referral steps), so passing the
context along alone would give one trace per *event*. Instead every contact has a deterministic
trace: its trace id and a root span id are derived from the contact id (``contact_root``). Each
service starts one span per event it handles in that trace:

- intake: ``intake accept`` per accepted event, a child of the contact's root, linked to the HTTP
  request (or ingress batch) it came in;
- each outbox row stores the traceparent of the span that enqueued it (``traceparent_for``) and the
  publisher sends it as the Kafka ``traceparent`` header;
- every batch consumer (``EventSpans`` middleware) starts ``<service> consume`` per record, a child
  of that header's span (or of the contact's root when a record has none), linked to FastStream's
  batch span. Decisions derived while handling a record carry that record's span on.

So intake → routing → metrics, and the consultation → referral → metrics, are parent-linked chains
under one root per contact, whatever the batching. FastStream's ``KafkaTelemetryMiddleware`` adds
its per-batch ``process`` spans (linked to the records' spans) and per-handler metrics; HTTP gets the
ASGI instrumentation (health endpoints excluded, no query strings). A process that records no spans
keeps only the metrics, once per batch (``QuietBrokerTelemetry``): nothing is done per record.

Export: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the per-signal variables) is set — the
standard ``OTEL_*`` variables configure exporter, sampler and resource; JSON lines into
``TSUNAGU_TELEMETRY_DIR`` (``tsunagu up --telemetry``); otherwise spans are not recorded, but
logs still carry the (deterministic) trace ids. Attributes carry ids and codes only — never a
caller identifier, a name, free text, a query string or a body.

The rooms:

- ``ids``: a contact's trace root, W3C ``traceparent`` strings;
- ``spans``: one span per event (``event_spans``, ``traceparent_for``, ``emit_contact_root``);
- ``broker``: FastStream middlewares (``EventSpans``, ``QuietBrokerTelemetry``);
- ``http``: the FastAPI/ASGI instrumentation, ``GET /metrics``, the lifespan's lag watch;
- ``exporters``: JSON-lines files, whether OTLP is asked for;
- ``prometheus``: one scrape for several workers; ``lag``: consumer lag from the broker;
- ``runtime``: ``Telemetry``, a process's providers and instruments; ``broker`` and ``http`` build on it,
  and the package hands their functions to it (``runtime.wire``) for ``Telemetry.attach`` and the like;
- ``process``: ``build`` the providers, and the process's one ``Telemetry`` (``configure``/``get``/``use``).
"""

from tsunagu.telemetry import broker, http, runtime
from tsunagu.telemetry.broker import EventSpans, QuietBrokerTelemetry
from tsunagu.telemetry.exporters import FileMetricExporter, FileSpanExporter, otlp_configured, span_record
from tsunagu.telemetry.http import HEALTH_URLS
from tsunagu.telemetry.ids import (
    contact_root,
    current_of,
    current_traceparent,
    format_traceparent,
    header,
    parse_traceparent,
)
from tsunagu.telemetry.process import HANDLING_BUCKETS, VIEWS, WAIT_BUCKETS, build, configure, get, use
from tsunagu.telemetry.prometheus import merge_prometheus
from tsunagu.telemetry.runtime import SCOPE, Telemetry
from tsunagu.telemetry.spans import EventRef, emit_contact_root, event_spans, traceparent_about, traceparent_for

# Wired from above: runtime is below broker and http, so it does not import them.
runtime.wire(runtime.Wiring(
    broker_middlewares=broker.broker_middlewares, instrument_app=http.instrument_app, attach=http.attach))

__all__ = [
    "HANDLING_BUCKETS",
    "HEALTH_URLS",
    "SCOPE",
    "VIEWS",
    "WAIT_BUCKETS",
    "EventRef",
    "EventSpans",
    "FileMetricExporter",
    "FileSpanExporter",
    "QuietBrokerTelemetry",
    "Telemetry",
    "build",
    "configure",
    "contact_root",
    "current_of",
    "current_traceparent",
    "emit_contact_root",
    "event_spans",
    "format_traceparent",
    "get",
    "header",
    "merge_prometheus",
    "otlp_configured",
    "parse_traceparent",
    "span_record",
    "traceparent_about",
    "traceparent_for",
    "use",
]
