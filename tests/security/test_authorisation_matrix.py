"""Who may do what: every endpoint of every service, asked by every kind of caller.

"own" and "other" are the caller's organisation: a partner publishes events of its own
organisation (the "other" partner sends the same event, naming an organisation not its own); a
receiver acts on a referral addressed to it (the "other" receiver on one addressed elsewhere).
"revoked" is a secretariat key that was revoked: the most powerful key, dead.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.security.conftest import ORG, OTHER_ORG, OTHER_RECEIVER, RECEIVER, SecureStack
from tests.support import contact_received

CALLERS = ("partner", "partner-other", "receiver", "receiver-other", "secretariat", "revoked", "none")

# The expected status of every cell. {mine}: the referral addressed to "receiver";
# {theirs}: the one addressed to "receiver-other".
#                                                       partner  partner   receiver receiver secre-   revoked  no
# service   method  path                                (own)    (other)   (own)    (other)  tariat   key      key
MATRIX = [
    ("intake",   "POST", "/v1/events",                     202,     403,      403,     403,     403,     401,     401),
    ("intake",   "GET",  "/health/ready",                  200,     200,      200,     200,     200,     200,     200),
    ("intake",   "GET",  "/openapi.json",                  200,     200,      200,     200,     200,     200,     200),
    ("routing",  "GET",  "/v1/desks",                      200,     200,      403,     403,     200,     401,     401),
    ("routing",  "GET",  "/v1/queues",                     200,     200,      403,     403,     200,     401,     401),
    ("routing",  "GET",  "/health/ready",                  200,     200,      200,     200,     200,     200,     200),
    ("referral", "GET",  "/v1/referrals",                  403,     403,      200,     200,     200,     401,     401),
    ("referral", "GET",  "/v1/referrals/{mine}",           403,     403,      200,     404,     200,     401,     401),
    ("referral", "POST", "/v1/referrals/{mine}/acknowledge", 403,   403,      200,     404,     403,     401,     401),
    ("referral", "POST", "/v1/referrals/{theirs}/cancel",  403,     403,      403,     403,     200,     401,     401),
    ("referral", "GET",  "/health/ready",                  200,     200,      200,     200,     200,     200,     200),
    ("metrics",  "GET",  "/v1/metrics/answer-rate?period=trial1", 200, 200,   403,     403,     200,     401,     401),
    ("metrics",  "GET",  "/v1/metrics/waits?period=trial1", 200,    200,      403,     403,     200,     401,     401),
    ("metrics",  "GET",  "/v1/metrics/seats?period=trial1", 200,    200,      403,     403,     200,     401,     401),
    ("metrics",  "GET",  "/v1/metrics/consultations?period=trial1", 200, 200, 403,     403,     200,     401,     401),
    ("metrics",  "GET",  "/v1/metrics/referrals?period=trial1", 200, 200,     403,     403,     200,     401,     401),
    ("metrics",  "GET",  "/v1/metrics/periods",            200,     200,      403,     403,     200,     401,     401),
    # ops' Prometheus scrape is open on the cluster network only (deploy/k8s NetworkPolicies)
    ("metrics",  "GET",  "/metrics",                       200,     200,      200,     200,     200,     200,     200),
    ("metrics",  "GET",  "/health/ready",                  200,     200,      200,     200,     200,     200,     200),
]


def cell_id(row: tuple) -> str:
    return f"{row[0]} {row[1]} {row[2]}"


async def ask(stack: SecureStack, service: str, method: str, path: str, caller: str) -> httpx.Response:
    path = path.format(mine=stack.referral_of[RECEIVER], theirs=stack.referral_of[OTHER_RECEIVER])
    headers = stack.headers(caller)
    body = None
    if path == "/v1/events":
        # Always an event of the first partner's organisation, new each time (never a duplicate).
        event = contact_received(ORG, uuid.uuid4().int % 10**8)
        event["id"] = f"matrix-{uuid.uuid4().hex}"
        headers = {**headers, "Content-Type": "application/cloudevents+json"}
        body = json.dumps(event).encode()
    elif path.endswith("/cancel"):
        headers = {**headers, "Content-Type": "application/json"}
        body = b'{"reason": "withdrawn"}'
    async with httpx.AsyncClient(base_url=stack.url(service), timeout=15) as client:
        return await client.request(method, path, headers=headers, content=body)


@pytest.mark.parametrize("row", MATRIX, ids=cell_id)
async def test_every_caller_gets_exactly_the_status_the_matrix_says(secure_stack, row):
    service, method, path, *statuses = row
    expected = dict(zip(CALLERS, statuses, strict=True))
    # The callers that succeed go last: an action done once (acknowledge) is not allowed twice.
    order = sorted(CALLERS, key=lambda c: expected[c] < 300)
    got = {c: (await ask(secure_stack, service, method, path, c)).status_code for c in order}
    assert got == expected


async def test_a_partner_sees_its_own_desks_only_and_the_secretariat_sees_every_desk(secure_stack):
    async def orgs(caller: str) -> set[str]:
        desks = (await ask(secure_stack, "routing", "GET", "/v1/desks", caller)).json()["desks"]
        return {d["organisation_id"] for d in desks}

    assert await orgs("partner") == {ORG}
    assert await orgs("partner-other") == {OTHER_ORG}
    assert {ORG, OTHER_ORG} <= await orgs("secretariat")


async def test_a_partner_sees_queue_contacts_only_as_counts(secure_stack):
    queues = (await ask(secure_stack, "routing", "GET", "/v1/queues", "partner")).json()["queues"]
    assert queues and all(q["contacts"] is None for q in queues)
    everything = (await ask(secure_stack, "routing", "GET", "/v1/queues", "secretariat")).json()["queues"]
    assert len(everything) >= len(queues) and all(q["contacts"] is not None for q in everything)


async def test_a_receiver_lists_only_what_is_addressed_to_it(secure_stack):
    async def listed(caller: str) -> set[str]:
        r = await ask(secure_stack, "referral", "GET", "/v1/referrals", caller)
        return {x["referral_id"] for x in r.json()["referrals"]}

    mine, theirs = secure_stack.referral_of[RECEIVER], secure_stack.referral_of[OTHER_RECEIVER]
    assert await listed("receiver") == {mine}
    assert await listed("receiver-other") == {theirs}
    assert {mine, theirs} <= await listed("secretariat")
