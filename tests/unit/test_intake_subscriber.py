"""intake's Kafka door on FastStream's in-memory broker: its real subscriber, a fake store below it.

Fast checks of the wiring (tests/fakes.py); tests/integration/test_intake_ingress.py has the same
door on the real broker and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

import pytest

from services.intake import store
from services.intake.app import SPEC
from services.intake.domain import Canonical, Rules
from services.intake.handlers import Intake, register_consumer
from tests.fakes import FakePool, catch, fake_settings, in_memory
from tests.support import T0, contact_received
from tsunagu import auth, topics
from tsunagu.speaker import Speaker


class FakeIntakeStore:
    """intake's store and the partners' credentials, in memory: every (source, id) new once."""

    def __init__(self, partners: dict[str, Speaker]) -> None:
        self.partners = partners
        self.stored: list[Canonical] = []
        self.calls = 0

    async def store_new(self, pool: object, events: list[Canonical]) -> store.Stored:
        self.calls += 1
        seen = {(e.source, e.id) for e in self.stored}
        new = [e for e in events if (e.source, e.id) not in seen]
        self.stored += new
        return store.Stored(new={(e.source, e.id) for e in new})

    async def partner_speakers(self, pool: object, org_ids: set[str]) -> dict[str, Speaker]:
        return {org: s for org, s in self.partners.items() if org in org_ids}


@pytest.fixture
def fake_store(monkeypatch: pytest.MonkeyPatch) -> FakeIntakeStore:
    fake = FakeIntakeStore({"npo-a": Speaker("npo-a", backfill=True)})
    monkeypatch.setattr(store, "store_new", fake.store_new)
    monkeypatch.setattr(auth, "partner_speakers", fake.partner_speakers)
    return fake


def intake_on_fakes() -> Intake:
    settings = fake_settings(SPEC.settings)
    rules = Rules(caller_secret=b"s" * 32, max_event_bytes=4096)
    # the test events are of the trial's week; the partners' keys may back-fill it
    return Intake(settings=settings, rules=rules, clock=lambda: T0 + timedelta(days=1), pool=FakePool())


async def test_a_record_that_is_not_json_goes_to_the_rejected_topic_and_nothing_is_stored(fake_store):
    intake = intake_on_fakes()
    broker = SPEC.make_broker(intake.settings)
    register_consumer(SPEC, broker, intake)
    rejected = catch(broker, intake.settings.topic(topics.REJECTED))
    poison = b'{"specversion": "1.0", "id": '

    async with in_memory(broker) as br:
        await br.publish(poison, intake.settings.topic(topics.INGRESS), key=b"c-npo-a-1")

    assert fake_store.stored == []
    assert len(rejected) == 1
    record = json.loads(rejected[0].value)
    assert record["topic"] == intake.settings.topic(topics.INGRESS)
    assert record["payload_sha256"] == hashlib.sha256(poison).hexdigest()
    assert record["payload_bytes"] == len(poison)
    assert record["problems"] and poison.decode() not in rejected[0].value.decode()  # never the payload
    assert rejected[0].key == b"c-npo-a-1"
    assert intake.consumer.verdict().ok


async def test_an_event_of_a_registered_partner_is_stored_once_and_nothing_is_rejected(fake_store):
    intake = intake_on_fakes()
    broker = SPEC.make_broker(intake.settings)
    register_consumer(SPEC, broker, intake)
    rejected = catch(broker, intake.settings.topic(topics.REJECTED))
    event = json.dumps(contact_received("npo-a", 1)).encode()

    async with in_memory(broker) as br:
        await br.publish(event, intake.settings.topic(topics.INGRESS), key=b"c-npo-a-1")
        await br.publish(event, intake.settings.topic(topics.INGRESS), key=b"c-npo-a-1")  # redelivered

    assert rejected == []
    assert [(e.source, e.id) for e in fake_store.stored] == [("/partners/npo-a/telephony", "ev-npo-a-1-received")]
    assert fake_store.stored[0].contact_id == "c-npo-a-1"


async def test_an_event_of_an_organisation_without_a_partner_key_is_rejected_naming_its_source(fake_store):
    intake = intake_on_fakes()
    broker = SPEC.make_broker(intake.settings)
    register_consumer(SPEC, broker, intake)
    rejected = catch(broker, intake.settings.topic(topics.REJECTED))

    async with in_memory(broker) as br:
        await br.publish(json.dumps(contact_received("npo-x", 1)).encode(), intake.settings.topic(topics.INGRESS))

    assert fake_store.stored == []
    [record] = [json.loads(r.value) for r in rejected]
    assert record["id"] == "ev-npo-x-1-received"
    assert [p["path"] for p in record["problems"]] == ["source"]
    assert isinstance(datetime.fromisoformat(record["rejected_at"]), datetime)
