"""The directory of receivers: an Open Referral HSDS-like document, and the demo one we ship.

A directory file is JSON: organisations, each with contacts and services; a service has a receiver
type, service areas (JIS X 0402 codes, check digit validated; a prefecture's own row, e.g. 130001,
means the whole prefecture) and a weekly schedule. ``generated()`` builds the demo directory for
every municipality of the official list:

- a loneliness/isolation office for every municipality (``muni-<code>``);
- a self-reliance support centre (自立相談支援機関) for every city and ward (``srsc-<code>``);
  towns and villages are covered by their prefecture's centre (``srsc-pref-<nn>``), which is
  also the fallback for cities;
- the prefectural police (``police-<nn>``), covering the whole prefecture.

Contact endpoints are demo ones (``https://demo.invalid/…``, ``.invalid`` never resolves) and
every organisation carries ``"demo": true``.
"""

from __future__ import annotations

from datetime import time
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from schemas.codes import ReceiverType
from schemas.events import Id
from schemas.municipalities import all_municipalities, check_digit_ok, municipality, prefectures

FORMAT_VERSION = 1
DEMO_HOST = "https://demo.invalid"


def _area(code: str) -> str:
    if not check_digit_ok(code):
        raise PydanticCustomError(
            "area_code", "service area must be a 6-digit JIS X 0402 code with a valid check digit"
        )
    if municipality(code) is None:
        raise PydanticCustomError("area_unknown", "service area is not in the official list of municipality codes")
    return code


AreaCode = Annotated[str, AfterValidator(_area)]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactPoint(_Closed):
    kind: Literal["url", "email", "phone"]
    value: str = Field(min_length=1, max_length=300)


class Schedule(_Closed):
    weekdays: Literal["mon-fri", "mon-sun", "sat-sun"] = "mon-fri"
    opens: time
    closes: time


class Service(_Closed):
    id: Id
    name: str = Field(min_length=1, max_length=200)
    receiver_type: ReceiverType
    areas: list[AreaCode] = Field(min_length=1)
    schedules: list[Schedule] = []


class Organization(_Closed):
    id: Id
    name: str = Field(min_length=1, max_length=200)
    receiver_type: ReceiverType
    demo: bool = False
    contacts: list[ContactPoint] = []
    services: list[Service] = Field(min_length=1)


class Directory(_Closed):
    version: Literal[1] = FORMAT_VERSION
    organizations: list[Organization]


_OFFICE_HOURS = [Schedule(weekdays="mon-fri", opens=time(8, 30), closes=time(17, 15))]
_ALWAYS = [Schedule(weekdays="mon-sun", opens=time(0, 0), closes=time(23, 59))]


def _demo_contacts(org_id: str) -> list[ContactPoint]:
    return [
        ContactPoint(kind="url", value=f"{DEMO_HOST}/receivers/{org_id}"),
        ContactPoint(kind="email", value=f"{org_id}@demo.invalid"),
    ]


def _org(org_id: str, name: str, kind: ReceiverType, areas: list[str], schedules: list[Schedule]) -> Organization:
    return Organization(
        id=org_id,
        name=name,
        receiver_type=kind,
        demo=True,
        contacts=_demo_contacts(org_id),
        services=[Service(id=f"{org_id}-svc", name=name, receiver_type=kind, areas=areas, schedules=schedules)],
    )


def is_city_or_ward(city: str) -> bool:
    return city.endswith(("市", "区"))


def generated() -> Directory:
    """The demo directory for every municipality in schemas/data/municipalities.csv (deterministic)."""
    everyone = all_municipalities()
    pref_rows = {m.prefecture_code: m.code for m in everyone if m.is_prefecture}
    towns: dict[str, list[str]] = {p: [] for p in pref_rows}
    orgs: list[Organization] = []
    for m in everyone:
        if m.is_prefecture:
            continue
        orgs.append(_org(f"muni-{m.code}", f"{m.name_ja} 孤独・孤立対策窓口（デモ）", ReceiverType.municipality,
                         [m.code], _OFFICE_HOURS))
        if is_city_or_ward(m.city):
            orgs.append(_org(f"srsc-{m.code}", f"{m.name_ja} 自立相談支援機関（デモ）",
                             ReceiverType.self_reliance_centre, [m.code], _OFFICE_HOURS))
        else:
            towns[m.prefecture_code].append(m.code)
    for pref, name in sorted(prefectures().items()):
        orgs.append(_org(f"srsc-pref-{pref}", f"{name} 自立相談支援機関（町村部・デモ）",
                         ReceiverType.self_reliance_centre, [pref_rows[pref], *towns[pref]], _OFFICE_HOURS))
        police = "警視庁" if pref == "13" else f"{name}警察"
        orgs.append(_org(f"police-{pref}", f"{police}（デモ）", ReceiverType.police, [pref_rows[pref]], _ALWAYS))
    return Directory(organizations=orgs)
