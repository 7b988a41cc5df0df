"""Validation of the value types both ministries exchange, against the official code lists.

The value types are those of lienthong.person.v1, lienthong.place.v1 and lienthong.calendar.v1.
Each ``check_*`` function adds field violations to a ``Violations`` collector and never
raises, so that one answer lists every problem of a request.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import uuid
from zoneinfo import ZoneInfo

from lienthong.calendar.v1 import date_pb2
from lienthong.errors import FieldViolation, InvalidArgument
from lienthong.person.v1 import ethnicity_pb2, nationality_pb2, person_name_pb2, sex_pb2
from lienthong.place.v1 import administrative_unit_pb2, place_pb2
from lienthong.reference import CODE_LENGTH, CodeLists, Level, Unit

VIETNAM = "VN"
VIETNAM_TIME = ZoneInfo("Asia/Ho_Chi_Minh")
EARLIEST_BIRTH_YEAR = 1900
MAX_NAME_PART = 50
MAX_DETAIL = 200
MAX_SHOWN_PATH = 64  # a field path longer than this is not quoted back
# Words of letters of any script (with their combining marks), joined by one space, apostrophe
# or hyphen; the characters themselves are checked by Unicode category.
_NAME_PART = re.compile(r"^[^ '\-]+(?:[ '\-][^ '\-]+)*$")
_NAME_SEPARATORS = frozenset(" '-")


def today() -> dt.date:
    """Today's date in Vietnam, where every registration is dated."""
    return dt.datetime.now(VIETNAM_TIME).date()


class Violations:
    """Collects field violations and raises them together."""

    def __init__(self) -> None:
        """Start with none."""
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Record that ``field`` is invalid and why."""
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        """Raise InvalidArgument with every violation recorded, if there is one."""
        if self.items:
            raise InvalidArgument(list(self.items))


def check_request_id(v: Violations, path: str, value: str) -> None:
    """A request_id must be a UUID in its canonical text form."""
    try:
        canonical = str(uuid.UUID(value)) == value.lower()
    except ValueError:
        canonical = False
    if not canonical:
        v.add(path, "must be a UUID such as 123e4567-e89b-12d3-a456-426614174000")


def describe_paths(paths: list[str]) -> str:
    """The first of ``paths`` (quoted only when short) and how many more, for a violation.

    An answer must stay small (gRPC refuses trailers over 16 KiB, which would turn
    INVALID_ARGUMENT into RESOURCE_EXHAUSTED) and must not echo at length what was sent.
    """
    first = paths[0]
    shown = repr(first) if len(first) <= MAX_SHOWN_PATH else f"a path of {len(first)} characters"
    return shown if len(paths) == 1 else f"{shown} and {len(paths) - 1} more"


def normalise_name_part(value: str) -> str:
    """The form names are stored and compared in: NFC, upper case, single spaces."""
    return " ".join(unicodedata.normalize("NFC", value).upper().split())


def _is_name_character(character: str) -> bool:
    # Letters (L*) and combining marks (M*); digits of any kind (N*) are refused.
    return character in _NAME_SEPARATORS or unicodedata.category(character)[0] in "LM"


def _check_name_part(v: Violations, path: str, value: str, *, required: bool) -> None:
    if any(unicodedata.category(character) == "Cc" for character in value):
        v.add(path, "must not contain control characters such as line breaks")
        return
    text = normalise_name_part(value)
    if not text:
        if required:
            v.add(path, "is required")
        return
    if len(text) > MAX_NAME_PART:
        v.add(path, f"must be at most {MAX_NAME_PART} characters")
    elif not _NAME_PART.match(text) or not all(_is_name_character(c) for c in text):
        v.add(path, "may contain only letters, spaces, apostrophes and hyphens")


def check_person_name(
    v: Violations, path: str, name: person_name_pb2.PersonName, *, present: bool
) -> None:
    """A full name: family and given name required, middle name optional, letters only."""
    if not present:
        v.add(path, "is required")
        return
    _check_name_part(v, f"{path}.family_name", name.family_name, required=True)
    _check_name_part(v, f"{path}.middle_name", name.middle_name, required=False)
    _check_name_part(v, f"{path}.given_name", name.given_name, required=True)


def check_sex(v: Violations, path: str, sex: int) -> None:
    """Sex must be male or female."""
    if sex not in (sex_pb2.SEX_MALE, sex_pb2.SEX_FEMALE):
        v.add(path, "must be SEX_MALE or SEX_FEMALE")


def check_birth_date(
    v: Violations, path: str, date: date_pb2.Date, *, present: bool
) -> dt.date | None:
    """A complete date of birth, from 1900 on and not in the future."""
    if not present:
        v.add(path, "is required")
        return None
    try:
        value = dt.date(date.year, date.month, date.day)
    except ValueError:
        v.add(path, "must be a complete, existing calendar date")
        return None
    if value.year < EARLIEST_BIRTH_YEAR:
        v.add(path, f"must not be before {EARLIEST_BIRTH_YEAR}")
    elif value > today():
        v.add(path, "must not be in the future")
    return value


def check_unit(  # noqa: PLR0913 - keyword-only options of one check
    v: Violations,
    path: str,
    unit: administrative_unit_pb2.AdministrativeUnit,
    codes: CodeLists,
    *,
    present: bool,
    levels: tuple[Level, ...] = tuple(Level),
) -> Unit | None:
    """An administrative unit that exists in the statistics office's list at an allowed level."""
    if not present:
        v.add(path, "is required")
        return None
    try:
        level = Level(unit.level)
    except ValueError:
        v.add(f"{path}.level", "must be set")
        return None
    if len(unit.code) != CODE_LENGTH[level] or not unit.code.isascii() or not unit.code.isdigit():
        v.add(f"{path}.code", f"must be {CODE_LENGTH[level]} digits for {level.name.lower()}")
        return None
    found = codes.unit(level, unit.code)
    if found is None:
        v.add(f"{path}.code", "is not in the statistics office's administrative unit list")
        return None
    if level not in levels:
        allowed = " or ".join(allowed.name.lower() for allowed in levels)
        v.add(f"{path}.level", f"must be {allowed}")
        return None
    return found


def check_country(v: Violations, path: str, code: str, codes: CodeLists) -> None:
    """An ISO 3166-1 alpha-2 country code."""
    if code not in codes.countries:
        v.add(path, "must be an ISO 3166-1 alpha-2 country code such as VN")


def check_place(
    v: Violations, path: str, place: place_pb2.Place, codes: CodeLists, *, present: bool
) -> None:
    """A place in Vietnam with its unit, or abroad with a country and a detail line."""
    if not present:
        v.add(path, "is required")
        return
    check_country(v, f"{path}.country_code", place.country_code, codes)
    if len(place.detail) > MAX_DETAIL:
        v.add(f"{path}.detail", f"must be at most {MAX_DETAIL} characters")
    if place.country_code == VIETNAM:
        check_unit(
            v,
            f"{path}.administrative_unit",
            place.administrative_unit,
            codes,
            present=place.HasField("administrative_unit"),
        )
    elif place.HasField("administrative_unit"):
        v.add(f"{path}.administrative_unit", "must be empty for a place abroad")
    elif place.country_code and not place.detail.strip():
        v.add(f"{path}.detail", "must name the city for a place abroad")


def check_ethnicity(
    v: Violations, path: str, ethnicity: ethnicity_pb2.Ethnicity, codes: CodeLists, *, present: bool
) -> None:
    """An ethnic group of the statistics office's 2008 list."""
    if not present:
        v.add(path, "is required")
    elif ethnicity.code not in codes.ethnicities:
        v.add(f"{path}.code", "must be a statistics office ethnicity code, 01 to 54")


def check_nationality(
    v: Violations,
    path: str,
    nationality: nationality_pb2.Nationality,
    codes: CodeLists,
    *,
    present: bool,
) -> None:
    """A country code, or stateless with none."""
    if not present:
        v.add(path, "is required")
    elif nationality.stateless:
        if nationality.country_code:
            v.add(f"{path}.country_code", "must be empty for a stateless person")
    else:
        check_country(v, f"{path}.country_code", nationality.country_code, codes)


def is_vietnamese(nationality: nationality_pb2.Nationality) -> bool:
    """Whether the nationality is Vietnamese."""
    return not nationality.stateless and nationality.country_code == VIETNAM
