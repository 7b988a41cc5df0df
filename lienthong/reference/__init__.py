"""The official code lists, loaded from the CSV files beside this module.

- ``administrative_units_2016.csv``: the General Statistics Office administrative units as
  they stood through 2016 (63 provinces, 713 districts, 11,162 communes).
- ``ethnicities.csv``: the statistics office's 2008 list of 54 ethnic groups (Decision
  1019/QĐ-TCTK).
- ``pin_province_codes.csv``: the Ministry of Public Security's 3-digit province codes of
  the PIN (Circular 07/2016/TT-BCA).

Countries come from ISO 3166-1 through pycountry. Nothing is read at import time:
``code_lists()`` loads once, on first use.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources

import pycountry


class Level(IntEnum):
    """Administrative level; the values equal lienthong.place.v1.AdministrativeLevel."""

    PROVINCE = 1
    DISTRICT = 2
    COMMUNE = 3


CODE_LENGTH = {Level.PROVINCE: 2, Level.DISTRICT: 3, Level.COMMUNE: 5}


@dataclass(frozen=True, slots=True)
class Unit:
    """One administrative unit with the codes of the units it lies in."""

    code: str
    level: Level
    name: str
    province_code: str
    district_code: str | None


@dataclass(frozen=True)
class CodeLists:
    """Every code list the contracts refer to, indexed for validation."""

    units: dict[tuple[Level, str], Unit]
    ethnicities: dict[str, str]
    pin_province_codes: dict[str, str]
    countries: frozenset[str]

    def unit(self, level: Level, code: str) -> Unit | None:
        """The unit of this level and code, or None when the code list has none."""
        return self.units.get((level, code))

    def pin_province_code(self, unit: Unit) -> str:
        """The PIN's 3-digit province code of the province the unit lies in."""
        return self.pin_province_codes[unit.province_code]


def _read_csv(name: str) -> list[dict[str, str]]:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@functools.cache
def code_lists() -> CodeLists:
    """Load the code lists once per process."""
    units: dict[tuple[Level, str], Unit] = {}
    for row in _read_csv("administrative_units_2016.csv"):
        province, district = row["province_code"], row["district_code"]
        units[(Level.PROVINCE, province)] = Unit(
            province, Level.PROVINCE, row["province_name"], province, None
        )
        units[(Level.DISTRICT, district)] = Unit(
            district, Level.DISTRICT, row["district_name"], province, district
        )
        commune = row["commune_code"]
        if not commune:
            continue  # island districts (Bạch Long Vĩ, Cồn Cỏ, Hoàng Sa, Côn Đảo) have none
        units[(Level.COMMUNE, commune)] = Unit(
            commune, Level.COMMUNE, row["commune_name"], province, district
        )
    ethnicities = {row["code"]: row["name"] for row in _read_csv("ethnicities.csv")}
    pin_codes = {
        row["gso_province_code"]: row["pin_code"] for row in _read_csv("pin_province_codes.csv")
    }
    countries = frozenset(country.alpha_2 for country in pycountry.countries)
    return CodeLists(units, ethnicities, pin_codes, countries)
