"""The receivers' API: what is addressed to them, and the steps they take.

Receivers (role ``receiver``, keys issued per organisation) see and act on only the referrals
currently addressed to their organisation; any other referral answers 404, exactly as one that does
not exist, so a receiver cannot even learn that it exists. The secretariat sees every referral and
may cancel. Every read and every action is written to the audit log: who (key, organisation, role),
what (the action and the referral), when, and on what basis (``addressee`` or ``secretariat``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from schemas.codes import ReceiverType, ReferralOutcome, ReferralReason, Urgency
from services.referral import store
from services.referral.domain import (
    NEEDS_OUTCOME,
    NEEDS_REASON,
    SECRETARIAT_ONLY,
    Action,
    IllegalTransition,
    MissingDetail,
    Referral,
    Status,
    addressed_to,
    allowed_actions,
)
from services.referral.handlers import Referrals, act
from tsunagu.auth import Caller
from tsunagu.http_auth import AUTH_RESPONSES, BAD_REQUEST, require_roles

router = APIRouter(prefix="/v1/referrals", tags=["referrals"], responses=AUTH_RESPONSES)
Reader = Annotated[Caller, Depends(require_roles("receiver", "secretariat"))]


class ReceiverOut(BaseModel):
    id: str
    type: ReceiverType


class LegalBasisOut(BaseModel):
    kind: str
    reference: str | None = None
    consent_scope: list[str] | None = None
    consent_recorded_by: str | None = None
    consent_recorded_at: datetime | None = None


class ReferralOut(BaseModel):
    referral_id: str
    contact_id: str
    status: Status
    urgency: Urgency
    receiver: ReceiverOut | None
    deadline: datetime | None = Field(description="while awaiting the receiver: when it escalates")
    escalations: int
    municipality: str | None
    requested_by: str = Field(description="the requesting organisation")
    legal_basis: LegalBasisOut | None
    reason: ReferralReason | None
    outcome: ReferralOutcome | None
    created_at: datetime | None
    updated_at: datetime | None
    version: int
    allowed_actions: list[Action] = Field(description="what the caller may do next")


class ReferralDetail(ReferralOut):
    history: list[dict[str, Any]]


class ReferralList(BaseModel):
    referrals: list[ReferralOut]
    next_after: str | None = Field(description="pass as ?after= for the next page; null on the last page")


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: ReferralReason | None = None
    outcome: ReferralOutcome | None = None


def _basis(ref: Referral) -> LegalBasisOut | None:
    b = ref.basis
    if b is None:
        return None
    c = b.consent
    return LegalBasisOut(
        kind=b.kind.value,
        reference=b.reference,
        consent_scope=[s.value for s in c.scope] if c else None,
        consent_recorded_by=c.recorded_by if c else None,
        consent_recorded_at=c.recorded_at if c else None,
    )


def _may(caller: Caller, action: Action) -> bool:
    return caller.role == "secretariat" if action in SECRETARIAT_ONLY else caller.role == "receiver"


def _out(ref: Referral, caller: Caller) -> dict[str, Any]:
    receiver = ref.receiver
    return ReferralOut(
        referral_id=ref.referral_id,
        contact_id=ref.contact_id,
        status=ref.status,
        urgency=ref.urgency,
        receiver=ReceiverOut(id=receiver.id, type=receiver.type) if receiver else None,
        deadline=ref.overdue_at,
        escalations=ref.escalations,
        municipality=ref.municipality,
        requested_by=ref.organisation_id,
        legal_basis=_basis(ref),
        reason=ref.reason,
        outcome=ref.outcome,
        created_at=ref.created_at,
        updated_at=ref.updated_at,
        version=ref.version,
        allowed_actions=[a for a in allowed_actions(ref.status) if _may(caller, a)],
    ).model_dump(mode="json")


def _visible(ref: Referral | None, caller: Caller) -> bool:
    return ref is not None and (caller.role == "secretariat" or addressed_to(ref, caller.org_id))


def _basis_of_access(caller: Caller) -> str:
    return "secretariat" if caller.role == "secretariat" else "addressee"


def _not_found() -> HTTPException:
    return HTTPException(404, "no such referral addressed to your organisation")


def _referrals(request: Request) -> Referrals:
    return request.app.state.referrals


@router.get("", summary="Referrals addressed to the caller's organisation (all of them for the secretariat)")
async def list_referrals(
    request: Request,
    caller: Reader,
    status: Annotated[Status | None, Query(description="only referrals in this state")] = None,
    after: Annotated[str | None, Query(max_length=100, description="the last referral_id of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ReferralList:
    receiver = None if caller.role == "secretariat" else caller.org_id
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        found = await store.listing(conn, receiver, status.value if status else None, limit, after)
        await store.audit(conn, caller.key_id, caller.org_id, caller.role, "list",
                          [r.referral_id for r in found] or [None], _basis_of_access(caller))
    return ReferralList(
        referrals=[_out(r, caller) for r in found],  # type: ignore[misc]
        next_after=found[-1].referral_id if len(found) == limit else None,
    )


@router.get("/{referral_id}", summary="One referral with its history", responses={404: {}})
async def get_referral(request: Request, referral_id: str, caller: Reader) -> ReferralDetail:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        ref = await store.get(conn, referral_id)
        if not _visible(ref, caller):
            raise _not_found()
        assert ref is not None
        await store.audit(conn, caller.key_id, caller.org_id, caller.role, "read",
                          [referral_id], _basis_of_access(caller))
        history = await store.history(conn, referral_id)
    return ReferralDetail(**_out(ref, caller), history=history)


def _action_route(action: Action) -> None:
    needs = "a reason code" if action in NEEDS_REASON else "an outcome code" if action in NEEDS_OUTCOME else None
    summary = f"{action.value.capitalize()} the referral" + (f" (with {needs})" if needs else "")
    roles = ("secretariat",) if action in SECRETARIAT_ONLY else ("receiver",)

    @router.post(
        f"/{{referral_id}}/{action.value}",
        summary=summary,
        responses={**BAD_REQUEST, 404: {},
                   409: {"description": "not allowed in the referral's state; lists the allowed actions"}},
        name=f"{action.value}_referral",
    )
    async def take_action(
        request: Request,
        referral_id: str,
        body: Annotated[ActionBody | None, Body()] = None,
        # a default, not Annotated: the annotation is a string and `roles` is this closure's local
        caller: Caller = Depends(require_roles(*roles)),  # noqa: B008
    ) -> ReferralOut:
        referrals = _referrals(request)
        body = body or ActionBody()
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            ref = await store.locked(conn, referral_id)
            if not _visible(ref, caller):
                raise _not_found()
            assert ref is not None
            try:
                new = await act(referrals, conn, ref, action, caller.org_id, reason=body.reason, outcome=body.outcome)
            except IllegalTransition as err:
                return JSONResponse(  # type: ignore[return-value]
                    {"error": "illegal_transition", "message": str(err), "status": err.status.value,
                     "allowed": [a.value for a in err.allowed if _may(caller, a)]},
                    status_code=409,
                )
            except MissingDetail as err:
                raise HTTPException(422, str(err)) from None
            await store.audit(conn, caller.key_id, caller.org_id, caller.role, action.value, [referral_id],
                              _basis_of_access(caller))
        referrals.wake_outbox()
        return ReferralOut(**_out(new, caller))



for _action in Action:
    _action_route(_action)
