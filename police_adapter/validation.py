"""Checks of what the registry sends to obtain a PIN (Decree 137/2015 Art. 14)."""

from __future__ import annotations

import re

from google.protobuf import timestamp_pb2

from lienthong.errors import FailedPrecondition
from lienthong.field_digests import FIELDS, MAX_SALT, MIN_SALT
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2
from lienthong.reference import CodeLists, Level, Unit
from lienthong.validation import (
    Violations,
    check_birth_date,
    check_ethnicity,
    check_nationality,
    check_person_name,
    check_place,
    check_request_id,
    check_sex,
    check_unit,
    describe_paths,
    is_vietnamese,
    today,
)

CITIZEN_NAME = re.compile(r"^citizens/(\d{12})$")
MAX_REASON = 500
_REGISTRATION_NAME = re.compile(r"^birthRegistrations/(\d{3}|\d{5})-(\d{4})-[1-9]\d{0,8}$")
_PIN = re.compile(r"^\d{12}$")
_PROVINCE_CODE = re.compile(r"[0-9]{2}")
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
_MAX_NANOS = 999_999_999


def validate_issue_request(
    request: citizen_service_pb2.IssuePersonalIdentificationNumberRequest, codes: CodeLists
) -> Unit:
    """Raise InvalidArgument listing every bad field, FailedPrecondition for a foreign child.

    Returns the registration unit, whose province gives the PIN's first digits.
    """
    v = Violations()
    check_request_id(v, "request_id", request.request_id)
    if not request.HasField("registered_birth"):
        v.add("registered_birth", "is required")
        v.raise_if_any()
    birth = request.registered_birth
    path = "registered_birth"
    _check_registration_name(v, f"{path}.birth_registration", birth, codes)
    for name in PERSON_FIELDS:
        check_person_field(v, path, birth, name, codes)
    v.raise_if_any()
    if not is_vietnamese(birth.nationality):
        raise FailedPrecondition(
            "only children of Vietnamese nationality are given a PIN", reason="NOT_VIETNAMESE"
        )
    unit = codes.unit(Level(birth.registration_place.level), birth.registration_place.code)
    assert unit is not None  # noqa: S101 - checked above
    return unit


# The fields of a person that RegisteredBirth and Citizen share, checked the same way: the
# ones a reconciliation compares.
PERSON_FIELDS = FIELDS


def check_person_field(
    v: Violations,
    path: str,
    record: citizen_pb2.RegisteredBirth | citizen_pb2.Citizen,
    name: str,
    codes: CodeLists,
) -> None:
    """Check one of PERSON_FIELDS of a registered birth or a citizen record."""
    where = f"{path}.{name}"
    present = name == "sex" or record.HasField(name)  # type: ignore[arg-type]
    value = getattr(record, name)
    if name == "full_name":
        check_person_name(v, where, value, present=present)
    elif name == "date_of_birth":
        check_birth_date(v, where, value, present=present)
    elif name == "sex":
        check_sex(v, where, value)
    elif name == "registration_place":
        check_unit(v, where, value, codes, present=present, levels=(Level.DISTRICT, Level.COMMUNE))
    elif name == "home_town":
        check_place(v, where, value, codes, present=present)
    elif name == "ethnicity":
        check_ethnicity(v, where, value, codes, present=present)
    elif name == "nationality":
        check_nationality(v, where, value, codes, present=present)
    elif name == "legal_representative":
        if present:
            _check_related_person(v, where, value, codes, present=True)
    else:
        _check_related_person(v, where, value, codes, present=present)


def validate_update_request(
    request: citizen_service_pb2.UpdateCitizenRequest, codes: CodeLists
) -> tuple[str, list[str]]:
    """Raise InvalidArgument listing every bad field; return the PIN and the fields to change."""
    v = Violations()
    check_request_id(v, "request_id", request.request_id)
    match = CITIZEN_NAME.match(request.citizen.name)
    if match is None:
        v.add("citizen.name", "must be citizens/ and a 12-digit PIN")
    paths = list(dict.fromkeys(request.update_mask.paths))
    if not paths:
        v.add("update_mask", "must name at least one field")
    for field in paths:
        if field in PERSON_FIELDS:
            check_person_field(v, "citizen", request.citizen, field, codes)
    unknown = [field for field in paths if field not in PERSON_FIELDS]
    if unknown:
        v.add("update_mask.paths", _not_updatable(unknown))
    if not request.reason.strip():
        v.add("reason", "is required: say which decision orders the change")
    elif len(request.reason) > MAX_REASON:
        v.add("reason", f"must be at most {MAX_REASON} characters")
    v.raise_if_any()
    assert match is not None  # noqa: S101 - a violation was raised otherwise
    return match.group(1), paths


def _not_updatable(unknown: list[str]) -> str:
    """One description for every path that names no updatable field."""
    verb = "is not a field" if len(unknown) == 1 else "are not fields"
    return f"{describe_paths(unknown)} {verb} that can be updated"


def _check_registration_name(
    v: Violations, path: str, birth: citizen_pb2.RegisteredBirth, codes: CodeLists
) -> None:
    """The source registration's name, consistent with the unit and the date of birth."""
    match = _REGISTRATION_NAME.match(birth.birth_registration)
    if match is None:
        v.add(path, "must be a registration name such as birthRegistrations/00004-2016-17")
        return
    unit_code, year = match.group(1), int(match.group(2))
    place = birth.registration_place
    known = any(codes.unit(level, place.code) for level in (Level.DISTRICT, Level.COMMUNE))
    if known and unit_code != place.code:  # an unknown place is its own error
        v.add(path, "must name the unit of registration_place, which registered the birth")
    elif year < birth.date_of_birth.year <= today().year:  # a future date is its own error
        v.add(path, "is registered in a year before the child's year of birth")


def _check_related_person(
    v: Violations,
    path: str,
    person: citizen_pb2.RelatedPerson,
    codes: CodeLists,
    *,
    present: bool,
) -> None:
    if not present:
        v.add(path, "is required; set undetermined when the person is not determined")
        return
    if person.undetermined:
        if (
            person.HasField("full_name")
            or person.HasField("nationality")
            or person.personal_identification_number
        ):
            v.add(path, "must have no other field when undetermined")
        return
    check_person_name(
        v, f"{path}.full_name", person.full_name, present=person.HasField("full_name")
    )
    check_nationality(
        v, f"{path}.nationality", person.nationality, codes, present=person.HasField("nationality")
    )
    pin = person.personal_identification_number
    if pin and not _PIN.match(pin):
        v.add(f"{path}.personal_identification_number", "must be 12 digits")


def validate_digests_request(
    request: citizen_service_pb2.ListCitizenDigestsRequest, codes: CodeLists
) -> str:
    """Raise InvalidArgument listing every bad field; return the PIN's 3-digit province code."""
    v = Violations()
    province = None
    if not request.province_code:
        v.add("province_code", "is required")
    elif not _PROVINCE_CODE.fullmatch(request.province_code):
        v.add("province_code", "must be a 2-digit province code")
    else:
        unit = codes.unit(Level.PROVINCE, request.province_code)
        if unit is None:
            v.add("province_code", "is not a province in the statistics office's unit list")
        else:
            province = codes.pin_province_code(unit)
    if not MIN_SALT <= len(request.salt) <= MAX_SALT:
        v.add("salt", f"must be {MIN_SALT} to {MAX_SALT} bytes")
    if request.HasField("create_time_from") and not _valid_timestamp(request.create_time_from):
        v.add("create_time_from", "must be a valid timestamp, 0001-01-01 to 9999-12-31")
    v.raise_if_any()
    assert province is not None  # noqa: S101 - a violation was raised otherwise
    return province


def _valid_timestamp(value: timestamp_pb2.Timestamp) -> bool:
    return _MIN_SECONDS <= value.seconds <= _MAX_SECONDS and 0 <= value.nanos <= _MAX_NANOS
