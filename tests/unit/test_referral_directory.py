"""The directory we ship: every municipality has someone to receive its referrals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.codes import ReceiverType
from schemas.municipalities import all_municipalities, check_digit_ok
from services.referral.directory import Directory, generated, is_city_or_ward
from services.referral.domain import Receiver, prefecture_row, receiver_chain

DIRECTORY = generated()
AREAS: dict[str, list[Receiver]] = {}
for _org in DIRECTORY.organizations:
    for _svc in _org.services:
        for _area in _svc.areas:
            AREAS.setdefault(_area, []).append(Receiver(_org.id, _svc.receiver_type, _area))
CITIES = [m for m in all_municipalities() if not m.is_prefecture]


def found(code: str) -> list[Receiver]:
    return AREAS.get(code, []) + AREAS.get(prefecture_row(code), [])


def test_every_municipality_has_its_own_office_and_a_self_reliance_centre_and_the_police():
    assert len(CITIES) == 1741
    for m in CITIES:
        chain = receiver_chain(m.code, None, False, found(m.code))
        assert chain[0].id == f"muni-{m.code}"
        assert chain[1].type is ReceiverType.self_reliance_centre
        assert chain[-1].id == "secretariat"
        assert receiver_chain(m.code, None, True, found(m.code))[0].id == f"police-{m.prefecture_code}"


def test_cities_and_wards_have_their_own_centre_and_towns_share_the_prefectures():
    chiyoda = receiver_chain("131016", ReceiverType.self_reliance_centre, False, found("131016"))
    assert [r.id for r in chiyoda] == ["srsc-131016", "srsc-pref-13", "secretariat"]
    mizuho = receiver_chain("133035", ReceiverType.self_reliance_centre, False, found("133035"))
    assert [r.id for r in mizuho] == ["srsc-pref-13", "secretariat"]
    assert sum(1 for m in CITIES if is_city_or_ward(m.city)) == 815


def test_the_demo_directory_is_clearly_marked_and_its_areas_are_valid_codes():
    assert {o.receiver_type for o in DIRECTORY.organizations} == {
        ReceiverType.municipality, ReceiverType.self_reliance_centre, ReceiverType.police}
    for org in DIRECTORY.organizations:
        assert org.demo and "デモ" in org.name
        assert all(".invalid" in c.value for c in org.contacts)
        assert all(check_digit_ok(a) for s in org.services for a in s.areas)
    assert len({o.id for o in DIRECTORY.organizations}) == len(DIRECTORY.organizations) == 2650


def test_a_directory_file_round_trips_and_one_with_a_wrong_check_digit_is_refused():
    text = DIRECTORY.model_dump_json()
    assert Directory.model_validate_json(text) == DIRECTORY
    bad = text.replace('"131016"', '"131017"', 1)
    with pytest.raises(ValidationError, match="check digit"):
        Directory.model_validate_json(bad)
