"""The desk registry: the trial configurations say what the trial facts say; hours read in JST."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import FieldCode
from schemas.timezone import JST
from services.routing.desks import is_open, parse_registry
from services.routing.domain.board import Board
from services.routing.store import read_document

ROOT = Path(__file__).resolve().parents[2]


def trial(n: int):
    return parse_registry(read_document(ROOT / "config" / f"trial{n}.yaml"))


def test_trial1_has_eleven_organisations_covering_the_eight_fields_and_one_loneliness_line():
    t1 = trial(1)
    assert len(t1.organisations) == 11
    assert t1.fields() == {f.value for f in FieldCode}
    assert t1.menu[3] == FieldCode.suicidal and t1.menu[9] == FieldCode.loneliness
    counsellors = next(d for d in t1.desks if d.organisation_id == "counsellors-assoc")
    assert counsellors.lines == 1


def test_trial2_adds_the_social_workers_for_loneliness_and_hardship_and_gives_loneliness_three_lines():
    t1, t2 = trial(1), trial(2)
    assert len(t2.organisations) == 12
    assert {o.id for o in t2.organisations} - {o.id for o in t1.organisations} == {"social-workers-assoc"}
    social = next(d for d in t2.desks if d.organisation_id == "social-workers-assoc")
    assert set(social.fields) == {FieldCode.loneliness, FieldCode.hardship}
    assert next(d for d in t2.desks if d.organisation_id == "counsellors-assoc").lines == 3
    assert t2.menu[1] == FieldCode.under18 and t2.menu[2] == FieldCode.loneliness


def test_the_board_uses_trial2_from_its_effective_date():
    board = Board([trial(2), trial(1)])
    assert board.registry_at(datetime(2022, 7, 7, 10, 0, tzinfo=JST)).version == "trial1"
    assert board.registry_at(datetime(2022, 8, 30, 9, 59, tzinfo=JST)).version == "trial1"
    assert board.registry_at(datetime(2022, 8, 30, 10, 0, tzinfo=JST)).version == "trial2"
    assert board.registry_at(datetime(2022, 7, 1, tzinfo=JST)) is None


def test_opening_hours_are_read_in_tokyo_time_and_run_past_midnight():
    desks = {d.id: d for d in trial(1).desks}
    night = desks["night-suicidal"]
    assert is_open(night, datetime(2022, 7, 7, 23, 0, tzinfo=JST))
    assert is_open(night, datetime(2022, 7, 8, 5, 59, tzinfo=JST))
    assert not is_open(night, datetime(2022, 7, 8, 6, 0, tzinfo=JST))
    assert is_open(night, datetime(2022, 7, 7, 14, 0, tzinfo=UTC))  # 23:00 JST
    assert is_open(desks["prevention-24h"], datetime(2022, 7, 9, 3, 0, tzinfo=JST))


def test_a_desk_closed_on_holidays_is_closed_on_marine_day():
    livelihood = next(d for d in trial(1).desks if d.id == "livelihood-daytime")
    assert is_open(livelihood, datetime(2022, 7, 19, 10, 0, tzinfo=JST))
    assert not is_open(livelihood, datetime(2022, 7, 18, 10, 0, tzinfo=JST))  # 海の日


def test_a_registry_with_an_unknown_field_or_a_repeated_desk_is_refused():
    base = {"version": "x", "effective_from": "2022-07-07T10:00:00+09:00"}
    with pytest.raises(ValidationError):
        parse_registry({**base, "organisations": [{"id": "o", "name": "o", "desks": [
            {"id": "d", "fields": ["astrology"], "lines": 1}]}]})
    with pytest.raises(ValidationError):
        parse_registry({**base, "organisations": [{"id": "o", "name": "o", "desks": [
            {"id": "d", "fields": ["hardship"], "lines": 1}, {"id": "d", "fields": ["hardship"], "lines": 1}]}]})
    with pytest.raises(ValidationError):
        parse_registry({**base, "effective_from": "2022-07-07T10:00:00"})
