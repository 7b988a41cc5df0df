"""A few births of different kinds, registered through the real path, and their table.

`lienthong run` and `lienthong demo` use it to show the stack working; the end-to-end tests
use the same samples. The people are invented.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from certs.pki import issue_officer_certificate, load_pki
from lienthong import metadata, pin, validation
from lienthong.calendar.v1 import date_pb2
from lienthong.civilregistry.v1 import (
    birth_registration_pb2,
    birth_registration_service_pb2,
    birth_registration_service_pb2_grpc,
    officer_pb2,
    officer_service_pb2,
    officer_service_pb2_grpc,
)
from lienthong.gateway.v1 import audit_service_pb2, audit_service_pb2_grpc
from lienthong.person.v1 import ethnicity_pb2, nationality_pb2, person_name_pb2, sex_pb2
from lienthong.place.v1 import administrative_unit_pb2, place_pb2
from lienthong.reference import CODE_LENGTH, CodeLists, Level, Unit
from lienthong.tls import TlsFiles, secure_channel

FIRST = birth_registration_pb2.REGISTRATION_PROCEDURE_FIRST_REGISTRATION
FOREIGN = birth_registration_pb2.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT
RE_REGISTRATION = birth_registration_pb2.REGISTRATION_PROCEDURE_RE_REGISTRATION
COMMUNE = administrative_unit_pb2.ADMINISTRATIVE_LEVEL_COMMUNE
DISTRICT = administrative_unit_pb2.ADMINISTRATIVE_LEVEL_DISTRICT
# Request ids of the demo's account creations: the same on every run.
_DEMO_NAMESPACE = uuid.UUID("3d0d5f3c-2a4e-4f57-9d0b-8a1c6e2b7f41")


@dataclass(frozen=True)
class Sample:
    """What varies between the sample births."""

    label: str
    procedure: birth_registration_pb2.RegistrationProcedure.ValueType
    unit_level: administrative_unit_pb2.AdministrativeLevel.ValueType
    unit_code: str
    sex: sex_pb2.Sex.ValueType
    born: tuple[int, int, int]
    nationality: str
    father_nationality: str = "VN"
    mother_nationality: str = "VN"


SAMPLES = (
    Sample(
        "first registration, girl, Hà Nội",
        FIRST, COMMUNE, "00004", sex_pb2.SEX_FEMALE, (2016, 3, 14), "VN",
    ),
    Sample(
        "first registration, boy, TP HCM",
        FIRST, COMMUNE, "26734", sex_pb2.SEX_MALE, (2016, 2, 2), "VN",
    ),
    Sample(
        "late first registration, woman born 1999, Hải Phòng",
        FIRST, COMMUNE, "11299", sex_pb2.SEX_FEMALE, (1999, 11, 30), "VN",
    ),
    Sample(
        "foreign element, Vietnamese boy, Đà Nẵng",
        FOREIGN, DISTRICT, "492", sex_pb2.SEX_MALE, (2016, 4, 1), "VN",
        father_nationality="US",
    ),
    Sample(
        "foreign element, Korean girl, Đà Nẵng",
        FOREIGN, DISTRICT, "492", sex_pb2.SEX_FEMALE, (2016, 4, 5), "KR",
        father_nationality="KR", mother_nationality="KR",
    ),
    Sample(
        "re-registration, man born 1998, Quế Phong",
        RE_REGISTRATION, COMMUNE, "16738", sex_pb2.SEX_MALE, (1998, 6, 20), "VN",
    ),
)  # fmt: skip


def _name(family: str, middle: str, given: str) -> person_name_pb2.PersonName:
    return person_name_pb2.PersonName(family_name=family, middle_name=middle, given_name=given)


def _place_in(
    unit_code: str, level: administrative_unit_pb2.AdministrativeLevel.ValueType
) -> place_pb2.Place:
    return place_pb2.Place(
        country_code="VN",
        administrative_unit=administrative_unit_pb2.AdministrativeUnit(level=level, code=unit_code),
    )


def _parent(
    name: person_name_pb2.PersonName, year: int, country: str, unit: str
) -> birth_registration_pb2.Parent:
    residence = (
        _place_in(unit, COMMUNE)
        if country == "VN"
        else place_pb2.Place(country_code=country, detail="Seoul" if country == "KR" else "Boston")
    )
    return birth_registration_pb2.Parent(
        name=name,
        birth_year=year,
        ethnicity=ethnicity_pb2.Ethnicity(code="01"),
        nationality=nationality_pb2.Nationality(country_code=country),
        residence=residence,
    )


def sample_request(
    sample: Sample, codes: CodeLists
) -> birth_registration_service_pb2.RegisterBirthRequest:
    """A complete RegisterBirthRequest for ``sample``, with a fresh request_id."""
    level = Level(sample.unit_level)
    unit = codes.unit(level, sample.unit_code)
    if unit is None:
        raise ValueError(f"no unit {sample.unit_code}")
    commune = (
        sample.unit_code if level == Level.COMMUNE else _first_commune(codes, sample.unit_code)
    )
    year, month, day = sample.born
    child = birth_registration_pb2.Child(
        name=_name("NGUYỄN", "THỊ" if sample.sex == sex_pb2.SEX_FEMALE else "VĂN", "AN"),
        sex=sample.sex,
        date_of_birth=date_pb2.Date(year=year, month=month, day=day),
        place_of_birth=birth_registration_pb2.BirthPlace(
            facility_name="Bệnh viện Phụ sản", place=_place_in(commune, COMMUNE)
        ),
        home_town=_place_in(
            unit.province_code, administrative_unit_pb2.ADMINISTRATIVE_LEVEL_PROVINCE
        ),
        ethnicity=ethnicity_pb2.Ethnicity(code="01"),
        nationality=nationality_pb2.Nationality(country_code=sample.nationality),
    )
    registration = birth_registration_pb2.BirthRegistration(
        procedure=sample.procedure,
        registration_unit=administrative_unit_pb2.AdministrativeUnit(
            level=sample.unit_level, code=sample.unit_code
        ),
        child=child,
        father=_parent(
            _name("NGUYỄN", "VĂN", "BÌNH"), year - 30, sample.father_nationality, commune
        ),
        mother=_parent(_name("TRẦN", "THỊ", "CÚC"), year - 27, sample.mother_nationality, commune),
        declarant=birth_registration_pb2.Declarant(
            name=_name("TRẦN", "THỊ", "CÚC"), relationship="mother"
        ),
    )
    return birth_registration_service_pb2.RegisterBirthRequest(
        request_id=str(uuid.uuid4()), birth_registration=registration
    )


def _first_commune(codes: CodeLists, district_code: str) -> str:
    return min(
        unit.code
        for (level, _), unit in codes.units.items()
        if level == Level.COMMUNE and unit.district_code == district_code
    )


def register_samples(
    gateway: str, administrator: TlsFiles, pki_directory: Path, codes: CodeLists
) -> list[birth_registration_pb2.BirthRegistration]:
    """Register every sample through the gateway, each by an officer of its unit.

    The administrator (``administrator``'s certificate) creates one officer account per
    sample unit; the development PKI in ``pki_directory`` issues each officer a certificate
    of their own, with which they register. Repeating it reuses the accounts.
    """
    pki = load_pki(pki_directory)
    with secure_channel(gateway, administrator.read()) as channel:
        officers = enrol_officers(channel, codes)
    results = []
    for sample in SAMPLES:
        paths = issue_officer_certificate(pki, officers[sample.unit_code])
        tls = TlsFiles(administrator.ca_certificate, paths.certificate, paths.private_key)
        with secure_channel(gateway, tls.read()) as channel:
            results.append(register(channel, sample_request(sample, codes)))
    return results


def enrol_officers(channel: grpc.Channel, codes: CodeLists) -> dict[str, str]:
    """Create (once) an officer account for each sample unit; officer ids by unit code."""
    officers = {}
    for unit_code, level in sorted({(s.unit_code, s.unit_level) for s in SAMPLES}):
        unit = codes.unit(Level(level), unit_code)
        if unit is None:
            raise ValueError(f"no unit {unit_code}")
        officers[unit_code] = create_officer(channel, f"demo-{unit_code}", unit)
    return officers


def create_officer(channel: grpc.Channel, officer_id: str, unit: Unit) -> str:
    """Create (once) the account ``officer_id``: a commune or district officer of ``unit``.

    The request id is derived from the officer id, so that creating it again gets the first
    answer. Returns ``officer_id``.
    """
    role = (
        officer_pb2.OFFICER_ROLE_COMMUNE_OFFICER
        if unit.level == Level.COMMUNE
        else officer_pb2.OFFICER_ROLE_DISTRICT_OFFICER
    )
    request = officer_service_pb2.CreateOfficerRequest(
        request_id=str(uuid.uuid5(_DEMO_NAMESPACE, officer_id)),
        officer_id=officer_id,
        officer=officer_pb2.Officer(
            display_name=_name("LÊ", "VĂN", "HỘ"),
            unit=administrative_unit_pb2.AdministrativeUnit(
                level=administrative_unit_pb2.AdministrativeLevel.ValueType(unit.level),
                code=unit.code,
            ),
            role=role,
        ),
    )
    officer_service_pb2_grpc.OfficerServiceStub(channel).CreateOfficer(
        request,
        timeout=10,
        metadata=(
            (metadata.REQUEST_ID, request.request_id),
            (metadata.PURPOSE, "account-management"),
        ),
    )
    return officer_id


def register(
    channel: grpc.Channel, request: birth_registration_service_pb2.RegisterBirthRequest
) -> birth_registration_pb2.BirthRegistration:
    """RegisterBirth through ``channel``, as the officer whose certificate it carries."""
    stub = birth_registration_service_pb2_grpc.BirthRegistrationServiceStub(channel)
    response = stub.RegisterBirth(
        request,
        timeout=10,
        metadata=(
            (metadata.REQUEST_ID, request.request_id),
            (metadata.PURPOSE, "birth-registration"),
        ),
    )
    return response.birth_registration


def latest_checkpoint(channel: grpc.Channel) -> str:
    """The audit log's latest signed checkpoint, asked of the gateway's AuditService."""
    stub = audit_service_pb2_grpc.AuditServiceStub(channel)
    response = stub.GetLatestCheckpoint(
        audit_service_pb2.GetLatestCheckpointRequest(),
        timeout=10,
        metadata=((metadata.PURPOSE, "audit"),),
    )
    return response.checkpoint.signed_note


def pin_matches(registration: birth_registration_pb2.BirthRegistration, codes: CodeLists) -> bool:
    """Whether the PIN encodes the registration's province, the child's sex, century and year."""
    try:
        parts = pin.parse(registration.personal_identification_number)
    except ValueError:
        return False
    unit = codes.unit(
        Level(registration.registration_unit.level), registration.registration_unit.code
    )
    child = registration.child
    return (
        unit is not None
        and parts.province_code == codes.pin_province_code(unit)
        and parts.sex == child.sex
        and parts.birth_year == child.date_of_birth.year
    )


def format_table(
    registrations: list[birth_registration_pb2.BirthRegistration], codes: CodeLists
) -> str:
    """The registrations as a text table: no names, only what the PIN is computed from."""
    header = (
        "registration",
        "procedure",
        "province",
        "sex",
        "born",
        "nationality",
        "PIN status",
        "PIN",
        "PIN matches data",
    )
    rows = [header]
    for registration in registrations:
        unit = codes.unit(
            Level(registration.registration_unit.level), registration.registration_unit.code
        )
        child = registration.child
        has_pin = bool(registration.personal_identification_number)
        procedure = birth_registration_pb2.RegistrationProcedure.Name(registration.procedure)
        province = codes.unit(Level.PROVINCE, unit.province_code) if unit else None
        rows.append((
            registration.name.removeprefix("birthRegistrations/"),
            procedure.removeprefix("REGISTRATION_PROCEDURE_").lower(),
            f"{province.code} {province.name}" if province else "?",
            sex_pb2.Sex.Name(child.sex).removeprefix("SEX_").lower(),
            str(child.date_of_birth.year),
            child.nationality.country_code or "stateless",
            birth_registration_pb2.PinStatus.Name(registration.pin_status).removeprefix("PIN_STATUS_").lower(),
            registration.personal_identification_number or "-",
            ("yes" if pin_matches(registration, codes) else "NO") if has_pin else "-",
        ))  # fmt: skip
    return columns(rows)


def statistics_of(
    channel: grpc.Channel, unit_codes: Sequence[str] = ()
) -> birth_registration_service_pb2.GetRegistrationStatisticsResponse:
    """Today's statistics of ``unit_codes`` (every province in reach when empty)."""
    day = validation.today()
    date = date_pb2.Date(year=day.year, month=day.month, day=day.day)
    stub = birth_registration_service_pb2_grpc.BirthRegistrationServiceStub(channel)
    return stub.GetRegistrationStatistics(
        birth_registration_service_pb2.GetRegistrationStatisticsRequest(
            unit_codes=unit_codes, registered_from=date, registered_to=date
        ),
        timeout=30,
        metadata=((metadata.PURPOSE, "civil-status-supervision"),),
    )


def statistics_table(
    response: birth_registration_service_pb2.GetRegistrationStatisticsResponse, codes: CodeLists
) -> str:
    """Statistics as the pilot reported them: a row per locality, then the total."""
    header = (
        "locality", "registrations", "PIN issued", "no PIN: foreign", "no PIN: re-registration",
        "PIN pending", "officer accounts", "units",
    )  # fmt: skip
    rows = [
        (
            locality_name(codes, row.unit_code) if row.unit_code else "total",
            str(row.registrations), str(row.pins_issued), str(row.not_applicable_foreign),
            str(row.not_applicable_re_registration), str(row.pins_pending),
            str(row.officer_accounts), str(row.units),
        )
        for row in [*response.rows, response.total]
    ]  # fmt: skip
    return columns([header, *rows])


def locality_name(codes: CodeLists, unit_code: str) -> str:
    """A statistics office code of any level and its unit's name, "01 Thành phố Hà Nội"."""
    level = next((level for level, length in CODE_LENGTH.items() if length == len(unit_code)), None)
    unit = None if level is None else codes.unit(level, unit_code)
    return f"{unit_code} {unit.name}" if unit else unit_code


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned text columns, the first one a header underlined."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
