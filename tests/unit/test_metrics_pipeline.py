"""The pipelined fold's Python half: a chunk prepared slice by slice (yielding to the loop between
slices) holds exactly the rows of folding its events at once, whatever the slice size, the order or
the repeats; a repeat is claimed once; a record that is not an event is set aside, not folded."""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.metrics import handlers
from services.metrics.domain.facts import fold
from services.metrics.store.facts import fact_rows
from tests.integration.metrics_support import Record, records_of, synthetic_log, validated

RAW = synthetic_log(120, seed=5, span=timedelta(days=2))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), repeats=st.integers(0, 80), slice_records=st.integers(1, 300))
async def test_a_chunk_prepared_in_slices_holds_the_rows_of_folding_it_at_once(seed, repeats, slice_records):
    rnd = random.Random(seed)
    raw = list(RAW) + [rnd.choice(RAW) for _ in range(repeats)]
    rnd.shuffle(raw)
    records = records_of(raw, topic="t")
    records.insert(rnd.randrange(len(records) + 1), Record("t", 0, -1, b"k", b"{not json"))
    original = handlers.SLICE_RECORDS
    handlers.SLICE_RECORDS = slice_records
    try:
        prepared = await handlers.prepare(records)
    finally:
        handlers.SLICE_RECORDS = original
    pairs = [(e.envelope.source, e.envelope.id) for e in prepared.unique]
    assert len(pairs) == len(set(pairs)) == len(RAW)
    assert prepared.rows == fact_rows(fold(validated(raw)))
