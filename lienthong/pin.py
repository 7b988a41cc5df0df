"""The personal identification number (PIN): 12 digits ``PPP G YY RRRRRR``.

Decree 137/2015/NĐ-CP Art. 13 and Circular 07/2016/TT-BCA Art. 7: PPP is the code of the
province where the birth was registered, G the century and sex, YY the last two digits of the
year of birth and RRRRRR six random digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lienthong.person.v1 import sex_pb2

FIRST_CENTURY = 1900
LAST_CENTURY_END = 2399
RANDOM_SPACE = 1_000_000
_PIN = re.compile(r"^\d{12}$")


@dataclass(frozen=True, slots=True)
class PinParts:
    """A PIN split into what it encodes."""

    province_code: str
    sex: int
    birth_year: int
    serial: str


def century_sex_digit(birth_year: int, sex: int) -> int:
    """G: 0/1 for 1900-1999 male/female, 2/3 for 2000-2099, ... 8/9 for 2300-2399."""
    if not FIRST_CENTURY <= birth_year <= LAST_CENTURY_END:
        raise ValueError(f"year {birth_year} outside 1900-2399")
    if sex not in (sex_pb2.SEX_MALE, sex_pb2.SEX_FEMALE):
        raise ValueError("sex must be male or female")
    century = (birth_year - FIRST_CENTURY) // 100
    return century * 2 + (1 if sex == sex_pb2.SEX_FEMALE else 0)


def prefix(province_code: str, birth_year: int, sex: int) -> str:
    """The six digits PPP G YY that the data fixes; six random digits follow."""
    if len(province_code) != 3 or not province_code.isdigit():  # noqa: PLR2004
        raise ValueError("province code must be 3 digits")
    return f"{province_code}{century_sex_digit(birth_year, sex)}{birth_year % 100:02d}"


def parse(pin: str) -> PinParts:
    """Split a PIN; raises ValueError when it is not 12 digits."""
    if not _PIN.match(pin):
        raise ValueError("a PIN is 12 digits")
    digit = int(pin[3])
    year = FIRST_CENTURY + 100 * (digit // 2) + int(pin[4:6])
    sex = sex_pb2.SEX_FEMALE if digit % 2 else sex_pb2.SEX_MALE
    return PinParts(pin[:3], sex, year, pin[6:])
