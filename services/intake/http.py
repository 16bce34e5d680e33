"""POST /v1/events: partners' events over HTTP, one CloudEvent or a batch, in each content mode of
the CloudEvents HTTP binding (structured, batch, binary: services/intake/bindings.py).

Answers per event: accepted, duplicate, or rejected with the reason (field path and message), and the
extension attributes intake ignored.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Literal

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from schemas import EventInvalid, decode_json
from services.intake.bindings import BATCH, STRUCTURED, Unsupported, event_from_http_binary, http_mode
from services.intake.domain import Outcome
from services.intake.handlers import Intake, accept_events
from tsunagu import auth
from tsunagu.fairness import FairSlot
from tsunagu.http_auth import api_key_of
from tsunagu.ratelimit import retry_after_header

SINGLE = STRUCTURED

router = APIRouter(tags=["events"])


class ProblemOut(BaseModel):
    path: str = Field(description="where in the event, e.g. `data.field`; empty for the whole event")
    message: str


class EventResult(BaseModel):
    index: int = Field(description="position in the request (0 for a single event)")
    id: str | None = None
    source: str | None = None
    type: str | None = None
    status: Literal["accepted", "duplicate", "rejected", "conflict"] = Field(
        description="accepted; duplicate (sent before with the same content); rejected (problems say why); "
        "conflict (the id is taken: by this (source, id) with other content, or a contact or referral id "
        "another organisation reported first)")
    problems: list[ProblemOut] = []
    ignored: list[str] = Field(
        default=[], description="extension attributes of the event that intake did not take (any but partitionkey, "
        "traceparent and tracestate): valid CloudEvents, but tsunagu forwards none of them, whatever the status")


class EventsResponse(BaseModel):
    accepted: int
    duplicate: int
    rejected: int
    conflict: int = 0
    results: list[EventResult]


class ErrorResponse(BaseModel):
    error: str
    message: str
    results: list[EventResult] = []


def _error(status: int, error: str, message: str, results: list[dict] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": error, "message": message, "results": results or []}
    return JSONResponse(body, status_code=status, headers=headers)


# What PostgreSQL away looks like to asyncpg (a restart, a failover): the partner should retry.
# InternalClientError is what a connection cut during COMMIT leaves behind ("cannot switch to state
# 15"): whether the commit happened is unknown, and a retry finds what was stored as a duplicate.
DATABASE_AWAY = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                 asyncpg.AdminShutdownError, asyncpg.InterfaceError, asyncpg.InternalClientError)


async def database_away(request: Request, exc: Exception) -> JSONResponse:
    """503 with ``Retry-After`` instead of a 500 while intake cannot reach its database: nothing is
    acknowledged that is not stored, and an event stored just before is a duplicate on the retry."""
    return _error(503, "unavailable", "intake cannot store events right now; retry", headers={"Retry-After": "1"})


def _too_many(reason: str, message: str, wait: float) -> JSONResponse:
    return _error(429, reason, message, headers={"Retry-After": retry_after_header(wait)})


def _refuse(intake: Intake, key_hash: bytes, reason: str, message: str, wait: float) -> JSONResponse:
    """429 with ``Retry-After``; the key is held until then (``tsunagu.ratelimit.Holds``)."""
    intake.holds.hold(key_hash, float(retry_after_header(wait)), reason)
    return _too_many(reason, message, wait)


def _result(o: Outcome) -> dict:
    # Plain dicts on the hot path (EventResult documents the shape): a batch answers 100s of these.
    return {"index": o.index, "id": o.id, "source": o.source, "type": o.type, "status": o.status,
            "problems": [{"path": p.path, "message": p.message} for p in o.problems], "ignored": list(o.ignored)}


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` (checked while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _event_sizes(events: list[object], body_bytes: int, limit: int) -> list[int] | None:
    """Each batch event's size as compact JSON, so the per-event limit holds in a batch too; None
    when the whole body is within the limit, hence every event (the usual case: nothing to measure)."""
    if body_bytes <= limit:
        return None
    return [len(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
            for e in events]


_CE_HEADERS = {"specversion": "`1.0`", "id": "the event id", "source": "`/partners/<org>/<system>`",
               "type": "`jp.tsunagu.<entity>.<verb>.v1`", "time": "RFC 3339 with a UTC offset",
               "subject": "the contact or referral id", "dataschema": "optional",
               "partitionkey": "optional", "traceparent": "optional", "tracestate": "optional"}

_REQUEST_DOC = {
    "parameters": [
        {"name": f"ce-{name}", "in": "header", "required": False, "schema": {"type": "string"},
         "description": f"binary mode only: the `{name}` attribute, percent-encoded (HTTP binding 3.1.3.2) — {what}"}
        for name, what in _CE_HEADERS.items()
    ],
    "requestBody": {
        "required": True,
        "description": "One CloudEvent in structured mode, a JSON array of CloudEvents (batch mode; it may be "
        "empty), or one CloudEvent in binary mode: its attributes in `ce-*` headers (`ce-specversion` marks "
        "the mode), its data as the body with the data's own JSON Content-Type. Media-type parameters "
        "(`; charset=utf-8`) are accepted. Extension attributes other than partitionkey, traceparent and "
        "tracestate are accepted, not forwarded, and named in the event's `ignored`. "
        "Schemas per event type: schemas/jsonschema/ and schemas/asyncapi.yaml.",
        "content": {
            SINGLE: {"schema": {"type": "object"}},
            BATCH: {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/json": {"schema": {"type": "object", "description": "binary mode: the event's data"}},
        },
    },
}


@router.post(
    "/v1/events",
    summary="Publish events (one CloudEvent, or a batch)",
    description=(
        "Authenticate with `Authorization: Bearer <api key>` (or `X-API-Key`). Each event is "
        "validated against the contract, its caller identifier pseudonymised, de-duplicated by "
        "(source, id) and stored durably before the answer: an accepted event reaches the "
        "canonical topic even if intake stops right after answering. A single event answers 202 "
        "(accepted), 200 (duplicate), 409 (conflict) or 422 (rejected); a batch answers 200 with one "
        "result per event (an empty batch: 200 with none). Structured, batch and binary content mode of the "
        "CloudEvents HTTP binding are read. An event's time must lie within `TSUNAGU_INTAKE_MAX_SKEW_S` "
        "ahead of intake's clock and `TSUNAGU_INTAKE_HORIZON_S` behind it (older only with a back-fill key); "
        "a contact or referral id belongs to the organisation that reported it first, and "
        "`data.organisation_id` must be the key's organisation or one the key acts for. If any event's "
        "`source` names another organisation, nothing is stored (403). Each partner "
        "organisation may send `TSUNAGU_INTAKE_RATE_PER_S` events a second (bursts up to "
        "`TSUNAGU_INTAKE_BURST`; back-fill keys `TSUNAGU_INTAKE_BACKFILL_RATE_PER_S`); beyond that, 429 with "
        "`Retry-After` and nothing is stored, and the key is refused until `Retry-After` has passed (an "
        "early request is answered 429 after a delay of up to a second, without being read)."
    ),
    response_model=EventsResponse,
    status_code=200,
    openapi_extra=_REQUEST_DOC,
    responses={
        202: {"model": EventsResponse, "description": "single event accepted (structured or binary mode)"},
        400: {"model": ErrorResponse, "description": "the body is not JSON, or not the shape the content type says "
              "(structured and batch mode; in binary mode the event is rejected instead, 422)"},
        401: {"model": ErrorResponse, "description": "no valid API key"},
        403: {"model": ErrorResponse, "description": "not a partner key, or an event names another organisation"},
        413: {"model": ErrorResponse, "description": "body or batch too large"},
        415: {"model": ErrorResponse, "description": "neither of the two CloudEvents JSON formats nor binary mode "
              "(a `ce-specversion` header), or a charset other than UTF-8"},
        409: {"model": EventsResponse, "description": "single event in conflict: its (source, id) was accepted "
              "with other content, or its contact or referral id belongs to another organisation"},
        422: {"model": EventsResponse, "description": "single event rejected (structured or binary mode; a binary "
              "event whose Content-Type is not JSON too)"},
        429: {"model": ErrorResponse, "description": "the organisation's rate limit is reached "
              "(`rate_limited`: the key is refused until `Retry-After` has passed), or it has as many "
              "requests in progress and waiting as intake gives one organisation (`too_many_in_progress`); "
              "retry after `Retry-After` seconds (nothing was stored)",
              "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}},
        503: {"model": ErrorResponse, "description": "intake cannot reach its database (e.g. a restart); retry "
              "after `Retry-After` seconds (what was stored meanwhile answers as a duplicate)",
              "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}},
    },
)
async def post_events(request: Request, slot: FairSlot) -> JSONResponse:
    intake: Intake = request.app.state.intake
    settings = intake.settings
    api_key = api_key_of(request)
    key_hash = auth.hash_key(api_key) if api_key else None
    if key_hash is not None and (held := intake.holds.held(key_hash)) is not None:
        # told to wait and back early: refused before any database work or reading the body
        left, reason = held
        await asyncio.sleep(min(left, intake.holds.tarpit))
        return _too_many(reason, "this key was told to wait (Retry-After) and is back early; nothing was stored",
                         left)
    if key_hash is not None and intake.gate is not None and (seen := intake.key_orgs.get(key_hash)) is not None:
        slot.expedite(intake.gate, seen)  # a quiet partner's credential lookup already goes first
    caller = await auth.authenticate(intake.pool, api_key) if api_key else None
    if key_hash is not None:
        intake.remember_key(key_hash, caller.org_id if caller is not None else None)
    if caller is None:
        return _error(401, "unauthorized", "a valid API key is required (Authorization: Bearer <key>)",
                      headers={"WWW-Authenticate": "Bearer"})
    if caller.role != "partner":
        return _error(403, "forbidden", f"a {caller.role} credential cannot publish events")
    # A fair share of this process before anything costly (reading the body on): the slot is held
    # until the answer is ready (tsunagu/fairness.py); a full queue answers 429, nothing stored.
    if intake.gate is not None and not await slot.take(intake.gate, caller.org_id):
        # not held: once one of its requests in progress is answered, the organisation may send again
        return _too_many("too_many_in_progress", f"organisation '{caller.org_id}' has as many requests in "
                         "progress as intake gives one organisation (TSUNAGU_INTAKE_ORG_IN_FLIGHT) and more "
                         "waiting; nothing was stored", 1.0)

    assert key_hash is not None  # a caller was found by its key
    limiter = intake.backfill_limiter if caller.backfill else intake.limiter
    if limiter is not None and (empty := limiter.until_any(caller.org_id)) > 0:
        # not even one event would fit: refused before the body is read
        return _refuse(intake, key_hash, "rate_limited", f"organisation '{caller.org_id}' sent more than its "
                       f"{limiter.rate:g} events a second; nothing was stored", empty)

    mode = http_mode(request.headers.get("content-type"), "ce-specversion" in request.headers)
    if isinstance(mode, Unsupported):
        return _error(415, "unsupported_media_type", mode.message)
    body = await _read_body(request, settings.max_body_bytes)
    await slot.give_way()  # parsing a large body is a turn of its own
    if body is None:
        return _error(413, "too_large", f"the body is larger than {settings.max_body_bytes} bytes")
    raws: list[object]
    sizes: list[int] | None
    if mode == "binary":
        # one event, whatever the body holds: a body that is no JSON is that event's problem (422)
        raws, sizes = [event_from_http_binary(request.headers.raw, body)], [len(body)]
    else:
        try:
            parsed = decode_json(body)
        except EventInvalid as err:
            return _error(400, "malformed_json", err.problems[0].message)
        if mode == "batch":
            if not isinstance(parsed, list):
                return _error(400, "not_a_batch", "a batch must be a JSON array of CloudEvents")
            if not parsed:  # the JSON batch format: a batch MAY be empty
                return JSONResponse({"accepted": 0, "duplicate": 0, "rejected": 0, "conflict": 0, "results": []})
            if len(parsed) > settings.max_batch_events:
                return _error(413, "batch_too_large",
                              f"a batch holds at most {settings.max_batch_events} events; this one has {len(parsed)}")
            raws, sizes = parsed, _event_sizes(parsed, len(body), settings.max_event_bytes)
        else:
            if not isinstance(parsed, dict):
                return _error(400, "not_an_event", f"{SINGLE} carries one JSON object; send arrays as {BATCH}")
            raws, sizes = [parsed], [len(body)]

    slot.charge(len(raws))
    wait = limiter.take(caller.org_id, len(raws)) if limiter else 0.0
    if wait == float("inf"):
        assert limiter is not None
        return _error(413, "batch_too_large", f"a batch holds at most {limiter.burst:.0f} events "
                      "(TSUNAGU_INTAKE_BURST)")
    if wait > 0:
        assert limiter is not None
        return _refuse(intake, key_hash, "rate_limited", f"organisation '{caller.org_id}' sent more than its "
                       f"{limiter.rate:g} events a second; nothing was stored", wait)
    results, foreign = await accept_events(intake, raws, caller, sizes, slot.give_way)
    if foreign:
        return _error(403, "foreign_source", f"events may only name sources of organisation '{caller.org_id}'; "
                      "nothing was stored", [_result(o) for o in foreign])
    await slot.give_way()
    out = [_result(o) for o in results]
    counts = Counter(r["status"] for r in out)
    response = {"accepted": counts["accepted"], "duplicate": counts["duplicate"], "rejected": counts["rejected"],
                "conflict": counts["conflict"], "results": out}
    status = 200
    if mode != "batch":
        status = {"accepted": 202, "duplicate": 200, "rejected": 422, "conflict": 409}[out[0]["status"]]
    return JSONResponse(response, status_code=status)
