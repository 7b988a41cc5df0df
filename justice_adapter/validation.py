"""The checks of a RegisterBirth request (lienthong.civilregistry.v1 contract).

Every field violation of a request is reported at once, with its path from the request
(``birth_registration.child.name.given_name``). A unit that exists but whose level does not
fit the procedure is not a malformed request: it is reported as FAILED_PRECONDITION, and only
once the fields are otherwise valid.
"""

from __future__ import annotations

from lienthong import validation
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import birth_registration_service_pb2 as service
from lienthong.errors import FailedPrecondition
from lienthong.reference import CodeLists, Level
from lienthong.validation import Violations

MAX_FACILITY_NAME = 200
MAX_RELATIONSHIP = 50
PIN_LENGTH = 12

# The level of the registering authority for each procedure (Law on Civil Status 2014).
REQUIRED_LEVEL: dict[int, Level] = {
    br.REGISTRATION_PROCEDURE_FIRST_REGISTRATION: Level.COMMUNE,
    br.REGISTRATION_PROCEDURE_RE_REGISTRATION: Level.COMMUNE,
    br.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT: Level.DISTRICT,
}


def validate_register_birth(request: service.RegisterBirthRequest, codes: CodeLists) -> None:
    """Check a RegisterBirth request; output-only fields are ignored.

    Raises InvalidArgument with every field violation, then FailedPrecondition (reason
    UNIT_LEVEL_MISMATCH) when the registration unit exists at a level that does not fit the
    procedure.
    """
    v = Violations()
    validation.check_request_id(v, "request_id", request.request_id)
    if not request.HasField("birth_registration"):
        v.add("birth_registration", "is required")
        v.raise_if_any()
    registration = request.birth_registration
    path = "birth_registration"
    if registration.procedure not in REQUIRED_LEVEL:
        v.add(f"{path}.procedure", "must be set")
    unit = validation.check_unit(
        v,
        f"{path}.registration_unit",
        registration.registration_unit,
        codes,
        present=registration.HasField("registration_unit"),
    )
    birth_year = _check_child(v, f"{path}.child", registration, codes)
    for role in ("father", "mother"):
        _check_parent(
            v,
            f"{path}.{role}",
            getattr(registration, role),
            codes,
            present=registration.HasField(role),
            child_birth_year=birth_year,
        )
    if registration.HasField("legal_representative"):
        if registration.legal_representative.undetermined:
            v.add(f"{path}.legal_representative.undetermined", "must be false; omit the field")
        _check_parent(
            v,
            f"{path}.legal_representative",
            registration.legal_representative,
            codes,
            present=True,
            child_birth_year=birth_year,
        )
    _check_declarant(v, f"{path}.declarant", registration)
    v.raise_if_any()

    required = REQUIRED_LEVEL[registration.procedure]
    if unit is not None and unit.level is not required:
        raise FailedPrecondition(
            f"{br.RegistrationProcedure.Name(registration.procedure)} is registered by a "
            f"{required.name.lower()}, not a {unit.level.name.lower()}",
            reason="UNIT_LEVEL_MISMATCH",
        )


def _check_child(
    v: Violations, path: str, registration: br.BirthRegistration, codes: CodeLists
) -> int:
    """Check the child; return the year of birth the parents' years are compared with."""
    if not registration.HasField("child"):
        v.add(path, "is required")
        return validation.today().year
    child = registration.child
    validation.check_person_name(v, f"{path}.name", child.name, present=child.HasField("name"))
    validation.check_sex(v, f"{path}.sex", child.sex)
    born = validation.check_birth_date(
        v, f"{path}.date_of_birth", child.date_of_birth, present=child.HasField("date_of_birth")
    )
    _check_place_of_birth(v, f"{path}.place_of_birth", child, codes)
    _check_home_town(v, f"{path}.home_town", child, codes)
    validation.check_ethnicity(
        v, f"{path}.ethnicity", child.ethnicity, codes, present=child.HasField("ethnicity")
    )
    validation.check_nationality(
        v, f"{path}.nationality", child.nationality, codes, present=child.HasField("nationality")
    )
    # Without a usable date of birth the parents are held to the widest range only.
    return born.year if born is not None else validation.today().year


def _check_place_of_birth(v: Violations, path: str, child: br.Child, codes: CodeLists) -> None:
    if not child.HasField("place_of_birth"):
        v.add(path, "is required")
        return
    place_of_birth = child.place_of_birth
    if len(place_of_birth.facility_name) > MAX_FACILITY_NAME:
        v.add(f"{path}.facility_name", f"must be at most {MAX_FACILITY_NAME} characters")
    validation.check_place(
        v, f"{path}.place", place_of_birth.place, codes, present=place_of_birth.HasField("place")
    )


def _check_home_town(v: Violations, path: str, child: br.Child, codes: CodeLists) -> None:
    present = child.HasField("home_town")
    validation.check_place(v, path, child.home_town, codes, present=present)
    country = child.home_town.country_code
    # The contract: a home town is a place in Vietnam (at least its province).
    if present and country in codes.countries and country != validation.VIETNAM:
        v.add(f"{path}.country_code", "must be VN: a home town is a place in Vietnam")


def _check_parent(  # noqa: PLR0913 - one parent's checks need the child's year and presence
    v: Violations,
    path: str,
    parent: br.Parent,
    codes: CodeLists,
    *,
    present: bool,
    child_birth_year: int,
) -> None:
    if not present:
        v.add(path, "is required; set undetermined when the parent is not determined")
        return
    if parent.undetermined:
        for field, _ in parent.ListFields():
            if field.name != "undetermined":
                v.add(f"{path}.{field.name}", "must be empty when the parent is undetermined")
        return
    validation.check_person_name(v, f"{path}.name", parent.name, present=parent.HasField("name"))
    if not parent.birth_year:
        v.add(f"{path}.birth_year", "is required")
    elif not validation.EARLIEST_BIRTH_YEAR <= parent.birth_year <= child_birth_year:
        v.add(
            f"{path}.birth_year",
            f"must be from {validation.EARLIEST_BIRTH_YEAR} to the child's year of birth",
        )
    validation.check_ethnicity(
        v, f"{path}.ethnicity", parent.ethnicity, codes, present=parent.HasField("ethnicity")
    )
    validation.check_nationality(
        v, f"{path}.nationality", parent.nationality, codes, present=parent.HasField("nationality")
    )
    validation.check_place(
        v, f"{path}.residence", parent.residence, codes, present=parent.HasField("residence")
    )
    pin = parent.personal_identification_number
    if pin and not (len(pin) == PIN_LENGTH and pin.isascii() and pin.isdigit()):
        v.add(f"{path}.personal_identification_number", f"must be {PIN_LENGTH} digits")


def _check_declarant(v: Violations, path: str, registration: br.BirthRegistration) -> None:
    if not registration.HasField("declarant"):
        v.add(path, "is required")
        return
    declarant = registration.declarant
    validation.check_person_name(
        v, f"{path}.name", declarant.name, present=declarant.HasField("name")
    )
    relationship = declarant.relationship.strip()
    if not relationship:
        v.add(f"{path}.relationship", "is required")
    elif len(relationship) > MAX_RELATIONSHIP:
        v.add(f"{path}.relationship", f"must be at most {MAX_RELATIONSHIP} characters")
