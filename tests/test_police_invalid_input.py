"""Invalid IssuePersonalIdentificationNumber requests, through a real police server over mTLS.

Each case changes one thing in a request the population database accepts, and pins what the
caller sees: INVALID_ARGUMENT with a google.rpc.BadRequest naming exactly the offending field,
and no row written anywhere in the adapter's database. A case marked xfail is one that the
current validation accepts although it should not; the reason says why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import grpc
import pytest
from builders import issue_request
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import Engine, func, select
from stack import GATEWAY_ID, free_port, tls_of

from lienthong.calendar.v1 import date_pb2
from lienthong.config import PoliceConfig
from lienthong.db import make_engine
from lienthong.person.v1 import nationality_pb2, person_name_pb2, sex_pb2
from lienthong.place.v1 import administrative_unit_pb2, place_pb2
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2, citizen_service_pb2_grpc
from lienthong.tls import secure_channel
from police_adapter.models import Base, CitizenRecord
from police_adapter.server import DOMAIN, create_server

Request = citizen_service_pb2.IssuePersonalIdentificationNumberRequest
Mutation = Callable[[Request], None]
Stub = citizen_service_pb2_grpc.CitizenServiceStub

BIRTH = "registered_birth"
NEXT_YEAR = dt.datetime.now(dt.UTC).year + 1
LEVEL = administrative_unit_pb2.AdministrativeLevel


def _unit(level: LEVEL.ValueType, code: str) -> administrative_unit_pb2.AdministrativeUnit:
    return administrative_unit_pb2.AdministrativeUnit(level=level, code=code)


def _name(family: str, given: str, middle: str = "") -> person_name_pb2.PersonName:
    return person_name_pb2.PersonName(family_name=family, middle_name=middle, given_name=given)


def _nationality(code: str = "", *, stateless: bool = False) -> nationality_pb2.Nationality:
    return nationality_pb2.Nationality(country_code=code, stateless=stateless)


def _person(
    name: person_name_pb2.PersonName | None = None,
    nationality: nationality_pb2.Nationality | None = None,
    pin: str = "",
    *,
    undetermined: bool = False,
) -> citizen_pb2.RelatedPerson:
    return citizen_pb2.RelatedPerson(
        undetermined=undetermined,
        full_name=name,
        nationality=nationality,
        personal_identification_number=pin,
    )


def _walk(request: Request, path: str) -> tuple[Message, str]:
    *parents, leaf = path.split(".")
    target: Message = request
    for part in parents:
        target = getattr(target, part)
    return target, leaf


def set_(path: str, value: object) -> Mutation:
    """A mutation that sets the field at ``path`` (a scalar, or a whole message) to ``value``."""

    def mutate(request: Request) -> None:
        target, leaf = _walk(request, path)
        if isinstance(value, Message):
            getattr(target, leaf).CopyFrom(value)
        else:
            setattr(target, leaf, value)

    return mutate


def clear(path: str) -> Mutation:
    """A mutation that unsets the field at ``path``."""

    def mutate(request: Request) -> None:
        target, leaf = _walk(request, path)
        target.ClearField(leaf)

    return mutate


def gap(reason: str) -> pytest.MarkDecorator:
    """An invalid input the current validation accepts: to be fixed in police_adapter."""
    return pytest.mark.xfail(strict=True, reason=f"validation gap: {reason}")


HA_NOI = _unit(LEVEL.ADMINISTRATIVE_LEVEL_PROVINCE, "01")
VIETNAMESE = _nationality("VN")

# (mutation of a valid request, the one field path the BadRequest must name)
INVALID = [
    # request_id
    pytest.param(set_("request_id", ""), "request_id", id="request_id-missing"),
    pytest.param(set_("request_id", "42"), "request_id", id="request_id-not-a-uuid"),
    pytest.param(
        set_("request_id", "{123e4567-e89b-12d3-a456-426614174000}"),
        "request_id",
        id="request_id-uuid-in-braces",
    ),
    pytest.param(clear(BIRTH), BIRTH, id="registered_birth-missing"),
    # birth_registration
    pytest.param(
        set_(f"{BIRTH}.birth_registration", ""),
        f"{BIRTH}.birth_registration",
        id="birth_registration-missing",
    ),
    pytest.param(
        set_(f"{BIRTH}.birth_registration", "registrations/00004-2016-1"),
        f"{BIRTH}.birth_registration",
        id="birth_registration-wrong-collection",
    ),
    pytest.param(
        set_(f"{BIRTH}.birth_registration", "birthRegistrations/00004-16-1"),
        f"{BIRTH}.birth_registration",
        id="birth_registration-two-digit-year",
    ),
    pytest.param(
        set_(f"{BIRTH}.birth_registration", "birthRegistrations/0004-2016-1"),
        f"{BIRTH}.birth_registration",
        id="birth_registration-four-digit-unit-code",
    ),
    pytest.param(
        set_(f"{BIRTH}.birth_registration", "birthRegistrations/00004-2016-0"),
        f"{BIRTH}.birth_registration",
        id="birth_registration-number-zero",
    ),
    pytest.param(
        set_(f"{BIRTH}.birth_registration", "birthRegistrations/26734-2016-1"),
        f"{BIRTH}.birth_registration",
        id="birth_registration-unit-is-not-the-registration-place",
    ),
    pytest.param(
        set_(f"{BIRTH}.birth_registration", "birthRegistrations/00004-2015-1"),
        f"{BIRTH}.birth_registration",
        id="birth_registration-year-before-birth",
    ),
    # full_name
    pytest.param(clear(f"{BIRTH}.full_name"), f"{BIRTH}.full_name", id="full_name-missing"),
    pytest.param(
        set_(f"{BIRTH}.full_name.family_name", ""),
        f"{BIRTH}.full_name.family_name",
        id="family_name-empty",
    ),
    pytest.param(
        set_(f"{BIRTH}.full_name.family_name", "LÊ2"),
        f"{BIRTH}.full_name.family_name",
        id="family_name-with-digit",
    ),
    pytest.param(
        set_(f"{BIRTH}.full_name.middle_name", "TH1"),
        f"{BIRTH}.full_name.middle_name",
        id="middle_name-with-digit",
    ),
    pytest.param(
        set_(f"{BIRTH}.full_name.given_name", "HOA2"),
        f"{BIRTH}.full_name.given_name",
        id="given_name-with-digit",
    ),
    pytest.param(
        set_(f"{BIRTH}.full_name.given_name", "HOA²"),
        f"{BIRTH}.full_name.given_name",
        id="given_name-with-superscript-digit",
    ),
    pytest.param(
        set_(f"{BIRTH}.full_name.given_name", "HO\nA"),
        f"{BIRTH}.full_name.given_name",
        id="given_name-with-line-break",
    ),
    pytest.param(
        set_(f"{BIRTH}.full_name.given_name", ""),
        f"{BIRTH}.full_name.given_name",
        id="given_name-empty",
    ),
    pytest.param(
        set_(f"{BIRTH}.full_name.given_name", "   "),
        f"{BIRTH}.full_name.given_name",
        id="given_name-only-spaces",
    ),
    pytest.param(
        set_(f"{BIRTH}.full_name.given_name", "H" * 51),
        f"{BIRTH}.full_name.given_name",
        id="given_name-51-characters",
    ),
    pytest.param(
        set_(f"{BIRTH}.full_name.given_name", "-HOA"),
        f"{BIRTH}.full_name.given_name",
        id="given_name-leading-hyphen",
    ),
    # date_of_birth
    pytest.param(
        clear(f"{BIRTH}.date_of_birth"), f"{BIRTH}.date_of_birth", id="date_of_birth-missing"
    ),
    pytest.param(
        set_(f"{BIRTH}.date_of_birth", date_pb2.Date(year=2016, month=3)),
        f"{BIRTH}.date_of_birth",
        id="date_of_birth-without-day",
    ),
    pytest.param(
        set_(f"{BIRTH}.date_of_birth", date_pb2.Date(year=2016)),
        f"{BIRTH}.date_of_birth",
        id="date_of_birth-year-only",
    ),
    pytest.param(
        set_(f"{BIRTH}.date_of_birth", date_pb2.Date(year=2016, month=2, day=30)),
        f"{BIRTH}.date_of_birth",
        id="date_of_birth-2016-02-30",
    ),
    pytest.param(
        set_(f"{BIRTH}.date_of_birth", date_pb2.Date(year=2016, month=13, day=1)),
        f"{BIRTH}.date_of_birth",
        id="date_of_birth-month-13",
    ),
    pytest.param(
        set_(f"{BIRTH}.date_of_birth", date_pb2.Date(year=NEXT_YEAR, month=1, day=1)),
        f"{BIRTH}.date_of_birth",
        id="date_of_birth-in-the-future",
    ),
    pytest.param(
        set_(f"{BIRTH}.date_of_birth", date_pb2.Date(year=1899, month=12, day=31)),
        f"{BIRTH}.date_of_birth",
        id="date_of_birth-before-1900",
    ),
    # sex
    pytest.param(
        set_(f"{BIRTH}.sex", sex_pb2.SEX_UNSPECIFIED), f"{BIRTH}.sex", id="sex-unspecified"
    ),
    pytest.param(set_(f"{BIRTH}.sex", 7), f"{BIRTH}.sex", id="sex-unknown-number-7"),
    # registration_place
    pytest.param(
        clear(f"{BIRTH}.registration_place"),
        f"{BIRTH}.registration_place",
        id="registration_place-missing",
    ),
    pytest.param(
        set_(f"{BIRTH}.registration_place.code", "99999"),
        f"{BIRTH}.registration_place.code",
        id="registration_place-unknown-commune-99999",
    ),
    pytest.param(
        set_(f"{BIRTH}.registration_place.code", "0004"),
        f"{BIRTH}.registration_place.code",
        id="registration_place-commune-code-of-4-digits",
    ),
    pytest.param(
        set_(f"{BIRTH}.registration_place.code", "0000A"),
        f"{BIRTH}.registration_place.code",
        id="registration_place-code-with-letter",
    ),
    pytest.param(
        set_(f"{BIRTH}.registration_place", HA_NOI),
        f"{BIRTH}.registration_place.level",
        id="registration_place-a-province",
    ),
    pytest.param(
        set_(f"{BIRTH}.registration_place.level", LEVEL.ADMINISTRATIVE_LEVEL_UNSPECIFIED),
        f"{BIRTH}.registration_place.level",
        id="registration_place-level-unspecified",
    ),
    # home_town
    pytest.param(clear(f"{BIRTH}.home_town"), f"{BIRTH}.home_town", id="home_town-missing"),
    pytest.param(
        set_(f"{BIRTH}.home_town", place_pb2.Place(country_code="XX", detail="Seoul")),
        f"{BIRTH}.home_town.country_code",
        id="home_town-country-XX",
    ),
    pytest.param(
        clear(f"{BIRTH}.home_town.administrative_unit"),
        f"{BIRTH}.home_town.administrative_unit",
        id="home_town-in-vietnam-without-unit",
    ),
    pytest.param(
        set_(f"{BIRTH}.home_town.administrative_unit.code", "03"),
        f"{BIRTH}.home_town.administrative_unit.code",
        id="home_town-unknown-province-03",
    ),
    pytest.param(
        set_(f"{BIRTH}.home_town", place_pb2.Place(country_code="KR")),
        f"{BIRTH}.home_town.detail",
        id="home_town-abroad-without-city",
    ),
    pytest.param(
        set_(f"{BIRTH}.home_town.country_code", "KR"),
        f"{BIRTH}.home_town.administrative_unit",
        id="home_town-abroad-with-vietnamese-unit",
    ),
    # ethnicity
    pytest.param(clear(f"{BIRTH}.ethnicity"), f"{BIRTH}.ethnicity", id="ethnicity-missing"),
    pytest.param(
        set_(f"{BIRTH}.ethnicity.code", "00"), f"{BIRTH}.ethnicity.code", id="ethnicity-00"
    ),
    pytest.param(
        set_(f"{BIRTH}.ethnicity.code", "55"), f"{BIRTH}.ethnicity.code", id="ethnicity-55"
    ),
    pytest.param(
        set_(f"{BIRTH}.ethnicity.code", "1"), f"{BIRTH}.ethnicity.code", id="ethnicity-one-digit"
    ),
    # nationality
    pytest.param(clear(f"{BIRTH}.nationality"), f"{BIRTH}.nationality", id="nationality-missing"),
    pytest.param(
        set_(f"{BIRTH}.nationality.country_code", "XX"),
        f"{BIRTH}.nationality.country_code",
        id="nationality-XX",
    ),
    pytest.param(
        set_(f"{BIRTH}.nationality.country_code", "vn"),
        f"{BIRTH}.nationality.country_code",
        id="nationality-lower-case-vn",
    ),
    pytest.param(
        set_(f"{BIRTH}.nationality.country_code", "VNM"),
        f"{BIRTH}.nationality.country_code",
        id="nationality-alpha-3-VNM",
    ),
    pytest.param(
        set_(f"{BIRTH}.nationality.stateless", True),  # noqa: FBT003 - a field value
        f"{BIRTH}.nationality.country_code",
        id="nationality-stateless-with-country",
    ),
    # father, mother, legal representative
    pytest.param(clear(f"{BIRTH}.father"), f"{BIRTH}.father", id="father-missing"),
    pytest.param(
        clear(f"{BIRTH}.father.full_name"),
        f"{BIRTH}.father.full_name",
        id="father-neither-undetermined-nor-named",
    ),
    pytest.param(
        set_(f"{BIRTH}.father.undetermined", True),  # noqa: FBT003 - a field value
        f"{BIRTH}.father",
        id="father-undetermined-with-a-name",
    ),
    pytest.param(
        set_(f"{BIRTH}.father.full_name.family_name", "L3"),
        f"{BIRTH}.father.full_name.family_name",
        id="father-family_name-with-digit",
    ),
    pytest.param(
        clear(f"{BIRTH}.father.nationality"),
        f"{BIRTH}.father.nationality",
        id="father-without-nationality",
    ),
    pytest.param(
        set_(f"{BIRTH}.father.personal_identification_number", "00119000001"),
        f"{BIRTH}.father.personal_identification_number",
        id="father-pin-of-11-digits",
    ),
    pytest.param(
        set_(f"{BIRTH}.father.personal_identification_number", "00119000001X"),
        f"{BIRTH}.father.personal_identification_number",
        id="father-pin-with-letter",
    ),
    pytest.param(clear(f"{BIRTH}.mother"), f"{BIRTH}.mother", id="mother-missing"),
    pytest.param(
        set_(f"{BIRTH}.mother", _person(_name("NGUYỄN", "LAN"), _nationality("ZZ"))),
        f"{BIRTH}.mother.nationality.country_code",
        id="mother-nationality-ZZ",
    ),
    pytest.param(
        set_(
            f"{BIRTH}.mother", _person(_name("NGUYỄN", "LAN"), _nationality("VN", stateless=True))
        ),
        f"{BIRTH}.mother.nationality.country_code",
        id="mother-stateless-with-country",
    ),
    pytest.param(
        set_(f"{BIRTH}.legal_representative", _person(_name("TRẦN", "B4O"), VIETNAMESE)),
        f"{BIRTH}.legal_representative.full_name.given_name",
        id="legal_representative-digit-in-name",
    ),
    pytest.param(
        set_(f"{BIRTH}.legal_representative", _person(_name("TRẦN", "BẢO"), undetermined=True)),
        f"{BIRTH}.legal_representative",
        id="legal_representative-undetermined-with-a-name",
    ),
]


class Police(NamedTuple):
    """A running police adapter: where it listens, and an engine on its SQLite database."""

    address: str
    engine: Engine


@pytest.fixture(scope="module")
def police(pki, tmp_path_factory) -> Iterator[Police]:
    database = Path(tmp_path_factory.mktemp("police")) / "police.db"
    address = f"127.0.0.1:{free_port()}"
    server = create_server(
        PoliceConfig(
            listen=address,
            tls=tls_of(pki, "police"),
            database_url=f"sqlite:///{database}",
            trusted_callers=frozenset({GATEWAY_ID}),
        )
    )
    server.start()
    engine = make_engine(f"sqlite:///{database}")
    yield Police(address, engine)
    engine.dispose()
    server.stop(grace=None).wait()


@pytest.fixture(scope="module")
def gateway_stub(pki, police) -> Iterator[Stub]:
    """A CitizenService stub that presents the gateway's client certificate."""
    with secure_channel(police.address, tls_of(pki, "gateway-client").read()) as channel:
        yield citizen_service_pb2_grpc.CitizenServiceStub(channel)


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table of the adapter, citizen and pin_prefix_pool among them."""
    with engine.connect() as connection:
        return {
            table.name: connection.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def citizens(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(CitizenRecord)) or 0


def refusal(stub: Stub, request: Request) -> grpc.RpcError:
    """The error the call ends with; fails the test when the call succeeds."""
    with pytest.raises(grpc.RpcError) as raised:
        stub.IssuePersonalIdentificationNumber(request, timeout=10)
    return raised.value


def details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, list[str]]:
    """The ErrorInfo of a rich status, and the fields of its BadRequest (empty when none)."""
    status = rpc_status.from_call(error)
    assert status is not None, "the status carries no google.rpc.Status details"
    info = error_details_pb2.ErrorInfo()
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            assert all(violation.description for violation in bad_request.field_violations)
            fields.extend(violation.field for violation in bad_request.field_violations)
    return info, fields


def test_the_unchanged_request_is_issued_a_pin(gateway_stub, police):
    """The base every case mutates is valid, so each refusal is due to its one change."""
    before = citizens(police.engine)
    answer = gateway_stub.IssuePersonalIdentificationNumber(
        issue_request("birthRegistrations/00004-2016-9000"), timeout=10
    )
    assert answer.newly_issued
    assert answer.personal_identification_number.startswith("001316")
    assert citizens(police.engine) == before + 1


@pytest.mark.parametrize(("mutate", "field"), INVALID)
def test_an_invalid_field_is_refused_by_name_and_nothing_is_written(
    gateway_stub, police, mutate: Mutation, field: str
):
    request = issue_request()
    mutate(request)
    before = row_counts(police.engine)

    error = refusal(gateway_stub, request)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields = details(error)
    assert fields == [field]
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", DOMAIN)
    assert row_counts(police.engine) == before


def test_the_invalid_cases_are_distinct():
    """Each case of the table is a different input: no duplicate hides a missing one."""
    requests = []
    for case in INVALID:
        request = issue_request(request_id="123e4567-e89b-12d3-a456-426614174000")
        case.values[0](request)
        requests.append(request.SerializeToString(deterministic=True))
    assert len(set(requests)) == len(INVALID) >= 30


@pytest.mark.parametrize(
    "nationality",
    [
        pytest.param(_nationality("KR"), id="korean"),
        pytest.param(_nationality(stateless=True), id="stateless"),
    ],
)
def test_a_child_not_of_vietnamese_nationality_gets_no_pin_and_nothing_is_written(
    gateway_stub, police, nationality: nationality_pb2.Nationality
):
    request = issue_request("birthRegistrations/00004-2016-9001")
    request.registered_birth.nationality.CopyFrom(nationality)
    before = row_counts(police.engine)

    error = refusal(gateway_stub, request)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, fields = details(error)
    assert (info.reason, info.domain) == ("NOT_VIETNAMESE", DOMAIN)
    assert fields == []
    assert row_counts(police.engine) == before


@pytest.mark.parametrize("system", ["officer-portal", "police"])
def test_a_caller_other_than_the_gateway_is_denied_and_nothing_is_written(pki, police, system: str):
    before = row_counts(police.engine)
    with secure_channel(police.address, tls_of(pki, system).read()) as channel:
        stub = citizen_service_pb2_grpc.CitizenServiceStub(channel)
        error = refusal(stub, issue_request("birthRegistrations/00004-2016-9002"))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert row_counts(police.engine) == before
