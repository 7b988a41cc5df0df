"""The Justice adapter's registry against real databases (SQLite, PostgreSQL) and fake PIN
issuers."""

from __future__ import annotations

import secrets
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from justice_fixtures import AsUnitOfficers
from sqlalchemy import func, select
from structlog.testing import capture_logs

from justice_adapter.models import BirthRegistrationRow, RegistrationCounter
from justice_adapter.outbox import PinOutbox
from justice_adapter.pin_requests import PinRejected
from justice_adapter.registry import BirthRegistry
from lienthong import pin, validation
from lienthong.calendar.v1 import date_pb2
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import birth_registration_service_pb2 as service
from lienthong.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from lienthong.errors import Unavailable as UnavailableError
from lienthong.person.v1 import ethnicity_pb2, nationality_pb2, person_name_pb2, sex_pb2
from lienthong.place.v1 import administrative_unit_pb2 as au
from lienthong.place.v1 import place_pb2
from lienthong.reference import Level, code_lists

COMMUNE = au.ADMINISTRATIVE_LEVEL_COMMUNE
DISTRICT = au.ADMINISTRATIVE_LEVEL_DISTRICT
PROVINCE = au.ADMINISTRATIVE_LEVEL_PROVINCE
TRUC_BACH = "00004"  # Phường Trúc Bạch, Quận Ba Đình (001), Hà Nội (01)
PHUC_XA = "00001"  # Phường Phúc Xá, same district
KIM_SON = "16738"  # Thị trấn Kim Sơn, Huyện Quế Phong (415), Nghệ An (40)
QUE_PHONG = "415"
CHILD_NAMES = ("Nguyễn", "thị  minh", "an")  # entered in mixed case with a double space


# Builders ---------------------------------------------------------------------------------


def name(family: str, middle: str, given: str) -> person_name_pb2.PersonName:
    return person_name_pb2.PersonName(family_name=family, middle_name=middle, given_name=given)


def place_in_vietnam(level: int, code: str, detail: str = "") -> place_pb2.Place:
    return place_pb2.Place(
        country_code="VN",
        administrative_unit=au.AdministrativeUnit(level=level, code=code),
        detail=detail,
    )


def nationality(code: str = "VN") -> nationality_pb2.Nationality:
    return nationality_pb2.Nationality(country_code=code)


def parent(family: str, given: str, birth_year: int, country: str = "VN") -> br.Parent:
    return br.Parent(
        name=name(family, "Văn", given),
        birth_year=birth_year,
        ethnicity=ethnicity_pb2.Ethnicity(code="01"),
        nationality=nationality(country),
        residence=place_in_vietnam(COMMUNE, TRUC_BACH, "12 Trúc Bạch"),
    )


def registration(
    *,
    procedure: int = br.REGISTRATION_PROCEDURE_FIRST_REGISTRATION,
    unit_level: int = COMMUNE,
    unit_code: str = TRUC_BACH,
    sex: int = sex_pb2.SEX_FEMALE,
    born: tuple[int, int, int] = (2016, 3, 10),
    child_nationality: str = "VN",
) -> br.BirthRegistration:
    year, month, day = born
    return br.BirthRegistration(
        procedure=procedure,
        registration_unit=au.AdministrativeUnit(level=unit_level, code=unit_code),
        child=br.Child(
            name=name(*CHILD_NAMES),
            sex=sex,
            date_of_birth=date_pb2.Date(year=year, month=month, day=day),
            place_of_birth=br.BirthPlace(
                facility_name="Bệnh viện Phụ sản Hà Nội",
                place=place_in_vietnam(COMMUNE, "00007"),
            ),
            home_town=place_in_vietnam(PROVINCE, "40"),
            ethnicity=ethnicity_pb2.Ethnicity(code="01"),
            nationality=nationality(child_nationality),
        ),
        father=parent("Nguyễn", "Bình", 1988),
        mother=parent("Trần", "Hoa", 1990),
        declarant=br.Declarant(name=name("Trần", "Thị", "Hoa"), relationship="mẹ"),
    )


def request(
    birth_registration: br.BirthRegistration | None = None, request_id: str | None = None
) -> service.RegisterBirthRequest:
    return service.RegisterBirthRequest(
        request_id=request_id or str(uuid.uuid4()),
        birth_registration=birth_registration or registration(),
    )


# Fakes ------------------------------------------------------------------------------------


class LawfulIssuer:
    """Issues a PIN as the population database would: the prefix the data fixes, then random."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def issue(
        self, registration: br.BirthRegistration, request_id: str, *, timeout: float = 5.0
    ) -> str:
        del timeout
        with self._lock:
            self.calls.append((registration.name, request_id))
        codes = code_lists()
        unit = registration.registration_unit
        found = codes.unit(Level(unit.level), unit.code)
        assert found is not None
        child = registration.child
        fixed = pin.prefix(codes.pin_province_code(found), child.date_of_birth.year, child.sex)
        return fixed + f"{secrets.randbelow(pin.RANDOM_SPACE):06d}"


class FailingIssuer:
    """Raises the given error on every call, as a down or refusing population database."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def issue(
        self, registration: br.BirthRegistration, request_id: str, *, timeout: float = 5.0
    ) -> str:
        del registration, request_id, timeout
        self.calls += 1
        raise self.error


class WrongProvinceIssuer:
    """Returns a well-formed PIN of another province (Hồ Chí Minh, 079)."""

    def issue(
        self, registration: br.BirthRegistration, request_id: str, *, timeout: float = 5.0
    ) -> str:
        del request_id, timeout
        child = registration.child
        return pin.prefix("079", child.date_of_birth.year, child.sex) + "123456"


# Fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def issuer():
    return LawfulIssuer()


def registry_with(sessions, issuer) -> AsUnitOfficers:
    """A registry whose PINs come from ``issuer``, through an outbox on the same database."""
    return AsUnitOfficers(
        BirthRegistry(sessions, PinOutbox(sessions, issuer, code_lists()), code_lists())
    )


@pytest.fixture
def registry(sessions, issuer):
    return registry_with(sessions, issuer)


def count(sessions, table) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(table))


def violated_fields(error: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {violation.field for violation in error.value.violations}


# PIN --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("procedure", "level", "unit", "sex", "born", "expected_prefix"),
    [
        # A girl born 2016 and registered in Hà Nội: 001 3 16 (the domain README's example).
        (
            br.REGISTRATION_PROCEDURE_FIRST_REGISTRATION,
            COMMUNE,
            TRUC_BACH,
            sex_pb2.SEX_FEMALE,
            (2016, 3, 10),
            "001316",
        ),
        # A boy born 2016, registered with a foreign element by Quế Phong district, Nghệ An.
        (
            br.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT,
            DISTRICT,
            QUE_PHONG,
            sex_pb2.SEX_MALE,
            (2016, 1, 2),
            "040216",
        ),
        # A boy born 1999: the twentieth century's male digit.
        (
            br.REGISTRATION_PROCEDURE_FIRST_REGISTRATION,
            COMMUNE,
            KIM_SON,
            sex_pb2.SEX_MALE,
            (1999, 12, 31),
            "040099",
        ),
    ],
)
def test_vietnamese_child_is_issued_a_pin_encoding_province_sex_and_year(
    registry, issuer, procedure, level, unit, sex, born, expected_prefix
):
    """A first or foreign-element registration of a Vietnamese child is given its PIN."""
    entered = registry.register_birth(
        request(
            registration(procedure=procedure, unit_level=level, unit_code=unit, sex=sex, born=born)
        )
    )

    today = validation.today()
    assert entered.pin_status == br.PIN_STATUS_ISSUED
    assert entered.personal_identification_number.startswith(expected_prefix)
    assert len(entered.personal_identification_number) == 12
    assert entered.name == f"birthRegistrations/{unit}-{today.year}-1"
    assert entered.registration_number == 1
    assert (entered.registration_date.year, entered.registration_date.month) == (
        today.year,
        today.month,
    )
    assert entered.registration_date.day == today.day
    assert entered.create_time.seconds > 0
    assert issuer.calls == [(entered.name, issuer.calls[0][1])]
    assert registry.get(entered.name) == entered


def test_names_are_stored_in_upper_case_normalised(registry):
    """The register writes names in upper case with single spaces, as the law requires."""
    entered = registry.register_birth(request())

    child = registry.get(entered.name).child.name
    assert (child.family_name, child.middle_name, child.given_name) == ("NGUYỄN", "THỊ MINH", "AN")
    assert entered.father.name.given_name == "BÌNH"
    assert entered.declarant.name.family_name == "TRẦN"


@pytest.mark.parametrize(
    "birth_registration",
    [
        registration(child_nationality="KR"),
        registration(procedure=br.REGISTRATION_PROCEDURE_RE_REGISTRATION, born=(2010, 5, 1)),
        registration(
            procedure=br.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT,
            unit_level=DISTRICT,
            unit_code=QUE_PHONG,
            child_nationality="US",
        ),
    ],
    ids=["foreign-child", "re-registration", "foreign-element-foreign-child"],
)
def test_no_pin_for_a_foreign_child_or_a_re_registration(registry, issuer, birth_registration):
    """As in the pilot: foreign nationality and re-registration are not given a PIN."""
    entered = registry.register_birth(request(birth_registration))

    assert entered.pin_status == br.PIN_STATUS_NOT_APPLICABLE
    assert entered.personal_identification_number == ""
    assert issuer.calls == []
    assert registry.get(entered.name).pin_status == br.PIN_STATUS_NOT_APPLICABLE


def test_population_database_down_leaves_the_registration_committed_and_pending(sessions):
    """The registration and its number are kept; only the PIN waits; logs hold no names."""
    down = FailingIssuer(UnavailableError("population database: UNAVAILABLE"))
    registry = registry_with(sessions, down)
    sent = request()

    with capture_logs() as logs:
        entered = registry.register_birth(sent)

    assert entered.pin_status == br.PIN_STATUS_PENDING
    assert entered.personal_identification_number == ""
    assert entered.registration_number == 1
    assert down.calls == 1
    assert registry.get(entered.name).pin_status == br.PIN_STATUS_PENDING
    assert count(sessions, BirthRegistrationRow) == 1
    warning = next(log for log in logs if log["event"] == "pin_delivery_failed")
    retry_in = warning.pop("retry_in")
    assert warning == {
        "event": "pin_delivery_failed",
        "log_level": "warning",
        "birth_registration": entered.name,
        "code": "UNAVAILABLE",
        "attempts": 1,
    }
    assert 0.25 <= retry_in <= 0.5  # the outbox's first backoff, jittered
    logged = repr(logs)
    assert not any(part in logged.upper() for part in ("NGUYỄN", "TRẦN", "2016-03-10", "HOA"))


def test_pin_rejected_by_the_population_database_leaves_the_registration_pending(sessions):
    """A definitive refusal does not undo the registration either."""
    refusing = FailingIssuer(PinRejected(grpc.StatusCode.INVALID_ARGUMENT, "full_name"))
    registry = registry_with(sessions, refusing)

    with capture_logs() as logs:
        entered = registry.register_birth(request())

    assert entered.pin_status == br.PIN_STATUS_PENDING
    assert registry.get(entered.name).pin_status == br.PIN_STATUS_PENDING
    error = next(log for log in logs if log["event"] == "pin_delivery_failed")
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["log_level"] == "error"
    assert error["retry_in"] == 30.0  # a refusal is not asked again soon


def test_pin_that_does_not_fit_the_registration_is_not_stored(sessions):
    """A PIN of the wrong province breaks Decree 137/2015 Art. 13: keep PENDING, log an error."""
    registry = registry_with(sessions, WrongProvinceIssuer())

    with capture_logs() as logs:
        entered = registry.register_birth(request())

    assert entered.pin_status == br.PIN_STATUS_PENDING
    assert registry.get(entered.name).personal_identification_number == ""
    error = next(log for log in logs if log["event"] == "pin_delivery_failed")
    assert error == {
        "event": "pin_delivery_failed",
        "log_level": "error",
        "birth_registration": entered.name,
        "code": "PIN_DOES_NOT_FIT",
        "attempts": 1,
        "retry_in": 30.0,
    }


# Idempotency ------------------------------------------------------------------------------


def test_same_request_id_twice_returns_the_first_answer_and_asks_for_one_pin(
    registry, issuer, sessions
):
    """AIP-155: a repeat returns the stored registration; nothing is registered twice."""
    sent = request()

    first = registry.register_birth(sent)
    again = registry.register_birth(
        service.RegisterBirthRequest.FromString(sent.SerializeToString())
    )

    assert again == first
    assert len(issuer.calls) == 1
    assert count(sessions, BirthRegistrationRow) == 1


def test_repeat_ignores_output_only_fields(registry, issuer):
    """Output-only fields are ignored, so a repeat that sets them is still the same request."""
    sent = request()
    first = registry.register_birth(sent)
    repeat = service.RegisterBirthRequest()
    repeat.CopyFrom(sent)
    repeat.birth_registration.name = "birthRegistrations/00004-2016-999"
    repeat.birth_registration.pin_status = br.PIN_STATUS_ISSUED

    assert registry.register_birth(repeat) == first
    assert len(issuer.calls) == 1


def test_request_id_reused_with_different_content_is_already_exists(registry, sessions):
    """A request_id names one registration; other content under it is refused."""
    sent = request()
    registry.register_birth(sent)
    changed = request(registration(sex=sex_pb2.SEX_MALE), request_id=sent.request_id)

    with pytest.raises(AlreadyExists) as error:
        registry.register_birth(changed)

    assert error.value.reason == "REQUEST_ID_REUSED"
    assert count(sessions, BirthRegistrationRow) == 1


def test_concurrent_repeats_of_one_request_register_once(registry, issuer, sessions, monkeypatch):
    """Repeats racing past the first look-up all get the one registration that won."""
    sent = request()
    racers = 4
    everyone_looked = threading.Barrier(racers, timeout=30)
    first_look = registry._stored_answer
    looked = threading.local()

    def look_then_wait(request_id, digest):
        answer = first_look(request_id, digest)
        if not getattr(looked, "once", False):
            looked.once = True
            # Every racer has found nothing before any of them inserts.
            everyone_looked.wait()
        return answer

    monkeypatch.setattr(registry, "_stored_answer", look_then_wait)
    with ThreadPoolExecutor(max_workers=racers) as pool:
        answers = list(pool.map(lambda _: registry.register_birth(sent), range(racers)))

    assert {answer.name for answer in answers} == {answers[0].name}
    assert count(sessions, BirthRegistrationRow) == 1
    assert len(issuer.calls) == 1
    with sessions() as session:
        assert session.scalar(select(RegistrationCounter.last_number)) == 1


# Numbering --------------------------------------------------------------------------------


def test_numbers_are_consecutive_from_one_per_unit_under_concurrency(registry, sessions):
    """50 registrations from 8 threads in one commune get exactly 1..50; another starts at 1."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        entered = list(pool.map(lambda _: registry.register_birth(request()), range(50)))
    other = registry.register_birth(request(registration(unit_code=PHUC_XA)))

    assert sorted(answer.registration_number for answer in entered) == list(range(1, 51))
    assert len({answer.name for answer in entered}) == 50
    assert other.registration_number == 1
    with sessions() as session:
        counters = {
            (counter.unit_code, counter.last_number)
            for counter in session.scalars(select(RegistrationCounter))
        }
    assert counters == {(TRUC_BACH, 50), (PHUC_XA, 1)}


# Validation -------------------------------------------------------------------------------


def test_invalid_request_lists_every_violation_and_writes_nothing(registry, issuer, sessions):
    """One answer names every bad field, and neither a registration nor a number is taken."""
    bad = registration(unit_code="99999", born=(validation.today().year + 1, 1, 1))
    bad.child.name.given_name = "An2"
    bad.child.nationality.country_code = "XX"
    bad.father.ClearField("name")  # neither undetermined nor named

    with pytest.raises(InvalidArgument) as error:
        registry.register_birth(request(bad))

    assert violated_fields(error) == {
        "birth_registration.registration_unit.code",
        "birth_registration.child.name.given_name",
        "birth_registration.child.date_of_birth",
        "birth_registration.child.nationality.country_code",
        "birth_registration.father.name",
    }
    assert count(sessions, BirthRegistrationRow) == 0
    assert count(sessions, RegistrationCounter) == 0
    assert issuer.calls == []


def test_missing_parts_are_each_reported(registry):
    """Absent messages and unset enums are violations with their own paths."""
    bad = registration()
    bad.procedure = br.REGISTRATION_PROCEDURE_UNSPECIFIED
    bad.child.sex = sex_pb2.SEX_UNSPECIFIED
    bad.child.ClearField("place_of_birth")
    bad.ClearField("mother")
    bad.declarant.relationship = "x" * 51
    bad.father.birth_year = 2017  # after the child's year of birth
    bad.father.personal_identification_number = "12345"

    with pytest.raises(InvalidArgument) as error:
        registry.register_birth(request(bad, request_id="not-a-uuid"))

    assert violated_fields(error) == {
        "request_id",
        "birth_registration.procedure",
        "birth_registration.child.sex",
        "birth_registration.child.place_of_birth",
        "birth_registration.mother",
        "birth_registration.declarant.relationship",
        "birth_registration.father.birth_year",
        "birth_registration.father.personal_identification_number",
    }


def test_undetermined_parent_must_carry_nothing_else(registry):
    """An undetermined parent with a name is contradictory."""
    bad = registration()
    bad.father.undetermined = True

    with pytest.raises(InvalidArgument) as error:
        registry.register_birth(request(bad))

    assert violated_fields(error) == {
        f"birth_registration.father.{field}"
        for field in ("name", "birth_year", "ethnicity", "nationality", "residence")
    }


def test_both_parents_undetermined_with_a_declarant_is_registered(registry):
    """A foundling is registered on the declarant's word, and gets a PIN."""
    foundling = registration()
    foundling.father.CopyFrom(br.Parent(undetermined=True))
    foundling.mother.CopyFrom(br.Parent(undetermined=True))

    entered = registry.register_birth(request(foundling))

    assert entered.father == br.Parent(undetermined=True)
    assert entered.mother == br.Parent(undetermined=True)
    assert entered.pin_status == br.PIN_STATUS_ISSUED


def test_home_town_abroad_is_invalid(registry):
    """The contract: a home town is a place in Vietnam."""
    bad = registration()
    bad.child.home_town.CopyFrom(place_pb2.Place(country_code="FR", detail="Paris"))

    with pytest.raises(InvalidArgument) as error:
        registry.register_birth(request(bad))

    assert violated_fields(error) == {"birth_registration.child.home_town.country_code"}


def test_foreign_element_registration_by_a_commune_is_failed_precondition(registry, sessions):
    """A registration with a foreign element belongs to a district, not a commune."""
    at_commune = registration(procedure=br.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT)

    with pytest.raises(FailedPrecondition) as error:
        registry.register_birth(request(at_commune))

    assert error.value.reason == "UNIT_LEVEL_MISMATCH"
    assert count(sessions, BirthRegistrationRow) == 0


def test_first_registration_by_a_district_is_failed_precondition(registry):
    """A first registration belongs to a commune."""
    at_district = registration(unit_level=DISTRICT, unit_code=QUE_PHONG)

    with pytest.raises(FailedPrecondition):
        registry.register_birth(request(at_district))


# Reading ----------------------------------------------------------------------------------


def test_get_rejects_a_malformed_name_and_reports_an_unknown_one(registry):
    """A malformed name is INVALID_ARGUMENT; a well-formed one with no entry is NOT_FOUND."""
    with pytest.raises(InvalidArgument) as malformed:
        registry.get("birthRegistrations/4-2016-1")
    with pytest.raises(NotFound):
        registry.get("birthRegistrations/00004-2016-1")

    assert violated_fields(malformed) == {"name"}


def list_all(registry, **filters) -> list[br.BirthRegistration]:
    found, token = [], ""
    while True:
        page, token = registry.list(
            service.ListBirthRegistrationsRequest(page_size=2, page_token=token, **filters)
        )
        found += page
        if not token:
            return found


def test_list_filters_by_unit_at_any_level_and_pages_with_a_token(registry):
    """Province, district and commune codes each select the registrations within them."""
    hanoi = [registry.register_birth(request()) for _ in range(3)]
    kim_son = [registry.register_birth(request(registration(unit_code=KIM_SON))) for _ in range(2)]
    district = registry.register_birth(
        request(
            registration(
                procedure=br.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT,
                unit_level=DISTRICT,
                unit_code=QUE_PHONG,
            )
        )
    )

    first_page, token = registry.list(
        service.ListBirthRegistrationsRequest(page_size=2, unit_code="01")
    )
    last_page, last_token = registry.list(
        service.ListBirthRegistrationsRequest(page_size=2, unit_code="01", page_token=token)
    )

    assert [r.name for r in first_page] == [r.name for r in hanoi[:2]]
    assert token
    assert [r.name for r in last_page] == [hanoi[2].name]
    assert last_token == ""
    assert list_all(registry, unit_code="40") == [*kim_son, district]
    assert list_all(registry, unit_code=QUE_PHONG) == [*kim_son, district]
    assert list_all(registry, unit_code=KIM_SON) == kim_son
    assert list_all(registry, unit_code=TRUC_BACH) == hanoi
    assert list_all(registry) == [*hanoi, *kim_son, district]


def test_list_filters_by_procedure_status_and_date(registry):
    """Filters combine with AND; dates are registration dates."""
    issued = registry.register_birth(request())
    foreign = registry.register_birth(request(registration(child_nationality="JP")))
    today = validation.today()
    day = date_pb2.Date(year=today.year, month=today.month, day=today.day)
    tomorrow_year = date_pb2.Date(year=today.year + 1, month=1, day=1)

    assert list_all(registry, pin_status=br.PIN_STATUS_NOT_APPLICABLE) == [foreign]
    assert list_all(registry, pin_status=br.PIN_STATUS_ISSUED) == [issued]
    assert list_all(
        registry, procedure=br.REGISTRATION_PROCEDURE_FIRST_REGISTRATION, registered_to=day
    ) == [issued, foreign]
    assert list_all(registry, registered_from=day, registered_to=day) == [issued, foreign]
    assert list_all(registry, registered_from=tomorrow_year) == []
    assert list_all(registry, procedure=br.REGISTRATION_PROCEDURE_RE_REGISTRATION) == []


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"page_token": "not a token"}, "page_token"),
        ({"page_token": "MDA"}, "page_token"),  # "00": not a token this registry hands out
        ({"page_size": -1}, "page_size"),
        ({"unit_code": "99999"}, "unit_code"),
        ({"unit_code": "0001"}, "unit_code"),
        ({"pin_status": 9}, "pin_status"),
        ({"registered_from": date_pb2.Date(year=2016, month=2, day=30)}, "registered_from"),
        (
            {
                "registered_from": date_pb2.Date(year=2016, month=2, day=2),
                "registered_to": date_pb2.Date(year=2016, month=2, day=1),
            },
            "registered_to",
        ),
    ],
)
def test_list_rejects_bad_filters_and_tokens(registry, filters, field):
    """A bad token or filter is INVALID_ARGUMENT naming the field."""
    with pytest.raises(InvalidArgument) as error:
        registry.list(service.ListBirthRegistrationsRequest(**filters))

    assert violated_fields(error) == {field}


def test_list_page_size_is_capped_at_one_thousand(registry):
    """A larger page size is served as the maximum, not refused."""
    registry.register_birth(request())

    page, token = registry.list(service.ListBirthRegistrationsRequest(page_size=5000))

    assert len(page) == 1
    assert token == ""
