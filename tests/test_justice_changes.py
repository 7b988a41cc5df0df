"""Amendments in the grace window, formal corrections after it, and their way to the
population database (issue 6, TP HCM's and the police's requests of the 2016 pilot)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from justice_fixtures import AsUnitOfficers, unit_officer
from sqlalchemy import select
from stack import Stack, start_stack
from test_justice_registry import (
    KIM_SON,
    PHUC_XA,
    QUE_PHONG,
    TRUC_BACH,
    FailingIssuer,
    LawfulIssuer,
    registration,
    request,
)

from justice_adapter.change_delivery import ChangeOutbox, Delivery
from justice_adapter.changes import RegistrationChanges
from justice_adapter.models import BirthRegistrationRow, RegistrationChangeRow
from justice_adapter.outbox import PinOutbox
from justice_adapter.pin_requests import CitizenUpdate, PinRejected
from justice_adapter.registry import BirthRegistry
from justice_adapter.scope import PROVINCIAL_SUPERVISOR, Locality, Officer
from lienthong import metadata, pin, validation
from lienthong.calendar.v1 import date_pb2
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import birth_registration_service_pb2 as service
from lienthong.civilregistry.v1 import birth_registration_service_pb2_grpc as service_grpc
from lienthong.demo import SAMPLES, register, sample_request
from lienthong.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from lienthong.person.v1 import person_name_pb2, sex_pb2
from lienthong.pin import RANDOM_SPACE
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2, citizen_service_pb2_grpc
from lienthong.reference import Level, code_lists

BA_DINH = "001"  # the district of Trúc Bạch and Phúc Xá


class Clock:
    """The time the grace window is measured by; moves when the test says so."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


class Population:
    """UpdateCitizen as the population database answers it: a change of sex or year of
    birth cancels the PIN and establishes one that fits; ``mode`` "down" or "refusing"."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.mode = "up"
        self.answers: dict[str, CitizenUpdate] = {}

    def update(self, registration, *, pin, paths, reason, request_id, timeout=5.0):
        del timeout
        self.calls.append({"pin": pin, "paths": paths, "reason": reason, "request_id": request_id})
        if self.mode == "down":
            raise Unavailable("population database: UNAVAILABLE")
        if self.mode == "refusing":
            raise PinRejected(grpc.StatusCode.FAILED_PRECONDITION, "cancelled")
        if request_id in self.answers:
            return self.answers[request_id]
        answer = CitizenUpdate(pin=pin, cancelled_pin=None)
        if pin[3:6] != _prefix(registration)[3:6]:
            answer = CitizenUpdate(
                pin=_prefix(registration) + f"{secrets.randbelow(RANDOM_SPACE):06d}",
                cancelled_pin=pin,
            )
        self.answers[request_id] = answer
        return answer


def _prefix(registration: br.BirthRegistration) -> str:
    codes = code_lists()
    unit = codes.unit(
        Level(registration.registration_unit.level), registration.registration_unit.code
    )
    assert unit is not None
    child = registration.child
    return pin.prefix(codes.pin_province_code(unit), child.date_of_birth.year, child.sex)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def population() -> Population:
    return Population()


@pytest.fixture
def outbox(sessions, population, clock) -> ChangeOutbox:
    return ChangeOutbox(sessions, population, code_lists(), clock=clock)


@pytest.fixture
def changes(sessions, outbox, clock) -> RegistrationChanges:
    return RegistrationChanges(
        sessions, outbox, code_lists(), grace_window=dt.timedelta(hours=24), clock=clock
    )


@pytest.fixture
def registry(sessions) -> AsUnitOfficers:
    return AsUnitOfficers(
        BirthRegistry(sessions, PinOutbox(sessions, LawfulIssuer(), code_lists()), code_lists())
    )


def amendment(
    entered: br.BirthRegistration, paths: list[str], reason: str = "typing error at entry"
) -> service.AmendBirthRegistrationRequest:
    return service.AmendBirthRegistrationRequest(
        request_id=str(uuid.uuid4()),
        birth_registration=entered,
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        reason=reason,
    )


def correction(
    entered: br.BirthRegistration, paths: list[str], decided: dt.date | None = None
) -> service.CorrectBirthRegistrationRequest:
    decided = decided or validation.today()  # a calendar date in Vietnam, as officers write it
    return service.CorrectBirthRegistrationRequest(
        request_id=str(uuid.uuid4()),
        birth_registration=entered,
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        decision=service.CorrectionDecision(
            number="12/QĐ-UBND",
            date=date_pb2.Date(year=decided.year, month=decided.month, day=decided.day),
        ),
    )


def as_boy(entered: br.BirthRegistration) -> br.BirthRegistration:
    changed = br.BirthRegistration()
    changed.CopyFrom(entered)
    changed.child.sex = sex_pb2.SEX_MALE
    return changed


def change_rows(sessions) -> list[RegistrationChangeRow]:
    with sessions() as session:
        return list(session.scalars(select(RegistrationChangeRow)).all())


def stored_record(sessions, name: str) -> dict:
    with sessions() as session:
        return session.scalars(
            select(BirthRegistrationRow.record).where(BirthRegistrationRow.name == name)
        ).one()


def stored_bytes(sessions, name: str) -> bytes:
    """The registration as its ``record`` column keeps it, serialised deterministically."""
    record = json_format.ParseDict(stored_record(sessions, name), br.BirthRegistration())
    return record.SerializeToString(deterministic=True)


# Amendments in the grace window -------------------------------------------------------------


def test_an_amendment_in_the_window_is_recorded_with_reason_and_digests_and_sent_on(
    registry, changes, population, sessions
):
    """The registering unit fixes a typing error; the population database gets the new name."""
    entered = registry.register_birth(request())
    fixed = br.BirthRegistration()
    fixed.CopyFrom(entered)
    fixed.child.name.given_name = "  bình "

    result = changes.amend(amendment(fixed, ["child.name"]), unit_officer(TRUC_BACH))

    assert result.registration.child.name.given_name == "BÌNH"
    assert (
        result.registration.personal_identification_number == entered.personal_identification_number
    )
    assert not result.population_update_pending
    assert result.cancelled_pin == ""
    assert population.calls[0]["paths"] == ["full_name"]
    assert population.calls[0]["pin"] == entered.personal_identification_number
    (row,) = change_rows(sessions)
    assert (row.kind, row.reason, row.paths) == (
        "amendment",
        "typing error at entry",
        ["child.name"],
    )
    assert row.delivery == Delivery.DELIVERED
    assert row.officer_id == "officer-00004"
    assert row.before_digest != row.after_digest
    assert len(row.before_digest) == len(row.after_digest) == 64


def test_the_digests_are_of_the_registration_before_and_after(registry, changes, sessions):
    """Anyone holding the registration can recompute what the amendment changed."""
    entered = registry.register_birth(request())
    before = br.BirthRegistration()
    before.ParseFromString(stored_bytes(sessions, entered.name))
    fixed = br.BirthRegistration()
    fixed.CopyFrom(entered)
    fixed.child.name.given_name = "BÌNH"

    changes.amend(amendment(fixed, ["child.name"]), unit_officer(TRUC_BACH))

    after = br.BirthRegistration()
    after.ParseFromString(stored_bytes(sessions, entered.name))
    (row,) = change_rows(sessions)
    assert (
        row.before_digest
        == hashlib.sha256(before.SerializeToString(deterministic=True)).hexdigest()
    )
    assert (
        row.after_digest == hashlib.sha256(after.SerializeToString(deterministic=True)).hexdigest()
    )


def test_an_amendment_of_sex_reestablishes_the_pin_and_keeps_the_old_one(registry, changes):
    """The PIN's G digit follows the sex: a new PIN, the old one kept as cancelled."""
    entered = registry.register_birth(request())
    old = entered.personal_identification_number

    result = changes.amend(amendment(as_boy(entered), ["child.sex"]), unit_officer(TRUC_BACH))

    new = result.registration.personal_identification_number
    assert result.cancelled_pin == old
    assert new != old
    assert pin.parse(new).sex == sex_pb2.SEX_MALE
    assert new[:3] == old[:3]
    assert list(result.registration.cancelled_personal_identification_numbers) == [old]
    assert registry.get(entered.name).personal_identification_number == new


def test_after_the_window_only_the_formal_procedure_may_change_it(
    registry, changes, clock, sessions
):
    """25 hours after entry the amendment is refused with an error naming the procedure."""
    entered = registry.register_birth(request())
    clock.advance(hours=25)
    before = stored_record(sessions, entered.name)

    with pytest.raises(FailedPrecondition) as refused:
        changes.amend(amendment(as_boy(entered), ["child.sex"]), unit_officer(TRUC_BACH))

    assert refused.value.reason == "GRACE_WINDOW_CLOSED"
    assert "CorrectBirthRegistration" in refused.value.message
    assert stored_record(sessions, entered.name) == before
    assert change_rows(sessions) == []


def test_the_window_is_what_the_configuration_says(registry, sessions, outbox, clock):
    """A 2-hour window: open at 1 h 59 min, closed at 2 h 1 min."""
    short = RegistrationChanges(
        sessions, outbox, code_lists(), grace_window=dt.timedelta(hours=2), clock=clock
    )
    entered = registry.register_birth(request())
    clock.advance(hours=1, minutes=59)
    fixed = br.BirthRegistration()
    fixed.CopyFrom(entered)
    fixed.declarant.relationship = "father"
    short.amend(amendment(fixed, ["declarant"]), unit_officer(TRUC_BACH))
    clock.advance(minutes=2)
    with pytest.raises(FailedPrecondition):
        short.amend(amendment(fixed, ["declarant"]), unit_officer(TRUC_BACH))


def test_another_unit_may_not_amend_and_is_told_of_the_formal_procedure(registry, changes):
    """Phúc Xá's officer cannot amend Trúc Bạch's registration, even in the window."""
    entered = registry.register_birth(request())

    with pytest.raises(PermissionDenied) as refused:
        changes.amend(amendment(as_boy(entered), ["child.sex"]), unit_officer(PHUC_XA))

    assert refused.value.reason == "OTHER_UNIT"
    assert "CorrectBirthRegistration" in refused.value.message


def test_a_supervisor_may_not_amend(registry, changes):
    """Read-only oversight: Hà Nội's supervisor changes nothing."""
    entered = registry.register_birth(request())
    supervisor = Officer("hanoi", PROVINCIAL_SUPERVISOR, Locality("01", "01", None))

    with pytest.raises(PermissionDenied) as refused:
        changes.amend(amendment(as_boy(entered), ["child.sex"]), supervisor)

    assert refused.value.reason == "ROLE_NOT_ALLOWED"


def test_what_decides_the_number_or_the_pin_cannot_be_changed(registry, changes, sessions):
    """Unit, procedure and nationality are not changeable paths; bad values are named."""
    entered = registry.register_birth(request())
    bad = br.BirthRegistration()
    bad.CopyFrom(entered)
    bad.child.sex = sex_pb2.SEX_UNSPECIFIED

    with pytest.raises(InvalidArgument) as refused:
        changes.amend(
            amendment(bad, ["registration_unit", "child.nationality", "child.sex"], reason=""),
            unit_officer(TRUC_BACH),
        )

    fields = {violation.field for violation in refused.value.violations}
    assert fields == {"update_mask.paths", "reason"}
    with pytest.raises(InvalidArgument) as refused:
        changes.amend(amendment(bad, ["child.sex"]), unit_officer(TRUC_BACH))
    assert {v.field for v in refused.value.violations} == {"birth_registration.child.sex"}
    assert change_rows(sessions) == []


def test_a_repeated_amendment_is_answered_once(registry, changes, population, sessions):
    """The same request_id: the first answer, one change, one call to the population side."""
    entered = registry.register_birth(request())
    sent = amendment(as_boy(entered), ["child.sex"])

    first = changes.amend(sent, unit_officer(TRUC_BACH))
    again = changes.amend(sent, unit_officer(TRUC_BACH))

    assert again == first
    assert len(change_rows(sessions)) == 1
    assert len(population.calls) == 1
    other = amendment(entered, ["child.sex"])
    other.request_id = sent.request_id
    with pytest.raises(AlreadyExists):
        changes.amend(other, unit_officer(TRUC_BACH))


def test_a_registration_without_pin_is_amended_locally(registry, changes, population, sessions):
    """A foreign child has no record in the population database: nothing is sent."""
    entered = registry.register_birth(request(registration(child_nationality="JP")))

    result = changes.amend(amendment(as_boy(entered), ["child.sex"]), unit_officer(TRUC_BACH))

    assert result.registration.child.sex == sex_pb2.SEX_MALE
    assert population.calls == []
    assert change_rows(sessions)[0].delivery == Delivery.NONE


def test_no_change_while_the_pin_is_pending(sessions, changes):
    """The PIN request is in flight: changing the data now could give a PIN that does not fit."""
    registry = AsUnitOfficers(
        BirthRegistry(
            sessions,
            PinOutbox(sessions, FailingIssuer(Unavailable("down")), code_lists()),
            code_lists(),
        )
    )
    entered = registry.register_birth(request())

    with pytest.raises(FailedPrecondition) as refused:
        changes.amend(amendment(as_boy(entered), ["child.sex"]), unit_officer(TRUC_BACH))

    assert refused.value.reason == "PIN_PENDING"


# Delivery to the population database ---------------------------------------------------------


def test_a_change_made_while_the_population_side_is_down_is_delivered_later(
    registry, changes, population, outbox, clock
):
    """Committed at once, flagged pending; the outbox re-establishes the PIN when it is back."""
    entered = registry.register_birth(request())
    population.mode = "down"

    result = changes.amend(amendment(as_boy(entered), ["child.sex"]), unit_officer(TRUC_BACH))

    assert result.population_update_pending
    assert result.registration.child.sex == sex_pb2.SEX_MALE
    assert (
        result.registration.personal_identification_number == entered.personal_identification_number
    )
    with pytest.raises(FailedPrecondition) as refused:
        changes.amend(amendment(entered, ["child.sex"]), unit_officer(TRUC_BACH))
    assert refused.value.reason == "CHANGE_PENDING"

    population.mode = "up"
    clock.advance(seconds=60)
    assert outbox.deliver_due() == 1

    stored = registry.get(entered.name)
    assert pin.parse(stored.personal_identification_number).sex == sex_pb2.SEX_MALE
    assert list(stored.cancelled_personal_identification_numbers) == [
        entered.personal_identification_number
    ]
    assert len({call["request_id"] for call in population.calls}) == 1  # the same request


def test_a_refused_change_is_not_retried_and_no_longer_blocks(
    registry, changes, population, sessions
):
    """A definitive refusal is recorded for a person to look at; the next change may go."""
    entered = registry.register_birth(request())
    population.mode = "refusing"

    result = changes.amend(amendment(as_boy(entered), ["child.sex"]), unit_officer(TRUC_BACH))

    assert not result.population_update_pending
    (row,) = change_rows(sessions)
    assert (row.delivery, row.last_error) == (Delivery.REJECTED, "FAILED_PRECONDITION")
    population.mode = "up"
    fixed = br.BirthRegistration()
    fixed.CopyFrom(entered)
    fixed.declarant.relationship = "father"
    changes.amend(amendment(fixed, ["declarant"]), unit_officer(TRUC_BACH))


# Formal corrections ---------------------------------------------------------------------------


def test_a_correction_for_a_child_under_14_is_decided_by_the_registering_commune(
    registry, changes, clock
):
    """After the window the commune corrects with a decision; the district may not."""
    entered = registry.register_birth(request())
    clock.advance(days=30)
    district = Officer("ba-dinh", 2, Locality(BA_DINH, "01", BA_DINH))

    with pytest.raises(PermissionDenied) as refused:
        changes.correct(correction(as_boy(entered), ["child.sex"]), district)
    assert refused.value.reason == "NOT_COMPETENT"

    result = changes.correct(correction(as_boy(entered), ["child.sex"]), unit_officer(TRUC_BACH))
    assert result.cancelled_pin == entered.personal_identification_number
    assert pin.parse(result.registration.personal_identification_number).sex == sex_pb2.SEX_MALE


def test_a_correction_for_a_person_of_14_or_more_is_decided_by_the_district(
    registry, changes, population
):
    """A woman born 1999: her commune may not decide it, the district of that commune may."""
    entered = registry.register_birth(request(registration(born=(1999, 11, 30))))
    renamed = br.BirthRegistration()
    renamed.CopyFrom(entered)
    renamed.child.name.CopyFrom(
        person_name_pb2.PersonName(family_name="LÊ", middle_name="THỊ", given_name="HOA")
    )

    with pytest.raises(PermissionDenied) as refused:
        changes.correct(correction(renamed, ["child.name"]), unit_officer(TRUC_BACH))
    assert "district 001" in refused.value.message

    district = Officer("ba-dinh", 2, Locality(BA_DINH, "01", BA_DINH))
    result = changes.correct(correction(renamed, ["child.name"]), district)
    assert result.registration.child.name.given_name == "HOA"
    assert population.calls[-1]["reason"].startswith("correction decision 12/QĐ-UBND")


def test_a_registration_made_by_a_district_is_corrected_by_that_district(registry, changes):
    """Foreign element: Quế Phong registered it, so Quế Phong decides, even for a child."""
    entered = registry.register_birth(
        request(
            registration(
                procedure=br.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT,
                unit_level=2,
                unit_code=QUE_PHONG,
            )
        )
    )
    with pytest.raises(PermissionDenied):
        changes.correct(correction(as_boy(entered), ["child.sex"]), unit_officer(KIM_SON))
    result = changes.correct(correction(as_boy(entered), ["child.sex"]), unit_officer(QUE_PHONG))
    assert result.registration.child.sex == sex_pb2.SEX_MALE


def test_a_correction_needs_a_decision(registry, changes, sessions):
    """No number, a date in the future: each named; nothing changes."""
    entered = registry.register_birth(request())
    sent = correction(as_boy(entered), ["child.sex"])
    sent.decision.number = ""
    tomorrow = validation.today() + dt.timedelta(days=1)
    sent.decision.date.CopyFrom(
        date_pb2.Date(year=tomorrow.year, month=tomorrow.month, day=tomorrow.day)
    )

    with pytest.raises(InvalidArgument) as refused:
        changes.correct(sent, unit_officer(TRUC_BACH))

    assert {v.field for v in refused.value.violations} == {"decision.number", "decision.date"}
    assert change_rows(sessions) == []


# Through the real gateway (acceptance 3 and 4) -------------------------------------------------


@pytest.fixture
def stack(pki, tmp_path: Path):
    running = start_stack(pki, tmp_path)
    yield running
    running.stop_all()


def _call(method, message, purpose: str):
    return method(
        message,
        timeout=10,
        metadata=((metadata.REQUEST_ID, str(uuid.uuid4())), (metadata.PURPOSE, purpose)),
    )


def _citizen(stack: Stack, number: str) -> citizen_pb2.Citizen:
    """The population database's record, as the registry may read it for a correction."""
    with stack.channel("justice") as channel:
        stub = citizen_service_pb2_grpc.CitizenServiceStub(channel)
        return _call(
            stub.GetCitizen,
            citizen_service_pb2.GetCitizenRequest(name=f"citizens/{number}"),
            "civil-status-correction",
        ).citizen


def _refusal(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    return error.code(), info.reason, error.details() or ""


def test_amendments_and_a_correction_through_the_gateway(stack: Stack):
    """Issue 6, acceptance 3, end to end through the gateway with officers' certificates."""
    codes = code_lists()
    hanoi = SAMPLES[0]
    with stack.as_officer(hanoi.unit_code) as officer:
        entered = register(officer, sample_request(hanoi, codes))
        old = entered.personal_identification_number
        stub = service_grpc.BirthRegistrationServiceStub(officer)

        fixed = br.BirthRegistration()
        fixed.CopyFrom(entered)
        fixed.child.name.given_name = "BÌNH"
        amended = _call(
            stub.AmendBirthRegistration,
            amendment(fixed, ["child.name"]),
            "civil-status-correction",
        )
        assert amended.birth_registration.child.name.given_name == "BÌNH"
        assert not amended.population_update_pending
        assert _citizen(stack, old).full_name.given_name == "BÌNH"

        corrected = _call(
            stub.CorrectBirthRegistration,
            correction(as_boy(amended.birth_registration), ["child.sex"]),
            "civil-status-correction",
        )
    new = corrected.birth_registration.personal_identification_number
    assert corrected.cancelled_personal_identification_number == old
    assert list(corrected.birth_registration.cancelled_personal_identification_numbers) == [old]
    assert pin.parse(new).sex == sex_pb2.SEX_MALE
    assert new[:3] == old[:3]
    assert new[4:6] == old[4:6]
    cancelled, current = _citizen(stack, old), _citizen(stack, new)
    assert cancelled.state == citizen_pb2.CITIZEN_STATE_CANCELLED
    assert cancelled.replaced_by == new
    assert current.state == citizen_pb2.CITIZEN_STATE_ACTIVE
    assert current.sex == sex_pb2.SEX_MALE
    assert current.birth_registration == entered.name

    with stack.as_officer(PHUC_XA) as neighbour, pytest.raises(grpc.RpcError) as refused:
        _call(
            service_grpc.BirthRegistrationServiceStub(neighbour).AmendBirthRegistration,
            amendment(corrected.birth_registration, ["child.name"]),
            "civil-status-correction",
        )
    code, reason, message = _refusal(refused.value)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_UNIT")
    assert "CorrectBirthRegistration" in message


def test_after_the_window_the_gateway_answers_with_the_formal_procedure(pki, tmp_path: Path):
    """A stack configured with no grace window at all refuses every amendment."""
    stack = start_stack(pki, tmp_path, grace_window_hours=0)
    try:
        with stack.as_officer(SAMPLES[0].unit_code) as officer:
            entered = register(officer, sample_request(SAMPLES[0], code_lists()))
            with pytest.raises(grpc.RpcError) as refused:
                _call(
                    service_grpc.BirthRegistrationServiceStub(officer).AmendBirthRegistration,
                    amendment(as_boy(entered), ["child.sex"]),
                    "civil-status-correction",
                )
    finally:
        stack.stop_all()
    code, reason, message = _refusal(refused.value)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "GRACE_WINDOW_CLOSED")
    assert "CorrectBirthRegistration" in message


def test_hanoi_supervisor_reads_hanoi_and_nothing_else(stack: Stack):
    """Issue 6, acceptance 4: read-only oversight of every unit of the province."""
    codes = code_lists()
    hanoi, danang = SAMPLES[0], SAMPLES[3]
    with stack.as_officer(hanoi.unit_code) as officer:
        in_hanoi = register(officer, sample_request(hanoi, codes))
    with stack.as_officer(danang.unit_code) as officer:
        in_danang = register(officer, sample_request(danang, codes))
    today = validation.today()
    day = date_pb2.Date(year=today.year, month=today.month, day=today.day)

    with stack.as_officer("01", "hanoi-supervisor") as supervisor:
        stub = service_grpc.BirthRegistrationServiceStub(supervisor)
        purpose = "civil-status-supervision"
        listed = _call(
            stub.ListBirthRegistrations, service.ListBirthRegistrationsRequest(), purpose
        )
        by_province = _call(
            stub.ListBirthRegistrations,
            service.ListBirthRegistrationsRequest(unit_code="01"),
            purpose,
        )
        read = _call(
            stub.GetBirthRegistration,
            service.GetBirthRegistrationRequest(name=in_hanoi.name),
            purpose,
        )
        statistics = _call(
            stub.GetRegistrationStatistics,
            service.GetRegistrationStatisticsRequest(registered_from=day, registered_to=day),
            purpose,
        )
        refusals = []
        for method, message in (
            (stub.ListBirthRegistrations, service.ListBirthRegistrationsRequest(unit_code="48")),
            (stub.GetBirthRegistration, service.GetBirthRegistrationRequest(name=in_danang.name)),
            (
                stub.GetRegistrationStatistics,
                service.GetRegistrationStatisticsRequest(
                    unit_codes=["48"], registered_from=day, registered_to=day
                ),
            ),
            (stub.RegisterBirth, sample_request(hanoi, codes)),
            (stub.AmendBirthRegistration, amendment(as_boy(in_hanoi), ["child.sex"])),
            (stub.CorrectBirthRegistration, correction(as_boy(in_hanoi), ["child.sex"])),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                _call(method, message, purpose)
            refusals.append(refused.value.code())

    assert [r.name for r in listed.birth_registrations] == [in_hanoi.name]
    assert [r.name for r in by_province.birth_registrations] == [in_hanoi.name]
    assert read.birth_registration == in_hanoi
    assert [row.unit_code for row in statistics.rows] == ["01"]
    assert statistics.rows[0].registrations == statistics.rows[0].pins_issued == 1
    assert refusals == [grpc.StatusCode.PERMISSION_DENIED] * 6
