"""The receivers' API: what is addressed to them, and the steps they take.

Receivers (role ``receiver``, keys issued per organisation) see and act on only the referrals
currently addressed to their organisation; any other referral answers 404, exactly as one that does
not exist, so a receiver cannot even learn that it exists. The secretariat sees every referral and
may cancel. Every read and every action is written to the audit log: who (key, organisation, role),
what (the action and the referral), when, on what basis (``addressee`` or ``secretariat``; ``none``
when denied), and the outcome: ``allowed``; ``denied`` (403: the key's role may not; 404: not
addressed to the caller, or absent); ``refused`` (409: not possible in the referral's state; 422:
the reason or outcome missing). Only a request without a valid key (401) is not written: it has no
"who".

A referral id in the path (or ``after``) that is not an id (``schemas.events.Id``: 1–100 of
``A-Z a-z 0-9 . _ : -``) cannot name a referral: it answers 404 (422 for ``after``) without reaching
the database, so NUL characters and other text PostgreSQL refuses never get there.
"""

from __future__ import annotations

import re
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
from tsunagu.http_auth import AUTH_RESPONSES, BAD_REQUEST, current_caller

router = APIRouter(prefix="/v1/referrals", tags=["referrals"], responses=AUTH_RESPONSES)

_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")  # schemas.events.Id: what a referral_id can be
NO_BASIS = "none"  # the basis written on a denied row: nothing entitled the caller


def valid_id(text: str | None) -> bool:
    """Whether ``text`` can be a referral id. Anything else (NUL, lone surrogates, any non-ASCII or
    overlong text) never names a referral and must never reach PostgreSQL."""
    return text is not None and _ID.fullmatch(text) is not None


def audited_roles(action: str, *roles: str) -> Any:
    """Like ``require_roles`` (401 without a valid key, 403 for another role), and a 403 is written to
    the audit log as denied, with the referral id of the path when it is one."""

    async def dependency(request: Request) -> Caller:
        caller = await current_caller(request)
        if caller.role not in roles:
            rid = request.path_params.get("referral_id")
            await store.audit(request.app.state.pool, caller.key_id, caller.org_id, caller.role, action,
                              [rid if valid_id(rid) else None], NO_BASIS, outcome="denied", http_status=403)
            raise HTTPException(403, f"a {caller.role} key cannot do this")
        return caller

    return dependency


Reader = Annotated[Caller, Depends(audited_roles("read", "receiver", "secretariat"))]
Lister = Annotated[Caller, Depends(audited_roles("list", "receiver", "secretariat"))]


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
    caller: Lister,
    status: Annotated[Status | None, Query(description="only referrals in this state")] = None,
    after: Annotated[str | None, Query(max_length=100, description="the last referral_id of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ReferralList:
    if after is not None and not valid_id(after):
        raise HTTPException(422, "after: not a referral id (1-100 of A-Z a-z 0-9 . _ : -)")
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
    valid = valid_id(referral_id)
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        ref = await store.get(conn, referral_id) if valid else None
        visible = _visible(ref, caller)
        if visible:
            await store.audit(conn, caller.key_id, caller.org_id, caller.role, "read",
                              [referral_id], _basis_of_access(caller))
            history = await store.history(conn, referral_id)
        else:  # committed with the transaction, before the 404
            await store.audit(conn, caller.key_id, caller.org_id, caller.role, "read",
                              [referral_id if valid else None], NO_BASIS, outcome="denied", http_status=404)
    if not visible:
        raise _not_found()
    assert ref is not None
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
        caller: Caller = Depends(audited_roles(action.value, *roles)),  # noqa: B008
    ) -> ReferralOut:
        referrals = _referrals(request)
        body = body or ActionBody()
        valid = valid_id(referral_id)
        refusal: JSONResponse | None = None
        missing: str | None = None

        async def audit(conn: Any, outcome: store.AuditOutcome, status: int) -> None:
            basis = NO_BASIS if outcome == "denied" else _basis_of_access(caller)
            await store.audit(conn, caller.key_id, caller.org_id, caller.role, action.value,
                              [referral_id if valid else None], basis, outcome=outcome, http_status=status)

        # every outcome's audit row commits with the transaction; the answer is given after it
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            ref = await store.locked(conn, referral_id) if valid else None
            denied = not _visible(ref, caller)
            if denied:
                await audit(conn, "denied", 404)
            else:
                assert ref is not None
                try:
                    new = await act(referrals, conn, ref, action, caller.org_id, reason=body.reason,
                                    outcome=body.outcome)
                except IllegalTransition as err:
                    await audit(conn, "refused", 409)
                    refusal = JSONResponse(
                        {"error": "illegal_transition", "message": str(err), "status": err.status.value,
                         "allowed": [a.value for a in err.allowed if _may(caller, a)]},
                        status_code=409,
                    )
                except MissingDetail as err:
                    await audit(conn, "refused", 422)
                    missing = str(err)
                else:
                    await audit(conn, "allowed", 200)
        if denied:
            raise _not_found()
        if refusal is not None:
            return refusal  # type: ignore[return-value]
        if missing is not None:
            raise HTTPException(422, missing)
        referrals.wake_outbox()
        return ReferralOut(**_out(new, caller))



for _action in Action:
    _action_route(_action)
