"""Corrections of citizen records (UpdateCitizen), verification of claims (VerifyCitizen),
and the history of every change — on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from builders import TP_HCM_COMMUNE, issue_request
from google.protobuf import field_mask_pb2
from sqlalchemy import select

from lienthong import errors
from lienthong.calendar.v1 import date_pb2
from lienthong.db import make_engine, session_factory
from lienthong.person.v1 import ethnicity_pb2, person_name_pb2, sex_pb2
from lienthong.place.v1 import administrative_unit_pb2
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2
from lienthong.reference import code_lists
from police_adapter.allocation import draw_serial
from police_adapter.history import Provenance
from police_adapter.models import Base, CitizenChange, PinPrefixPool, create_schema
from police_adapter.population import PopulationRegister

KEPT = citizen_service_pb2.PIN_OUTCOME_KEPT
REESTABLISHED = citizen_service_pb2.PIN_OUTCOME_REESTABLISHED
MATCH = citizen_service_pb2.VERIFICATION_RESULT_MATCH
MISMATCH = citizen_service_pb2.VERIFICATION_RESULT_MISMATCH
UNKNOWN = citizen_service_pb2.VERIFICATION_RESULT_UNKNOWN
BY = Provenance(
    exchange_id="ex-1",
    caller="spiffe://lienthong.local/moj/civil-registry",
    on_behalf_of="officers/7",
)


@pytest.fixture
def register(database_url: str) -> Iterator[PopulationRegister]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield PopulationRegister(session_factory(engine), code_lists())
    engine.dispose()


def _issued(register: PopulationRegister, n: int = 1, **changes) -> str:
    request = issue_request(f"birthRegistrations/00004-2016-{n}", **changes)
    return register.issue(request, BY).personal_identification_number


def _update(
    number: str, *paths: str, request_id: str | None = None, **values
) -> citizen_service_pb2.UpdateCitizenRequest:
    citizen = citizen_pb2.Citizen(name=f"citizens/{number}", **values)
    return citizen_service_pb2.UpdateCitizenRequest(
        request_id=request_id or str(uuid.uuid4()),
        citizen=citizen,
        update_mask=field_mask_pb2.FieldMask(paths=list(paths)),
        reason="Quyết định cải chính số 12/QĐ-UBND ngày 2016-05-02",
    )


def _history(register: PopulationRegister, number: str) -> list[CitizenChange]:
    with register._sessions() as session:
        return list(
            session.scalars(
                select(CitizenChange).where(CitizenChange.pin == number).order_by(CitizenChange.id)
            )
        )


def test_a_correction_of_sex_reestablishes_the_pin_and_cancels_the_old_one(
    register: PopulationRegister,
) -> None:
    old = _issued(register, sex=sex_pb2.SEX_FEMALE)
    answer = register.update(_update(old, "sex", sex=sex_pb2.SEX_MALE), BY)
    new = answer.citizen.personal_identification_number
    assert answer.pin_outcome == REESTABLISHED
    assert answer.cancelled_personal_identification_number == old
    assert (old[3], new[3]) == ("3", "2")  # a girl born 2000-2099 became a boy
    assert new[:3] + new[4:6] == old[:3] + old[4:6]
    assert answer.citizen.state == citizen_pb2.CITIZEN_STATE_ACTIVE
    cancelled = register.get(f"citizens/{old}")
    assert cancelled.state == citizen_pb2.CITIZEN_STATE_CANCELLED
    assert cancelled.replaced_by == new
    # The registration's PIN is now the new one, also for a retry of the original issuance.
    assert _issued(register) == new


def test_a_cancelled_pin_is_never_issued_again(database_url: str) -> None:
    """Empty a small pool of the old prefix: the cancelled number never comes out of it."""
    engine = make_engine(database_url)
    create_schema(engine)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        session.add(PinPrefixPool(prefix="001316", remaining=50))
    register = PopulationRegister(sessions, code_lists())
    old = _issued(register)
    register.update(_update(old, "sex", sex=sex_pb2.SEX_MALE))
    with sessions.begin() as session:
        rest = [f"001316{draw_serial(session, '001316'):06d}" for _ in range(49)]
    assert old not in rest
    with sessions.begin() as session, pytest.raises(errors.ResourceExhausted):
        draw_serial(session, "001316")
    engine.dispose()


def test_a_correction_of_the_year_or_the_province_reestablishes_the_pin(
    register: PopulationRegister,
) -> None:
    first = _issued(register, 1)
    by_year = register.update(
        _update(first, "date_of_birth", date_of_birth=date_pb2.Date(year=2015, month=12, day=31))
    )
    assert by_year.pin_outcome == REESTABLISHED
    assert by_year.citizen.personal_identification_number[4:6] == "15"
    second = _issued(register, 2)
    unit = administrative_unit_pb2.AdministrativeUnit(
        level=administrative_unit_pb2.ADMINISTRATIVE_LEVEL_COMMUNE, code=TP_HCM_COMMUNE
    )
    by_place = register.update(_update(second, "registration_place", registration_place=unit))
    assert by_place.pin_outcome == REESTABLISHED
    assert by_place.citizen.personal_identification_number[:3] == "079"


def test_a_correction_of_a_name_or_a_day_of_birth_keeps_the_pin(
    register: PopulationRegister,
) -> None:
    number = _issued(register)
    name = person_name_pb2.PersonName(family_name="LÊ", middle_name="THỊ", given_name="HỒNG")
    answer = register.update(_update(number, "full_name", full_name=name), BY)
    assert answer.pin_outcome == KEPT
    assert answer.citizen.personal_identification_number == number
    assert answer.citizen.full_name.given_name == "HỒNG"
    same_year = register.update(
        _update(number, "date_of_birth", date_of_birth=date_pb2.Date(year=2016, month=1, day=2))
    )
    assert same_year.pin_outcome == KEPT
    other_commune_same_province = administrative_unit_pb2.AdministrativeUnit(
        level=administrative_unit_pb2.ADMINISTRATIVE_LEVEL_COMMUNE, code="00007"
    )
    assert (
        register.update(
            _update(number, "registration_place", registration_place=other_commune_same_province)
        ).pin_outcome
        == KEPT
    )


def test_a_repeated_update_returns_the_first_answer_and_a_reused_request_id_is_refused(
    register: PopulationRegister,
) -> None:
    number = _issued(register)
    request = _update(number, "sex", sex=sex_pb2.SEX_MALE)
    first = register.update(request)
    again = register.update(request)
    assert (
        again.citizen.personal_identification_number == first.citizen.personal_identification_number
    )
    assert again.pin_outcome == REESTABLISHED
    other = _update(number, "sex", request_id=request.request_id, sex=sex_pb2.SEX_FEMALE)
    with pytest.raises(errors.AlreadyExists):
        register.update(other)


def test_a_cancelled_record_cannot_be_updated(register: PopulationRegister) -> None:
    old = _issued(register)
    register.update(_update(old, "sex", sex=sex_pb2.SEX_MALE))
    with pytest.raises(errors.FailedPrecondition) as raised:
        register.update(_update(old, "ethnicity", ethnicity=ethnicity_pb2.Ethnicity(code="02")))
    assert raised.value.reason == "PIN_CANCELLED"


@pytest.mark.parametrize(
    ("request_of", "field"),
    [
        (lambda n: _update(n, "sex", sex=sex_pb2.SEX_UNSPECIFIED), "citizen.sex"),
        (lambda n: _update(n, "personal_identification_number"), "update_mask.paths"),
        (_update, "update_mask"),
        (lambda _n: _update("123", "sex", sex=sex_pb2.SEX_MALE), "citizen.name"),
        (
            lambda n: _update(
                n,
                "full_name",
                full_name=person_name_pb2.PersonName(family_name="LÊ", given_name="H0A"),
            ),
            "citizen.full_name.given_name",
        ),
        (lambda n: _update(n, "full_name"), "citizen.full_name"),
        (
            lambda n: _update(
                n, "date_of_birth", date_of_birth=date_pb2.Date(year=2999, month=1, day=1)
            ),
            "citizen.date_of_birth",
        ),
        (lambda n: _update(n, "sex", request_id="again", sex=sex_pb2.SEX_MALE), "request_id"),
    ],
)
def test_an_invalid_update_names_the_field_and_changes_nothing(
    register: PopulationRegister, request_of, field: str
) -> None:
    number = _issued(register)
    with pytest.raises(errors.InvalidArgument) as raised:
        register.update(request_of(number))
    assert field in {violation.field for violation in raised.value.violations}
    assert [change.kind for change in _history(register, number)] == ["ISSUED"]
    assert register.get(f"citizens/{number}").state == citizen_pb2.CITIZEN_STATE_ACTIVE


def test_every_change_is_in_the_history_with_its_provenance_and_no_personal_data(
    register: PopulationRegister,
) -> None:
    old = _issued(register)
    name = person_name_pb2.PersonName(family_name="LÊ", given_name="HỒNG")
    register.update(_update(old, "full_name", full_name=name), BY)
    new = register.update(
        _update(old, "sex", sex=sex_pb2.SEX_MALE), BY
    ).citizen.personal_identification_number
    history = _history(register, old)
    assert [change.kind for change in history] == ["ISSUED", "UPDATED", "CANCELLED"]
    assert history[1].fields == ["full_name"]
    assert history[1].before_sha256 != history[1].after_sha256
    assert history[2].related_pin == new
    (established,) = _history(register, new)
    assert (established.kind, established.related_pin, established.fields) == (
        "REESTABLISHED",
        old,
        ["sex"],
    )
    for change in [*history, established]:
        assert (change.exchange_id, change.caller, change.on_behalf_of) == (
            BY.exchange_id,
            BY.caller,
            BY.on_behalf_of,
        )
        assert "HỒNG" not in repr(vars(change))


def test_verification_answers_match_mismatch_or_unknown_without_disclosing_data(
    register: PopulationRegister,
) -> None:
    number = _issued(register)
    claim = citizen_service_pb2.CitizenClaim(
        full_name=person_name_pb2.PersonName(family_name="lê", middle_name="thị", given_name="hoa"),
        date_of_birth=date_pb2.Date(year=2016, month=3, day=15),
        sex=sex_pb2.SEX_FEMALE,
    )
    answer = register.verify(
        citizen_service_pb2.VerifyCitizenRequest(personal_identification_number=number, claim=claim)
    )
    assert [(r.field, r.result) for r in answer.results] == [
        ("full_name", MATCH), ("date_of_birth", MISMATCH), ("sex", MATCH),
    ]  # fmt: skip
    assert "2016" not in str(answer)
    unknown = register.verify(
        citizen_service_pb2.VerifyCitizenRequest(
            personal_identification_number="001316000000", claim=claim
        )
    )
    assert {r.result for r in unknown.results} == {UNKNOWN}
    with pytest.raises(errors.InvalidArgument):
        register.verify(
            citizen_service_pb2.VerifyCitizenRequest(personal_identification_number=number)
        )


def test_the_migrated_schema_matches_the_models(database_url: str) -> None:
    """Alembic's migrations and the SQLAlchemy models describe the same schema."""
    engine = make_engine(database_url)
    create_schema(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": "alembic_version_police"}
        )
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []
