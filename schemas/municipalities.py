"""Japan's local government codes (全国地方公共団体コード, JIS X 0402) and the region types.

The official list ships next to this module (``data/municipalities.csv``). A municipality
code is six digits: two for the prefecture, three for the municipality, one check digit.
Prefecture-level rows of the list (``130001`` 東京都) name a prefecture, not a municipality:
they are accepted as a *region* (→ prefecture) but not as a ``MunicipalityCode``.

Error messages never repeat the input value: they say what is wrong and what would be right.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from schemas.schema_rules import MUNICIPALITY_PATTERN

_WEIGHTS = (6, 5, 4, 3, 2)
_DIGITS = frozenset("0123456789")
_PREFECTURE_CODES = frozenset(f"{n:02d}" for n in range(1, 48))
PREFECTURE_CODES: frozenset[str] = _PREFECTURE_CODES  # "01".."47"


@dataclass(frozen=True)
class Municipality:
    code: str  # six digits with the check digit
    prefecture_code: str  # "01".."47"
    prefecture: str  # 東京都
    city: str  # 千代田区; "" for the prefecture's own row
    prefecture_kana: str
    city_kana: str

    @property
    def name_ja(self) -> str:
        return f"{self.prefecture}{self.city}"

    @property
    def is_prefecture(self) -> bool:
        return not self.city


def _is_digits(code: object, length: int) -> bool:
    return isinstance(code, str) and len(code) == length and _DIGITS.issuperset(code)


def expected_check_digit(first_five: str) -> str:
    s = sum(int(d) * w for d, w in zip(first_five, _WEIGHTS, strict=True))
    return str((11 - s % 11) % 10)


def check_digit_ok(code: str) -> bool:
    """True when ``code`` is six ASCII digits whose last digit is the JIS X 0402 check digit."""
    return _is_digits(code, 6) and expected_check_digit(code[:5]) == code[5]


@cache
def _official() -> dict[str, Municipality]:
    text = resources.files(__package__).joinpath("data/municipalities.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(text.splitlines())
    return {
        r["code"]: Municipality(
            code=r["code"],
            prefecture_code=r["code"][:2],
            prefecture=r["prefecture"],
            city=r["city"],
            prefecture_kana=r["prefecture_kana"],
            city_kana=r["city_kana"],
        )
        for r in rows
    }


@cache
def prefectures() -> dict[str, str]:
    """Prefecture code ("01".."47") → prefecture name (北海道 … 沖縄県)."""
    return {m.prefecture_code: m.prefecture for m in _official().values() if m.is_prefecture}


def all_municipalities() -> list[Municipality]:
    return list(_official().values())


def municipality(code: str) -> Municipality | None:
    """The official entry for a six-digit code (a municipality or a prefecture's own row), or None."""
    return _official().get(code) if isinstance(code, str) else None


def prefecture_of(code: str) -> str:
    """The prefecture code ("13") of a 2-digit prefecture code or a 6-digit municipality code."""
    return split_region(code)[0]


# --- validation ------------------------------------------------------------------------------


def _prefecture_error() -> PydanticCustomError:
    return PydanticCustomError("prefecture_code", "prefecture code must be two digits from 01 to 47")


@cache
def _city_codes() -> frozenset[str]:
    return frozenset(c for c, m in _official().items() if not m.is_prefecture)


def _municipality_error(code: object) -> PydanticCustomError | None:
    """Why ``code`` is not a municipality code, or None when it is one."""
    if isinstance(code, str) and code in _city_codes():  # the hot path: one set lookup
        return None
    if not _is_digits(code, 6):
        return PydanticCustomError(
            "municipality_code",
            "municipality code must be 6 digits (JIS X 0402, including the check digit)",
        )
    assert isinstance(code, str)
    expected = expected_check_digit(code[:5])
    if code[5] != expected:
        return PydanticCustomError(
            "municipality_check_digit",
            "municipality code has a wrong check digit: for these first five digits the sixth must be "
            "{expected} (JIS X 0402)",
            {"expected": expected},
        )
    entry = _official().get(code)
    if entry is None:
        return PydanticCustomError(
            "municipality_unknown", "municipality code is not in the official list of municipality codes"
        )
    if entry.is_prefecture:
        return PydanticCustomError(
            "municipality_is_prefecture",
            "this code names a prefecture, not a municipality: send the 2-digit prefecture code instead",
        )
    return None


def _validate_prefecture(code: str) -> str:
    if isinstance(code, str) and code in _PREFECTURE_CODES:
        return code
    raise _prefecture_error()


def _validate_municipality(code: str) -> str:
    error = _municipality_error(code)
    if error is not None:
        raise error
    return code


def split_region(code: str) -> tuple[str, str | None]:
    """A region code → (prefecture code, municipality code or None).

    "13" → ("13", None); "131016" → ("13", "131016"); the prefecture's own row "130001" →
    ("13", None). Anything else raises ValueError (a pydantic custom error) with a clear message.
    """
    if not isinstance(code, str):
        raise PydanticCustomError("region_code", "region must be a string")
    if code in _city_codes():
        return code[:2], code
    if code in _PREFECTURE_CODES:
        return code, None
    if _is_digits(code, 6):
        entry = _official().get(code)
        if entry is not None and entry.is_prefecture:
            return entry.prefecture_code, None
        return code[:2], _validate_municipality(code)
    raise PydanticCustomError(
        "region_code",
        "region must be a 2-digit prefecture code (01-47) or a 6-digit municipality code (JIS X 0402)",
    )


PrefectureCode = Annotated[
    str,
    AfterValidator(_validate_prefecture),
    Field(pattern=r"^(0[1-9]|[1-3][0-9]|4[0-7])$", description="都道府県コード / prefecture code (01-47)"),
]
MunicipalityCode = Annotated[
    str,
    AfterValidator(_validate_municipality),
    Field(
        # The runtime pattern stays loose so that its messages say what is wrong (check digit, prefecture
        # row, not in the list); the published schema says all a pattern can.
        pattern=r"^[0-9]{6}$",
        json_schema_extra={"pattern": MUNICIPALITY_PATTERN},
        description="市区町村コード（JIS X 0402、検査数字付き6桁）/ municipality code (JIS X 0402, 6 digits "
        "with check digit, in the official list)",
    ),
]
