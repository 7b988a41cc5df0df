"""Synthetic registrations with the 2016 pilot's shape, for the replay and its benchmarks.

The five pilot localities (Hà Nội, Hải Phòng, Đà Nẵng, TP Hồ Chí Minh, Quế Phong district
of Nghệ An), their real commune and district codes (shared/domain, lienthong.reference),
invented Vietnamese names, both sexes, births from 1 January to 27 April 2016, and the mix
the Ministry of Justice reported on 27 April 2016: 88,982 registrations, of which 84,674
first registrations given a PIN and 4,308 not given one (a child of foreign nationality, or a
re-registration). The people are invented; the generator is seeded, so a replay is
repeatable.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from lienthong.calendar.v1 import date_pb2
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import birth_registration_service_pb2 as service
from lienthong.person.v1 import ethnicity_pb2, nationality_pb2, person_name_pb2, sex_pb2
from lienthong.place.v1 import administrative_unit_pb2 as au
from lienthong.place.v1 import place_pb2
from lienthong.reference import CodeLists, Level, Unit


@dataclass(frozen=True)
class PilotFigures:
    """One row of the pilot's published table."""

    as_of: dt.date
    registrations: int
    pins_issued: int
    not_issued: int


# Press releases of the Ministry of Justice, April 2016 (shared/domain/README.md).
PUBLISHED = (
    PilotFigures(dt.date(2016, 3, 31), 69_524, 66_705, 2_819),
    PilotFigures(dt.date(2016, 4, 27), 88_982, 84_674, 4_308),
)
# The pilot localities: provinces, and one district of Nghệ An.
PROVINCES = ("01", "31", "48", "79")
DISTRICTS = ("415",)
FIRST_BIRTH = dt.date(2016, 1, 1)
LAST_BIRTH = dt.date(2016, 4, 27)
# The pilot did not split its "not given" figure; we take three in five as re-registrations.
RE_REGISTRATION_SHARE = 0.6
# Of the first registrations given a PIN, this share has a foreign parent (a district's).
FOREIGN_ELEMENT_SHARE = 0.02

_NAMESPACE = uuid.UUID("5a0c3e2e-8a4f-4c57-b2c0-6e3f9d1a7b24")
_FAMILY = (
    "NGUYỄN", "TRẦN", "LÊ", "PHẠM", "HOÀNG", "HUỲNH", "PHAN", "VŨ", "VÕ", "ĐẶNG", "BÙI", "ĐỖ",
    "HỒ", "NGÔ", "DƯƠNG", "LÝ",
)  # fmt: skip
_MIDDLE = {
    sex_pb2.SEX_MALE: ("VĂN", "HỮU", "ĐỨC", "MINH", "QUANG", "GIA", "THANH", ""),
    sex_pb2.SEX_FEMALE: ("THỊ", "NGỌC", "THU", "MINH", "THANH", "KHÁNH", "BẢO", ""),
}
_GIVEN = {
    sex_pb2.SEX_MALE: ("AN", "BÌNH", "CƯỜNG", "DŨNG", "HÙNG", "KHOA", "LONG", "NAM", "PHÚC",
                       "QUÂN", "SƠN", "TÀI", "TUẤN", "VIỆT"),
    sex_pb2.SEX_FEMALE: ("ANH", "CHI", "DUNG", "HÀ", "HOA", "HƯƠNG", "LAN", "LINH", "MAI",
                         "NGA", "OANH", "THẢO", "TRANG", "VY"),
}  # fmt: skip
_FIRST, _FOREIGN_PARENT, _FOREIGN_CHILD, _RE_REGISTRATION = (
    "first", "foreign-parent", "foreign-child", "re-registration",
)  # fmt: skip
_FOREIGN_COUNTRIES = ("KR", "CN", "JP", "US", "FR", "TW")


@dataclass(frozen=True)
class PilotUnits:
    """The registering units of the pilot localities."""

    communes: tuple[Unit, ...]
    districts: tuple[Unit, ...]
    communes_of: dict[str, tuple[Unit, ...]]

    def all(self) -> tuple[Unit, ...]:
        """Every registering unit, communes first."""
        return self.communes + self.districts


def pilot_units(codes: CodeLists) -> PilotUnits:
    """The communes and districts of the pilot localities, in code order."""

    def in_pilot(unit: Unit) -> bool:
        return unit.province_code in PROVINCES or unit.district_code in DISTRICTS

    units = sorted((u for u in codes.units.values() if in_pilot(u)), key=lambda u: u.code)
    communes = tuple(u for u in units if u.level == Level.COMMUNE)
    with_communes = {u.district_code for u in communes}
    # A district registers with a foreign element; one without communes (an island) has no
    # people's committee of its own in the list and registers nothing here.
    districts = tuple(u for u in units if u.level == Level.DISTRICT and u.code in with_communes)
    communes_of = {
        district.code: tuple(u for u in communes if u.district_code == district.code)
        for district in districts
    }
    return PilotUnits(communes, districts, communes_of)


def pilot_registrations(
    codes: CodeLists, count: int = PUBLISHED[-1].registrations, *, seed: int = 2016
) -> Iterator[service.RegisterBirthRequest]:
    """``count`` RegisterBirth requests in the pilot's proportions, the same for a seed.

    Of every ``PUBLISHED[-1].registrations``, ``pins_issued`` are first registrations of
    Vietnamese children (a few with a foreign element, at a district) and ``not_issued`` are
    re-registrations and foreign children, spread over the whole run.
    """
    units = pilot_units(codes)
    rng = random.Random(seed)  # noqa: S311 - invented people, not secrets
    for index, kind in enumerate(_kinds(count, rng)):
        if kind == _RE_REGISTRATION:
            registration = _re_registration(rng, rng.choice(units.communes), units)
        elif kind == _FOREIGN_CHILD:
            registration = _foreign_child(rng, rng.choice(units.districts), units)
        elif kind == _FOREIGN_PARENT:
            registration = _first(rng, rng.choice(units.districts), units, foreign_parent=True)
        else:
            registration = _first(rng, rng.choice(units.communes), units, foreign_parent=False)
        yield service.RegisterBirthRequest(
            # The mix depends on the count too: the same (seed, count) repeats the same
            # requests, another count makes other ones rather than reusing their ids.
            request_id=str(uuid.uuid5(_NAMESPACE, f"{seed}/{count}/{index}")),
            birth_registration=registration,
        )


def kind_counts(count: int) -> dict[str, int]:
    """How many of ``count`` registrations are of each kind, in the published proportions.

    For the published total, exactly the published figures.
    """
    figures = PUBLISHED[-1]
    not_issued = round(count * figures.not_issued / figures.registrations)
    re_registration = round(not_issued * RE_REGISTRATION_SHARE)
    foreign_parent = round((count - not_issued) * FOREIGN_ELEMENT_SHARE)
    return {
        _RE_REGISTRATION: re_registration,
        _FOREIGN_CHILD: not_issued - re_registration,
        _FOREIGN_PARENT: foreign_parent,
        _FIRST: count - not_issued - foreign_parent,
    }


def _kinds(count: int, rng: random.Random) -> list[str]:
    kinds = [kind for kind, number in kind_counts(count).items() for _ in range(number)]
    rng.shuffle(kinds)
    return kinds


def expected_counts(count: int) -> dict[str, int]:
    """What the statistics of a replay of ``count`` registrations must say."""
    kinds = kind_counts(count)
    return {
        "registrations": count,
        "pins_issued": kinds[_FIRST] + kinds[_FOREIGN_PARENT],
        "not_applicable_foreign": kinds[_FOREIGN_CHILD],
        "not_applicable_re_registration": kinds[_RE_REGISTRATION],
    }


def _first(
    rng: random.Random, unit: Unit, units: PilotUnits, *, foreign_parent: bool
) -> br.BirthRegistration:
    procedure = (
        br.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT
        if foreign_parent
        else br.REGISTRATION_PROCEDURE_FIRST_REGISTRATION
    )
    father_country = rng.choice(_FOREIGN_COUNTRIES) if foreign_parent else "VN"
    return _registration(
        rng, unit, units, procedure=procedure, born=_birth_2016(rng), child_country="VN",
        father_country=father_country,
    )  # fmt: skip


def _foreign_child(rng: random.Random, unit: Unit, units: PilotUnits) -> br.BirthRegistration:
    country = rng.choice(_FOREIGN_COUNTRIES)
    return _registration(
        rng, unit, units, procedure=br.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT,
        born=_birth_2016(rng), child_country=country, father_country=country,
    )  # fmt: skip


def _re_registration(rng: random.Random, unit: Unit, units: PilotUnits) -> br.BirthRegistration:
    born = dt.date(rng.randint(1960, 2015), rng.randint(1, 12), rng.randint(1, 28))
    return _registration(
        rng, unit, units, procedure=br.REGISTRATION_PROCEDURE_RE_REGISTRATION, born=born,
        child_country="VN", father_country="VN",
    )  # fmt: skip


def _birth_2016(rng: random.Random) -> dt.date:
    return FIRST_BIRTH + dt.timedelta(days=rng.randint(0, (LAST_BIRTH - FIRST_BIRTH).days))


def _registration(  # noqa: PLR0913 - what varies between registrations, all needed
    rng: random.Random,
    unit: Unit,
    units: PilotUnits,
    *,
    procedure: br.RegistrationProcedure.ValueType,
    born: dt.date,
    child_country: str,
    father_country: str,
) -> br.BirthRegistration:
    sex = rng.choice((sex_pb2.SEX_MALE, sex_pb2.SEX_FEMALE))
    family = rng.choice(_FAMILY)
    commune = unit if unit.level == Level.COMMUNE else rng.choice(units.communes_of[unit.code])
    residence = place_pb2.Place(
        country_code="VN",
        administrative_unit=au.AdministrativeUnit(
            level=au.ADMINISTRATIVE_LEVEL_COMMUNE, code=commune.code
        ),
    )
    mother_name = _name(rng, sex_pb2.SEX_FEMALE, rng.choice(_FAMILY))
    return br.BirthRegistration(
        procedure=procedure,
        registration_unit=au.AdministrativeUnit(
            level=au.AdministrativeLevel.ValueType(unit.level), code=unit.code
        ),
        child=br.Child(
            name=_name(rng, sex, family),
            sex=sex,
            date_of_birth=date_pb2.Date(year=born.year, month=born.month, day=born.day),
            place_of_birth=br.BirthPlace(facility_name="Trạm y tế", place=residence),
            home_town=place_pb2.Place(
                country_code="VN",
                administrative_unit=au.AdministrativeUnit(
                    level=au.ADMINISTRATIVE_LEVEL_PROVINCE, code=unit.province_code
                ),
            ),
            ethnicity=ethnicity_pb2.Ethnicity(code="01"),
            nationality=nationality_pb2.Nationality(country_code=child_country),
        ),
        father=_parent(
            rng,
            sex=sex_pb2.SEX_MALE,
            family=family,
            child_year=born.year,
            country=father_country,
            residence=residence,
        ),
        mother=br.Parent(
            name=mother_name,
            birth_year=born.year - rng.randint(18, 40),
            ethnicity=ethnicity_pb2.Ethnicity(code="01"),
            nationality=nationality_pb2.Nationality(country_code="VN"),
            residence=residence,
        ),
        declarant=br.Declarant(name=mother_name, relationship="mother"),
    )


def _parent(  # noqa: PLR0913 - the parent's parts
    rng: random.Random,
    *,
    sex: sex_pb2.Sex.ValueType,
    family: str,
    child_year: int,
    country: str,
    residence: place_pb2.Place,
) -> br.Parent:
    return br.Parent(
        name=_name(rng, sex, family) if country == "VN" else _foreign_name(rng),
        birth_year=child_year - rng.randint(20, 45),
        ethnicity=ethnicity_pb2.Ethnicity(code="01"),
        nationality=nationality_pb2.Nationality(country_code=country),
        residence=residence,
    )


def _name(
    rng: random.Random, sex: sex_pb2.Sex.ValueType, family: str
) -> person_name_pb2.PersonName:
    return person_name_pb2.PersonName(
        family_name=family, middle_name=rng.choice(_MIDDLE[sex]), given_name=rng.choice(_GIVEN[sex])
    )


def _foreign_name(rng: random.Random) -> person_name_pb2.PersonName:
    return person_name_pb2.PersonName(
        family_name=rng.choice(("KIM", "PARK", "SMITH", "MARTIN", "TANAKA", "WANG")),
        given_name=rng.choice(("JOHN", "MINJUN", "HIROSHI", "PIERRE", "WEI")),
    )
