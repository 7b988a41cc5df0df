"""The population register: PIN issuance on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import pytest
from builders import TP_HCM_COMMUNE, issue_request
from sqlalchemy import func, select

from lienthong import errors, pin
from lienthong.db import make_engine, session_factory
from lienthong.person.v1 import sex_pb2
from lienthong.reference import code_lists
from police_adapter.allocation import draw_serial
from police_adapter.models import CitizenRecord, PinPrefixPool, create_schema
from police_adapter.population import PopulationRegister


@pytest.fixture
def register(database_url: str) -> Iterator[PopulationRegister]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield PopulationRegister(session_factory(engine), code_lists())
    engine.dispose()


def _count(register: PopulationRegister) -> int:
    with register._sessions() as session:
        return session.scalar(select(func.count()).select_from(CitizenRecord)) or 0


def test_pin_encodes_province_century_sex_and_year(register: PopulationRegister) -> None:
    issued = register.issue(
        issue_request(commune=TP_HCM_COMMUNE, sex=sex_pb2.SEX_MALE, born=(2016, 2, 2))
    )
    number = issued.personal_identification_number
    assert issued.newly_issued
    assert number[:6] == "079216"  # TP HCM 079, male born 2000-2099: 2, year 16
    assert len(number) == 12
    assert number.isdigit()


def test_issuing_twice_for_one_registration_returns_the_same_pin(
    register: PopulationRegister,
) -> None:
    first = register.issue(issue_request("birthRegistrations/00004-2016-7"))
    again = register.issue(issue_request("birthRegistrations/00004-2016-7"))
    assert again.personal_identification_number == first.personal_identification_number
    assert not again.newly_issued
    assert _count(register) == 1


def test_a_retried_request_id_returns_the_same_pin(register: PopulationRegister) -> None:
    request = issue_request("birthRegistrations/00004-2016-8")
    first = register.issue(request)
    assert (
        register.issue(request).personal_identification_number
        == first.personal_identification_number
    )


def test_a_request_id_reused_for_another_registration_is_refused(
    register: PopulationRegister,
) -> None:
    request = issue_request("birthRegistrations/00004-2016-9")
    register.issue(request)
    other = issue_request("birthRegistrations/00004-2016-10", request_id=request.request_id)
    with pytest.raises(errors.AlreadyExists):
        register.issue(other)
    assert _count(register) == 1


def test_a_foreign_child_gets_no_pin(register: PopulationRegister) -> None:
    with pytest.raises(errors.FailedPrecondition):
        register.issue(issue_request(nationality="KR"))
    assert _count(register) == 0


def test_invalid_data_is_refused_field_by_field_and_nothing_is_written(
    register: PopulationRegister,
) -> None:
    request = issue_request(commune="99999", born=(2016, 2, 30), nationality="XX")
    request.registered_birth.full_name.given_name = "HOA2"
    request.registered_birth.ClearField("father")
    with pytest.raises(errors.InvalidArgument) as raised:
        register.issue(request)
    fields = {violation.field for violation in raised.value.violations}
    assert fields == {
        "registered_birth.registration_place.code",
        "registered_birth.date_of_birth",
        "registered_birth.nationality.country_code",
        "registered_birth.full_name.given_name",
        "registered_birth.father",
    }
    assert _count(register) == 0


# Issue 2 asked for 10,000; at one committed transaction each that took 157 s on PostgreSQL
# here (issue 22), so the suite checks the same property on fewer, with a threefold margin on
# its per-test timeout (1,000 took 27 s among three busy workers), and
# `bench/pin_bench.py --count 10000` (or more) checks it at scale.
MANY_PINS = 1_000


def test_many_pins_of_one_prefix_are_distinct_and_well_formed(
    register: PopulationRegister,
) -> None:
    """Acceptance 3 of issue 2: many children of one prefix never share a number."""
    codes = code_lists()
    numbers = [
        register.issue(
            issue_request(f"birthRegistrations/00004-2016-{n}")
        ).personal_identification_number
        for n in range(1, MANY_PINS + 1)
    ]
    assert len(set(numbers)) == MANY_PINS
    for number in numbers:
        parts = pin.parse(number)
        assert parts.province_code == codes.pin_province_codes["01"]
        assert (parts.sex, parts.birth_year) == (sex_pb2.SEX_FEMALE, 2016)


def test_concurrent_retries_of_one_registration_get_one_pin(register: PopulationRegister) -> None:
    request = issue_request("birthRegistrations/00004-2016-11")
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: register.issue(request), range(16)))
    assert len({answer.personal_identification_number for answer in answers}) == 1
    assert sum(answer.newly_issued for answer in answers) == 1


def test_a_prefix_is_drawn_without_repetition_until_exhausted(
    database_url: str, request: pytest.FixtureRequest
) -> None:
    """Every serial comes out exactly once, and then the prefix says it is exhausted."""
    engine = make_engine(database_url)
    create_schema(engine)
    sessions = session_factory(engine)
    request.addfinalizer(engine.dispose)
    with sessions.begin() as session:
        session.add(PinPrefixPool(prefix="001316", remaining=500))  # a small pool to empty
    drawn = []
    with sessions.begin() as session:
        drawn = [draw_serial(session, "001316") for _ in range(500)]
    assert sorted(drawn) == list(range(500))
    with sessions.begin() as session, pytest.raises(errors.ResourceExhausted):
        draw_serial(session, "001316")
