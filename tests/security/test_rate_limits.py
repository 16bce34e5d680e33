"""Per-partner rate limits and size limits on intake's HTTP door.

The token bucket is checked with a clock the test moves by hand; through HTTP, a refill rate so
slow that no amount of test time refills a token, so the answers never depend on the wall clock.
"""

from __future__ import annotations

import json
import math
import uuid

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.settings import IntakeSettings
from tests.security.conftest import LIMITED_BURST, size
from tests.security.intake_support import stored_ids
from tests.support import contact_received
from tsunagu import auth
from tsunagu.db import create_pool
from tsunagu.ratelimit import Holds, RateLimiter, retry_after_header
from tsunagu.settings import SettingsError, get_settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_partner_may_send_its_burst_at_once_and_then_waits_for_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=100, clock=clock)
    assert limiter.take("npo-a", 100) == 0.0
    assert limiter.take("npo-a", 5) == pytest.approx(0.5)  # 5 events at 10 a second
    clock.now += 0.5
    assert limiter.take("npo-a", 5) == 0.0
    assert limiter.take("npo-a", 1) > 0


def test_a_refused_request_takes_nothing_from_the_bucket():
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=10, clock=clock)
    assert limiter.take("npo-a", 8) == 0.0
    for _ in range(5):
        assert limiter.take("npo-a", 5) == pytest.approx(3.0)
    assert limiter.take("npo-a", 2) == 0.0


def test_one_partner_exhausting_its_limit_does_not_slow_another():
    limiter = RateLimiter(rate=1, burst=10, clock=FakeClock())
    assert limiter.take("npo-a", 10) == 0.0
    assert limiter.take("npo-a", 1) > 0
    assert limiter.take("npo-b", 10) == 0.0


def test_rate_zero_means_no_limit_and_a_request_larger_than_the_burst_never_fits():
    assert RateLimiter(rate=0, burst=1, clock=FakeClock()).take("npo-a", 10**9) == 0.0
    assert RateLimiter(rate=1, burst=10, clock=FakeClock()).take("npo-a", 11) == math.inf


def test_retry_after_is_whole_seconds_rounded_up():
    assert [retry_after_header(w) for w in (0.01, 1.0, 1.2, 59.9)] == ["1", "1", "2", "60"]


@settings(max_examples=size(ci=300, full=5000), deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5, allow_nan=False), st.integers(1, 50)), max_size=200),
       st.floats(0.5, 100), st.integers(50, 500))
def test_what_a_partner_gets_through_never_exceeds_the_burst_plus_the_rate_times_the_time(requests, rate, burst):
    clock = FakeClock()
    start = clock.now
    limiter = RateLimiter(rate=rate, burst=burst, clock=clock)
    admitted = 0
    for pause, cost in requests:
        clock.now += pause
        wait = limiter.take("npo-a", cost)
        if wait == 0.0:
            admitted += cost
        else:
            # a retry after the announced wait fits (nothing else was taken meanwhile)
            clock.now += wait
            assert limiter.take("npo-a", cost) == 0.0
            admitted += cost
        assert admitted <= burst + rate * (clock.now - start) + 1e-6


def test_settings_refuse_a_burst_smaller_than_a_full_batch():
    with pytest.raises(SettingsError, match="TSUNAGU_INTAKE_BURST"):
        get_settings(IntakeSettings, intake_burst=10, max_batch_events=500)
    assert get_settings(IntakeSettings, intake_burst=10, max_batch_events=500, intake_rate_per_s=0).intake_burst == 10


# --- through HTTP: the second intake process of the stack, with a burst of 5 and (practically) no refill ---------


@pytest.fixture
async def partners(secure_stack) -> dict[str, str]:
    """Two partner organisations new to this test (fresh buckets): name -> key."""
    pool = await create_pool(secure_stack.settings.database_url)
    try:
        orgs = [f"rate-{uuid.uuid4().hex[:8]}" for _ in range(2)]
        return {org: (await auth.issue_credential(pool, org, "partner", backfill=True))[1] for org in orgs}
    finally:
        await pool.close()


def batch(org: str, numbers: range) -> bytes:
    return json.dumps([contact_received(org, n) for n in numbers]).encode()


def client_for(secure_stack, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=secure_stack.url("intake-limited"), timeout=15, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents-batch+json"})


async def test_a_partner_over_its_limit_gets_429_with_retry_after_and_nothing_is_stored(secure_stack, partners):
    (org, key), (other, other_key) = partners.items()
    async with client_for(secure_stack, key) as client, client_for(secure_stack, other_key) as other_client:
        assert (await client.post("/v1/events", content=batch(org, range(0, 3)))).status_code == 200
        over = await client.post("/v1/events", content=batch(org, range(3, 6)))
        assert over.status_code == 429
        assert over.json()["error"] == "rate_limited"
        told = int(over.headers["Retry-After"])
        assert told >= 1
        # back before Retry-After: refused at the door, even with what would still fit, the wait not reset
        early = await client.post("/v1/events", content=batch(org, range(6, 8)))
        assert early.status_code == 429 and early.json()["error"] == "rate_limited"
        assert 1 <= int(early.headers["Retry-After"]) <= told
        # the other partner has its own bucket and is not held
        assert (await other_client.post("/v1/events", content=batch(other, range(0, LIMITED_BURST)))).status_code == 200
        assert (await other_client.post("/v1/events", content=batch(other, range(5, 6)))).status_code == 429
    ids = await stored_ids(secure_stack.settings.database_url)
    kept = {contact_received(org, n)["id"] for n in (0, 1, 2)} | {contact_received(other, n)["id"] for n in range(5)}
    refused = {contact_received(org, n)["id"] for n in range(3, 8)} | {contact_received(other, 5)["id"]}
    assert kept <= ids and not refused & ids


def test_an_empty_bucket_is_seen_without_taking_anything():
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=20, clock=clock)
    assert limiter.until_any("npo-a") == 0.0  # a new organisation has its whole burst
    assert limiter.take("npo-a", 20) == 0.0
    assert limiter.until_any("npo-a") == pytest.approx(0.1)  # one event's worth at 10 a second
    assert limiter.until_any("npo-a") == pytest.approx(0.1)  # looking took nothing
    clock.now += 0.1
    assert limiter.until_any("npo-a") == 0.0 and limiter.take("npo-a", 1) == 0.0


def test_a_held_key_is_held_until_its_wait_is_over_and_only_that_key():
    clock = FakeClock()
    holds = Holds(clock)
    holds.hold(b"a", 2.0, "rate_limited")
    assert holds.held(b"a") == (2.0, "rate_limited")
    assert holds.held(b"b") is None
    clock.now += 1.5
    assert holds.held(b"a") == (0.5, "rate_limited")
    clock.now += 0.5
    assert holds.held(b"a") is None


async def test_a_batch_over_the_maximum_is_413_and_an_oversized_event_in_a_batch_is_rejected(secure_stack, partners):
    org, key = next(iter(partners.items()))
    limit = secure_stack.settings.max_event_bytes
    async with client_for(secure_stack, key) as client:
        too_many = await client.post("/v1/events", content=batch(org, range(LIMITED_BURST + 1)))
        assert too_many.status_code == 413 and too_many.json()["error"] == "batch_too_large"

        small = contact_received(org, 100)
        large = contact_received(org, 101)
        large["data"]["padding"] = "x" * limit  # the event is larger than the limit; the batch is not
        answer = await client.post("/v1/events", content=json.dumps([small, large]).encode())
    assert answer.status_code == 200
    first, second = answer.json()["results"]
    assert first["status"] == "accepted"
    assert second["status"] == "rejected" and f"larger than {limit} bytes" in second["problems"][0]["message"]
