"""The audit log records what was denied (403, 404) and refused (409, 422) as well as what was
allowed; and referral ids that cannot be ids (NUL, lone surrogates, non-ASCII) answer 404 / 422 with
a JSON problem and never reach PostgreSQL. Through the real HTTP API of the referral process."""

from __future__ import annotations

import asyncpg
import pytest

from tests.integration.referral_support import consultation, publish, referral, wait_for  # noqa: F401

pytestmark = pytest.mark.integration

EVERYONE = ["municipality", "self_reliance_centre", "police"]



async def audit_rows(dsn: str) -> list[dict]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT org_id, role, action, referral_id, basis, outcome, http_status "
                                "FROM referral.audit_log ORDER BY seq")
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def test_denied_and_refused_reads_and_actions_are_audited_with_their_outcome(referral):  # noqa: F811
    await publish(referral.bootstrap, referral.topic("consultation.events"), [consultation(1, consent=EVERYONE)])
    office, other, secretariat, partner = (referral.client(o) for o in
                                           ("muni-131016", "srsc-131016", "secretariat", "npo-a"))
    async with office, other, secretariat, partner:
        listed = await wait_for(office, "/v1/referrals", lambda r: r.status_code == 200 and r.json()["referrals"])
        rid = listed.json()["referrals"][0]["referral_id"]
        statuses = {
            # not addressed to the caller: 404, as if absent — and audited as denied
            ("srsc-131016", "read"): (await other.get(f"/v1/referrals/{rid}")).status_code,
            ("srsc-131016", "acknowledge"): (await other.post(f"/v1/referrals/{rid}/acknowledge")).status_code,
            # the role may not: 403
            ("muni-131016", "cancel"): (await office.post(f"/v1/referrals/{rid}/cancel",
                                                          json={"reason": "withdrawn"})).status_code,
            ("secretariat", "acknowledge"): (await secretariat.post(f"/v1/referrals/{rid}/acknowledge")).status_code,
            ("npo-a", "list"): (await partner.get("/v1/referrals")).status_code,
            ("npo-a", "read"): (await partner.get(f"/v1/referrals/{rid}")).status_code,
            # not possible in the referral's state: 409
            ("muni-131016", "accept"): (await office.post(f"/v1/referrals/{rid}/accept")).status_code,
            ("muni-131016", "acknowledge"): (await office.post(f"/v1/referrals/{rid}/acknowledge")).status_code,
            # without the reason it needs: 422
            ("muni-131016", "reject"): (await office.post(f"/v1/referrals/{rid}/reject", json={})).status_code,
            # absent
            ("muni-131016", "read-absent"): (await office.get("/v1/referrals/ref-no-such-1")).status_code,
        }
    assert statuses == {
        ("srsc-131016", "read"): 404, ("srsc-131016", "acknowledge"): 404,
        ("muni-131016", "cancel"): 403, ("secretariat", "acknowledge"): 403, ("npo-a", "list"): 403,
        ("npo-a", "read"): 403, ("muni-131016", "accept"): 409, ("muni-131016", "acknowledge"): 200,
        ("muni-131016", "reject"): 422, ("muni-131016", "read-absent"): 404,
    }

    rows = await audit_rows(referral.settings.database_url)
    got = {(r["org_id"], r["action"], r["referral_id"], r["outcome"], r["http_status"], r["basis"]) for r in rows}
    expected = {
        ("srsc-131016", "read", rid, "denied", 404, "none"),
        ("srsc-131016", "acknowledge", rid, "denied", 404, "none"),
        ("muni-131016", "cancel", rid, "denied", 403, "none"),
        ("secretariat", "acknowledge", rid, "denied", 403, "none"),
        ("npo-a", "list", None, "denied", 403, "none"),
        ("npo-a", "read", rid, "denied", 403, "none"),
        ("muni-131016", "accept", rid, "refused", 409, "addressee"),
        ("muni-131016", "acknowledge", rid, "allowed", 200, "addressee"),
        ("muni-131016", "reject", rid, "refused", 422, "addressee"),
        ("muni-131016", "read", "ref-no-such-1", "denied", 404, "none"),
        ("muni-131016", "list", rid, "allowed", 200, "addressee"),
    }
    assert expected <= got, expected - got
    # nothing else: every row is one of these (the office's polling lists, before the referral, read none)
    assert got - expected <= {("muni-131016", "list", None, "allowed", 200, "addressee")}
    # a denied row never says why the caller might have seen it
    assert all(r["basis"] == "none" for r in rows if r["outcome"] == "denied")


BAD_IDS = ["x%00", "%00", "ref-1%00%27", "%ED%A0%80", "%F0%9F%98%80", "%C3%A9", "a" * 101, "ref%0Aid", "x%20y"]


async def test_ids_that_cannot_be_ids_answer_404_or_422_and_never_reach_postgresql(referral):  # noqa: F811
    office, secretariat = referral.client("muni-131016"), referral.client("secretariat")
    async with office, secretariat:
        for bad in BAD_IDS:
            for client in (office, secretariat):
                read = await client.get(f"/v1/referrals/{bad}")
                assert read.status_code == 404, (bad, read.status_code, read.text)
                assert read.headers["content-type"].startswith("application/json") and read.json()["detail"]
            acted = await office.post(f"/v1/referrals/{bad}/acknowledge")
            assert acted.status_code == 404 and acted.json()["detail"], (bad, acted.text)
            cancelled = await secretariat.post(f"/v1/referrals/{bad}/cancel", json={"reason": "withdrawn"})
            assert cancelled.status_code == 404 and cancelled.json()["detail"], (bad, cancelled.text)
            if len(bad) <= 100:
                paged = await secretariat.get(f"/v1/referrals?after={bad}")
                assert paged.status_code == 422 and paged.json()["detail"], (bad, paged.text)
        # the service is fine afterwards, and answers a good id as before
        assert (await secretariat.get("/v1/referrals?after=ref-0")).status_code == 200
        assert (await secretariat.get("/v1/referrals/ref-0")).status_code == 404

    # the denials were audited without the text (no id to record), and nothing failed in PostgreSQL
    rows = await audit_rows(referral.settings.database_url)
    denied = [r for r in rows if r["outcome"] == "denied"]
    assert len(denied) == len(BAD_IDS) * 4 + 1 and all(r["referral_id"] is None for r in denied[:-1])
    log = referral.processes[0].log_path.read_text()
    assert "Traceback" not in log and "asyncpg" not in log and "invalid byte sequence" not in log
