"""referral's consumer on FastStream's in-memory broker: its real subscriber, a fake store below it.

Fast checks of the wiring (tests/fakes.py); tests/integration/test_referral_flow.py and
test_referral_conflicts.py have the same consumer on the real broker and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

import pytest

from schemas.codes import ReceiverType
from services.referral import handlers, store
from services.referral.app import SPEC
from services.referral.domain import Change, Receiver, Referral
from services.referral.handlers import Referrals, policy_of, register_consumer
from tests.fakes import FakeOutbox, FakePool, fake_settings, in_memory
from tests.integration.referral_support import consultation, requested
from tsunagu import topics

MUNICIPAL_OFFICE = Receiver("muni-131016", ReceiverType.municipality, "131016")


class FakeReferralStore:
    """referral's inbox, referrals, changes and directory, in memory."""

    def __init__(self) -> None:
        self.inbox: set[tuple[str, str]] = set()
        self.referrals: dict[str, Referral] = {}
        self.changes: list[Change] = []
        self.watermark: datetime | None = None

    async def claim_new(self, conn: object, schema: str, keys: list[tuple[str, str, str]]) -> set[tuple[str, str]]:
        new = {(source, id_) for source, id_, _ in keys} - self.inbox
        self.inbox |= new
        return new

    async def advance_watermark(self, conn: object, latest: datetime) -> None:
        self.watermark = max(self.watermark or latest, latest)

    async def receivers_for(self, conn: object, municipalities: set[str]) -> dict[str, list[Receiver]]:
        return {m: [MUNICIPAL_OFFICE] if m == "131016" else [] for m in municipalities}

    async def insert_new(self, conn: object, opened: list[tuple[Referral, Change]]) -> list[tuple[Referral, Change]]:
        inserted = []
        for ref, change in opened:
            if ref.referral_id not in self.referrals:
                self.referrals[ref.referral_id] = ref
                inserted.append((ref, change))
        return inserted

    async def record_changes(self, conn: object, changes: list[tuple[Referral, Change]]) -> None:
        self.changes += [change for _, change in changes]

    async def stored_requests(self, conn: object, ids: Iterable[str]) -> dict[str, tuple[Referral, bool]]:
        return {i: (self.referrals[i], True) for i in ids if i in self.referrals}


@pytest.fixture
def fake_store(monkeypatch: pytest.MonkeyPatch) -> FakeReferralStore:
    fake = FakeReferralStore()
    for name in ("advance_watermark", "receivers_for", "insert_new", "record_changes", "stored_requests"):
        monkeypatch.setattr(store, name, getattr(fake, name))
    monkeypatch.setattr(handlers, "claim_new", fake.claim_new)
    return fake


@pytest.fixture
def outbox(monkeypatch: pytest.MonkeyPatch) -> FakeOutbox:
    fake = FakeOutbox()
    monkeypatch.setattr(handlers, "enqueue", fake.enqueue)
    return fake


def referrals_on_fakes(outbox: FakeOutbox) -> Referrals:
    settings = fake_settings(SPEC.settings)
    return Referrals(settings=settings, policy=policy_of(settings), pool=FakePool(), outbox=outbox)


async def test_a_consultation_that_needs_a_referral_opens_one_through_the_store(fake_store, outbox):
    referrals = referrals_on_fakes(outbox)
    broker = SPEC.make_broker(referrals.settings)
    register_consumer(SPEC, broker, referrals)

    async with in_memory(broker) as br:
        event = consultation(1, consent=["municipality"])
        await br.publish(json.dumps(event).encode(), referrals.settings.topic(topics.CONSULTATION_EVENTS))

    [ref] = fake_store.referrals.values()
    assert ref.contact_id == "c-npo-a-1"
    assert ref.receiver == MUNICIPAL_OFFICE
    assert [c.data.referral_id for c in fake_store.changes] == [ref.referral_id]
    assert fake_store.watermark is not None and outbox.woken == 1
    assert referrals.consumer.verdict().ok


async def test_a_redelivered_consultation_finds_its_event_in_the_inbox_and_opens_nothing_more(fake_store, outbox):
    referrals = referrals_on_fakes(outbox)
    broker = SPEC.make_broker(referrals.settings)
    register_consumer(SPEC, broker, referrals)
    value = json.dumps(consultation(2, consent=["municipality"])).encode()

    async with in_memory(broker) as br:
        await br.publish(value, referrals.settings.topic(topics.CONSULTATION_EVENTS))
        await br.publish(value, referrals.settings.topic(topics.CONSULTATION_EVENTS))

    assert len(fake_store.referrals) == 1 and len(fake_store.changes) == 1
    assert outbox.woken == 1


async def test_a_request_under_a_referral_id_that_holds_another_referral_is_refused_onto_the_rejected_topic(
        fake_store, outbox):
    referrals = referrals_on_fakes(outbox)
    broker = SPEC.make_broker(referrals.settings)
    register_consumer(SPEC, broker, referrals)
    topic = referrals.settings.topic(topics.CONSULTATION_EVENTS)

    async with in_memory(broker) as br:
        await br.publish(json.dumps(requested("ref-1")).encode(), topic)
        other = requested("ref-1", urgency="urgent")
        other["id"] = "ev-ref-1-requested-again"
        await br.publish(json.dumps(other).encode(), topic)

    assert fake_store.referrals["ref-1"].urgency == "standard"  # the first request stands
    [refused] = outbox.enqueued
    assert refused.topic == topics.REJECTED
    record = json.loads(refused.value)
    assert record["id"] == "ev-ref-1-requested-again"
    assert "urgency" in {p["path"].removeprefix("data.") for p in record["problems"]}
    assert "urgent" not in refused.value.decode()  # field names, never values


async def test_a_record_that_is_not_an_event_is_set_aside_without_touching_the_store(fake_store, outbox):
    referrals = referrals_on_fakes(outbox)
    broker = SPEC.make_broker(referrals.settings)
    register_consumer(SPEC, broker, referrals)

    async with in_memory(broker) as br:
        await br.publish(b"not json at all", referrals.settings.topic(topics.CONSULTATION_EVENTS))

    assert fake_store.inbox == set() and fake_store.referrals == {}
    assert referrals.consumer.verdict().ok  # set aside, not retried
