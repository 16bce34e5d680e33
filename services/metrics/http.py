"""The secretariat's read-only API: answer rates, waits and service level, consultations, referrals.

A secretariat key sees everything; a partner organisation's key sees only contacts its desks were
assigned or answered (and its own consultations and referral requests). ``Accept: text/csv``
answers the same figures as CSV: a totals row, then one row per group.
"""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from services.metrics import catchup, figures
from services.metrics.domain.periods import Period, PeriodError, resolve_period
from services.metrics.store.fold_mode import is_live
from tsunagu.auth import Caller
from tsunagu.http_auth import AUTH_RESPONSES, Detail, require_roles

router = APIRouter(prefix="/v1/metrics", tags=["metrics"], responses=AUTH_RESPONSES)
Reader = Annotated[Caller, Depends(require_roles("secretariat", "partner"))]

FromQ = Annotated[str | None, Query(alias="from", description="start, inclusive: RFC 3339 time or a date (JST)")]
ToQ = Annotated[str | None, Query(description="end, exclusive: RFC 3339 time, or a date (the end of that day, JST)")]
PeriodQ = Annotated[str | None, Query(description="a named period instead of from/to, e.g. trial1")]
ChannelQ = Annotated[
    Literal["phone", "chat", "sns", "all"] | None,
    Query(description="channel to count (default phone — call attempts; all channels when group_by=channel)"),
]


class PeriodProblemOut(BaseModel):
    """期間の指定の誤り / what is wrong with the period asked for (never the value sent)."""

    detail: str = Field(description="説明 / what is wrong")
    parameter: str | None = Field(default=None,
                                  description="誤りのあるパラメータ (from, to, period) / the parameter at fault")
    allowed: dict[str, str] | None = Field(
        default=None, description="受け付ける範囲 / the range a bound must lie in: from (inclusive), to (exclusive)")


class PeriodProblem(Exception):
    """A period that cannot be answered: 400 with ``PeriodProblemOut``."""

    def __init__(self, err: PeriodError) -> None:
        super().__init__(str(err))
        self.body = PeriodProblemOut(detail=str(err), parameter=err.parameter, allowed=err.allowed)


async def period_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PeriodProblem)
    return JSONResponse(exc.body.model_dump(), status_code=400)


# While metrics catches up with a backlog (a rebuild), its rollups are stale and its facts partial:
# every figure answers 503 until it is live.
FIGURES_RESPONSES: dict[int | str, dict] = {
    400: {"model": PeriodProblemOut,
          "description": "the request cannot be read: a period unknown, missing or outside the range "
                         "(1900-01-01 to 2200-01-01 UTC), or another parameter (`detail` says which)"},
    503: {"model": Detail, "description": "metrics is rebuilding its figures from the topics (catch-up); "
          "nothing partial is served — retry after Retry-After seconds",
          "headers": {"Retry-After": {"description": "seconds to wait before asking again",
                                      "schema": {"type": "integer"}}}},
}


async def _final(request: Request) -> None:
    """Answer 503 while the figures are being rebuilt (the mode is read again until it is live)."""
    metrics = request.app.state.metrics
    if metrics.live:
        return
    if await is_live(request.app.state.pool):
        metrics.live = True
        return
    raise HTTPException(503, catchup.REBUILDING, headers={"Retry-After": str(catchup.RETRY_AFTER_S)})


ContactGroup = Literal["field", "organisation", "desk", "channel", "prefecture", "hour", "day"]


def _period(request: Request, period: str | None, start: str | None, end: str | None) -> Period:
    try:
        return resolve_period(request.app.state.periods, period, start, end)
    except PeriodError as err:
        raise PeriodProblem(err) from None


def _scope(caller: Caller) -> str | None:
    return None if caller.role == "secretariat" else caller.org_id


def _channel(channel: str | None, group_by: str | None) -> str | None:
    if channel == "all" or (channel is None and group_by == "channel"):
        return None
    return channel or "phone"


def _answer(request: Request, body: dict[str, Any]) -> Response:
    if "text/csv" in request.headers.get("accept", ""):
        rows = figures.csv_rows(body)
        out = io.StringIO()
        columns = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
    return JSONResponse(body)


@router.get("/answer-rate",
            summary="Call attempts, connected, answer rate (応答率), abandonment, per-caller rate",
            responses=FIGURES_RESPONSES)
async def answer_rate(request: Request, caller: Reader, start: FromQ = None, to: ToQ = None, period: PeriodQ = None,
                      group_by: ContactGroup | None = None, channel: ChannelQ = None) -> Response:
    p = _period(request, period, start, to)
    await _final(request)
    body = await figures.answer_rate(request.app.state.pool, p, group_by, channel=_channel(channel, group_by),
                                     organisation=_scope(caller))
    return _answer(request, body)


@router.get("/waits",
            summary="Waits, talk times and service level (answered within N seconds)",
            responses=FIGURES_RESPONSES)
async def waits(request: Request, caller: Reader, start: FromQ = None, to: ToQ = None, period: PeriodQ = None,
                group_by: ContactGroup | None = None, channel: ChannelQ = None,
                within: Annotated[str, Query(description="seconds, comma-separated, e.g. 20,60")] = "20,60",
                ) -> Response:
    p = _period(request, period, start, to)
    await _final(request)
    try:
        seconds = sorted({int(s) for s in within.split(",") if s.strip()})
    except ValueError:
        raise HTTPException(400, "within must be whole seconds, comma-separated, e.g. 20,60") from None
    if not seconds or len(seconds) > 5 or any(s < 0 or s > 86400 for s in seconds):
        raise HTTPException(400, "within takes one to five values between 0 and 86400 seconds")
    body = await figures.waits(request.app.state.pool, p, group_by, seconds, channel=_channel(channel, group_by),
                               organisation=_scope(caller))
    return _answer(request, body)


@router.get("/consultations",
            summary="Consultations: categories ranked, age bands, risk levels",
            responses=FIGURES_RESPONSES)
async def consultations(request: Request, caller: Reader, start: FromQ = None, to: ToQ = None,
                        period: PeriodQ = None,
                        group_by: Literal["field", "organisation", "desk", "age_band", "risk", "hour", "day"]
                        | None = None) -> Response:
    p = _period(request, period, start, to)
    await _final(request)
    body = await figures.consultations(request.app.state.pool, p, group_by, organisation=_scope(caller))
    return _answer(request, body)


@router.get("/referrals",
            summary="Referrals (つなぎ) by receiver type, state, urgency; time to acknowledge",
            responses=FIGURES_RESPONSES)
async def referrals(request: Request, caller: Reader, start: FromQ = None, to: ToQ = None, period: PeriodQ = None,
                    group_by: Literal["receiver_type", "state", "urgency", "organisation", "day"] | None = None,
                    ) -> Response:
    p = _period(request, period, start, to)
    await _final(request)
    body = await figures.referrals(request.app.state.pool, p, group_by, organisation=_scope(caller))
    return _answer(request, body)


@router.get("/seats",
            summary="Chat and SNS seats: conversations per seat-hour (席あたり時間あたり会話数), seat occupancy "
                    "(席の占有率)",
            responses=FIGURES_RESPONSES)
async def seats(request: Request, caller: Reader, start: FromQ = None, to: ToQ = None, period: PeriodQ = None,
                group_by: Literal["desk", "organisation", "hour", "day"] | None = None) -> Response:
    p = _period(request, period, start, to)
    await _final(request)
    body = await figures.seats(request.app.state.pool, p, group_by, organisation=_scope(caller))
    return _answer(request, body)


@router.get("/periods", summary="The named periods")
async def periods(request: Request, caller: Reader) -> dict[str, Any]:
    return {name: p.as_dict() for name, p in request.app.state.periods.items()}
