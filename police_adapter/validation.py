"""Checks of what the registry sends to obtain a PIN (Decree 137/2015 Art. 14)."""

from __future__ import annotations

import re

from lienthong.errors import FailedPrecondition
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
    is_vietnamese,
)

_REGISTRATION_NAME = re.compile(r"^birthRegistrations/\d{3,5}-\d{4}-\d{1,9}$")
_PIN = re.compile(r"^\d{12}$")


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
    if not _REGISTRATION_NAME.match(birth.birth_registration):
        v.add(
            f"{path}.birth_registration",
            "must be a registration name such as birthRegistrations/00004-2016-17",
        )
    check_person_name(v, f"{path}.full_name", birth.full_name, present=birth.HasField("full_name"))
    check_birth_date(
        v, f"{path}.date_of_birth", birth.date_of_birth, present=birth.HasField("date_of_birth")
    )
    check_sex(v, f"{path}.sex", birth.sex)
    unit = check_unit(
        v,
        f"{path}.registration_place",
        birth.registration_place,
        codes,
        present=birth.HasField("registration_place"),
        levels=(Level.DISTRICT, Level.COMMUNE),
    )
    check_place(v, f"{path}.home_town", birth.home_town, codes, present=birth.HasField("home_town"))
    check_ethnicity(
        v, f"{path}.ethnicity", birth.ethnicity, codes, present=birth.HasField("ethnicity")
    )
    check_nationality(
        v, f"{path}.nationality", birth.nationality, codes, present=birth.HasField("nationality")
    )
    for role in ("father", "mother"):
        _check_related_person(
            v, f"{path}.{role}", getattr(birth, role), codes, present=birth.HasField(role)
        )
    if birth.HasField("legal_representative"):
        _check_related_person(
            v, f"{path}.legal_representative", birth.legal_representative, codes, present=True
        )
    v.raise_if_any()
    if not is_vietnamese(birth.nationality):
        raise FailedPrecondition(
            "only children of Vietnamese nationality are given a PIN", reason="NOT_VIETNAMESE"
        )
    assert unit is not None  # noqa: S101 - check_unit returned None only with a violation
    return unit


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
