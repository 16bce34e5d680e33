"""The batch-consume pattern's decoding (tsunagu/consume.py), without a broker."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from schemas.kafka import encode_value
from tests.integration.routing_support import ended, field_selected, received
from tests.support import T0
from tsunagu.consume import decode_records


def record(partition: int, offset: int, event: dict) -> SimpleNamespace:
    return SimpleNamespace(topic="t.contact.events", partition=partition, offset=offset,
                           key=event["partitionkey"].encode(), value=encode_value(event), headers=())


def s(seconds: float):
    return T0 + timedelta(seconds=seconds)


def test_a_batch_is_applied_in_event_time_across_partitions_but_never_reordered_within_one():
    # A batch holds partition 0's records, then partition 1's. c1's partner stamped its end a second
    # before its field choice (clocks disagree): its own order, the partition's, must stand.
    batch = decode_records([
        record(0, 10, received("c1", s(0))),
        record(0, 11, field_selected("c1", "loneliness", s(4))),
        record(0, 12, ended("c1", s(3))),
        record(1, 20, received("c2", s(1))),
        record(1, 21, field_selected("c2", "suicidal", s(2))),
        record(1, 22, {**received("c3", s(5)), "type": "jp.tsunagu.contact.unknown.v1"}),  # set aside
    ])
    assert len(batch.events) == 5 and len(batch.invalid) == 1
    order = [(e.envelope.subject, e.event_type.short) for e in batch.in_event_time_order()]
    assert order == [("c1", "contact.received"), ("c2", "contact.received"), ("c2", "contact.field_selected"),
                     ("c1", "contact.field_selected"), ("c1", "contact.ended")]


def test_a_batch_from_one_partition_keeps_its_order():
    batch = decode_records([record(0, 1, received("c1", s(2))), record(0, 2, received("c2", s(1)))])
    assert [e.envelope.subject for e in batch.in_event_time_order()] == ["c1", "c2"]
