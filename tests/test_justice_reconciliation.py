"""The registry's reconciliation rules, against an in-memory population database.

The end-to-end test (test_reconciliation.py) proves the repairable kinds through the real
stack; these cover every kind, the ones that need a decision included, on both databases.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from google.protobuf import timestamp_pb2
from justice_fixtures import MINISTRY
from sqlalchemy import select, update
from test_justice_registry import (
    KIM_SON,
    QUE_PHONG,
    TRUC_BACH,
    LawfulIssuer,
    registration,
    registry_with,
    request,
)
from test_justice_statistics import foreign_element

from justice_adapter.evidence import ExchangeRef
from justice_adapter.models import (
    BirthRegistrationRow,
    CancelledPinRow,
    RegistrationChangeRow,
    RegistrationEventRow,
)
from justice_adapter.pin_requests import registered_birth
from justice_adapter.reconciliation import Reconciler, Reconciliation
from justice_adapter.repairs import Repairs
from justice_adapter.scope import PROVINCIAL_SUPERVISOR, Locality, Officer
from lienthong import validation
from lienthong.calendar.v1 import date_pb2
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import reconciliation_service_pb2 as rc
from lienthong.errors import InvalidArgument, PermissionDenied, Unavailable
from lienthong.field_digests import field_digests
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2
from lienthong.reference import code_lists

ACTIVE = citizen_pb2.CITIZEN_STATE_ACTIVE
CANCELLED = citizen_pb2.CITIZEN_STATE_CANCELLED
ADMIN = Reconciler("officers/admin", sees=MINISTRY.sees, may_repair=True, officer_id="admin")
HANOI_SUPERVISOR = Officer("sup", PROVINCIAL_SUPERVISOR, Locality("01", "01", None))


class FakePopulation:
    """A population database of records kept as registered births, digested on request."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[int, citizen_pb2.RegisteredBirth, str, dt.datetime]] = {}
        self.down = False

    def add(
        self,
        pin: str,
        birth: citizen_pb2.RegisteredBirth,
        *,
        state: int = ACTIVE,
        replaced_by: str = "",
        created: dt.datetime | None = None,
    ) -> None:
        self.records[pin] = (state, birth, replaced_by, created or dt.datetime.now(dt.UTC))

    def list(
        self, province_code: str, created_from: dt.datetime, salt: bytes
    ) -> Iterator[citizen_service_pb2.CitizenDigest]:
        del province_code  # every record here is of the provinces the tests reconcile
        if self.down:
            raise Unavailable("population database: UNAVAILABLE")
        for pin, (state, birth, replaced_by, created) in sorted(self.records.items()):
            if created < created_from:
                continue
            record = citizen_service_pb2.CitizenDigest(
                personal_identification_number=pin,
                state=state,
                birth_registration=birth.birth_registration,
                replaced_by=replaced_by,
                intact=True,
            )
            for field, digest in field_digests(birth, salt).items():
                record.field_digests.add(field=field, sha256=digest)
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(created)
            record.create_time.CopyFrom(stamp)
            record.events.add(kind="ISSUED", exchange_id=f"issue-{pin}", leaf_index=7)
            yield record


@pytest.fixture
def population() -> FakePopulation:
    return FakePopulation()


@pytest.fixture
def registry(sessions):
    return registry_with(sessions, LawfulIssuer())


@pytest.fixture
def reconciliation(sessions, population) -> Reconciliation:
    clock = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
    return Reconciliation(sessions, population, Repairs(sessions, clock), code_lists(), clock)


def registered(registry, population, birth: br.BirthRegistration | None = None, *, mirror=True):
    """Register a birth; with ``mirror``, the population database holds its PIN's record."""
    stored = registry.register_birth(request(birth or registration()))
    if mirror and stored.personal_identification_number:
        population.add(stored.personal_identification_number, registered_birth(stored))
    return stored


def today_request(unit_code: str = "01", **fields) -> rc.ReconcileRequest:
    day = validation.today()
    date = date_pb2.Date(year=day.year, month=day.month, day=day.day)
    return rc.ReconcileRequest(
        request_id=str(uuid.uuid4()), unit_code=unit_code, start_date=date, end_date=date,
        **fields,
    )  # fmt: skip


def findings(reconciliation, reconciler=ADMIN, **fields) -> list[rc.Finding]:
    answers = list(reconciliation.run(today_request(**fields), reconciler, ExchangeRef()))
    assert answers[-1].HasField("summary")
    return [finding for answer in answers for finding in answer.findings]


def kinds(found: list[rc.Finding]) -> list[tuple[str, str]]:
    return [(f.birth_registration, rc.FindingKind.Name(f.kind)) for f in found]


def test_agreeing_databases_have_no_finding_and_the_summary_counts_both(
    reconciliation, registry, population
) -> None:
    for _ in range(3):
        registered(registry, population)
    answers = list(reconciliation.run(today_request(), ADMIN, ExchangeRef()))
    assert [list(answer.findings) for answer in answers] == [[]]
    assert answers[-1].summary.registrations == 3
    assert answers[-1].summary.citizen_records == 3
    assert answers[-1].summary.findings == 0


def test_a_record_for_a_registration_the_registry_lacks_is_registration_missing(
    reconciliation, registry, population
) -> None:
    held = registered(registry, population)
    year = validation.today().year
    orphan = registered_birth(held)
    orphan.birth_registration = f"birthRegistrations/{TRUC_BACH}-{year}-999"
    population.add("001316999999", orphan)
    elsewhere = registered_birth(held)  # a unit of Nghệ An: outside the locality reconciled
    elsewhere.birth_registration = f"birthRegistrations/{KIM_SON}-{year}-999"
    population.add("001316999998", elsewhere)
    before = registered_birth(held)  # made before the period
    before.birth_registration = f"birthRegistrations/{TRUC_BACH}-{year}-998"
    population.add("001316999997", before, created=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))

    found = findings(reconciliation)

    assert kinds(found) == [(orphan.birth_registration, "FINDING_KIND_REGISTRATION_MISSING")]
    assert found[0].repair_action == rc.REPAIR_ACTION_NONE
    assert found[0].population_personal_identification_number == "001316999999"
    assert [(e.event, e.leaf_index) for e in found[0].exchanges] == [("ISSUED", 7)]


def test_a_registration_outside_the_period_is_not_reported_missing(
    reconciliation, registry, population, sessions
) -> None:
    held = registered(registry, population)
    with sessions.begin() as session:
        session.execute(update(BirthRegistrationRow).values(registration_date=dt.date(2020, 1, 1)))
    assert findings(reconciliation) == []
    del held


def test_a_pin_held_for_a_registration_not_given_one_needs_a_decision(
    reconciliation, registry, population
) -> None:
    stored = registered(registry, population, foreign_element(QUE_PHONG, "KR"))
    assert stored.pin_status == br.PIN_STATUS_NOT_APPLICABLE
    population.add("040316000001", registered_birth(stored))

    found = findings(reconciliation, unit_code=QUE_PHONG)

    assert kinds(found) == [(stored.name, "FINDING_KIND_PIN_NOT_APPLICABLE")]
    assert found[0].repair_action == rc.REPAIR_ACTION_NONE


def test_a_cancelled_pin_still_in_force_there_is_reported(
    reconciliation, registry, population, sessions
) -> None:
    stored = registered(registry, population)
    old = "001316123456"
    # In force there, though cancelled here (the fake does not keep one PIN in force per
    # registration, as the real database does; the registry's PIN stays the one that is).
    population.add(old, registered_birth(stored))
    population.add(stored.personal_identification_number, registered_birth(stored))
    with sessions.begin() as session:
        row = session.scalars(select(BirthRegistrationRow)).one()
        change = RegistrationChangeRow(
            registration_id=row.id, request_id=str(uuid.uuid4()), request_digest="0" * 64,
            kind="correction", paths=["child.sex"], reason="decision 1", officer_id="x",
            before_digest="0" * 64, after_digest="0" * 64, citizen_paths=[], delivery="none",
            create_time=dt.datetime.now(dt.UTC),
        )  # fmt: skip
        session.add(change)
        session.flush()
        session.add(
            CancelledPinRow(
                registration_id=row.id, pin=old, replaced_by=row.pin, change_id=change.id,
                cancel_time=dt.datetime.now(dt.UTC),
            )
        )  # fmt: skip

    found = findings(reconciliation)

    assert kinds(found) == [(stored.name, "FINDING_KIND_CANCELLED_PIN_ACTIVE")]
    assert found[0].population_personal_identification_number == old
    assert found[0].repair_action == rc.REPAIR_ACTION_NONE


def test_a_cancellation_with_a_successor_is_newer_there_and_is_not_repaired(
    reconciliation, registry, population
) -> None:
    stored = registered(registry, population)
    population.add(
        stored.personal_identification_number,
        registered_birth(stored),
        state=CANCELLED,
        replaced_by="001316000001",
    )
    found = findings(reconciliation)
    assert kinds(found) == [(stored.name, "FINDING_KIND_CANCELLED_PIN_IN_USE")]
    assert found[0].repair_action == rc.REPAIR_ACTION_NONE


def test_a_registry_record_changed_outside_its_history_is_not_resent(
    reconciliation, registry, population, sessions
) -> None:
    stored = registered(registry, population)
    with sessions.begin() as session:
        row = session.scalars(select(BirthRegistrationRow)).one()
        record = dict(row.record)
        record["child"] = {**record["child"], "name": {"family_name": "SỬA", "given_name": "TAY"}}
        row.record = record

    found = findings(reconciliation)

    assert kinds(found) == [(stored.name, "FINDING_KIND_FIELD_MISMATCH")]
    assert list(found[0].fields) == ["full_name"]
    assert not found[0].registry_record_intact
    assert found[0].repair_action == rc.REPAIR_ACTION_NONE


def test_a_pin_pending_past_the_threshold_is_reported_and_not_before(
    reconciliation, registry, population, sessions
) -> None:
    stored = registered(registry, population, mirror=False)
    with sessions.begin() as session:
        session.execute(
            update(BirthRegistrationRow).values(pin=None, pin_status=br.PIN_STATUS_PENDING)
        )
    assert findings(reconciliation) == []
    with sessions.begin() as session:
        session.execute(
            update(BirthRegistrationRow).values(
                update_time=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
            )
        )
    hour = {"seconds": 3600}
    found = findings(reconciliation, pending_threshold=hour)
    assert kinds(found) == [(stored.name, "FINDING_KIND_PIN_PENDING_TOO_LONG")]
    assert findings(reconciliation, pending_threshold={"seconds": 3 * 3600}) == []


def test_repairs_are_queued_once_per_run_and_cite_the_ordering_exchange(
    reconciliation, registry, population, sessions
) -> None:
    stored = registered(registry, population)
    tampered = registered_birth(stored)
    tampered.full_name.given_name = "KHÁC"
    population.add(stored.personal_identification_number, tampered)
    request = today_request(repair=True)
    order = ExchangeRef("reconcile-exchange", 41)

    first = list(reconciliation.run(request, ADMIN, order))
    again = list(reconciliation.run(request, ADMIN, order))

    assert first[-1].summary.repairs_queued == 1
    assert first[0].findings[0].repair_queued
    assert again[-1].summary.repairs_queued == 0
    with sessions() as session:
        changes = session.scalars(
            select(RegistrationChangeRow).where(RegistrationChangeRow.kind == "repair")
        ).all()
        events = session.scalars(
            select(RegistrationEventRow).where(RegistrationEventRow.event == "REPAIRED")
        ).all()
    assert [(c.citizen_paths, c.delivery, c.officer_id) for c in changes] == [
        (["full_name"], "pending", "admin")
    ]
    assert [(e.exchange_id, e.leaf_index) for e in events] == [("reconcile-exchange", 41)]


def test_reach_and_repair_are_checked(reconciliation, registry, population) -> None:
    registered(registry, population)
    supervisor = Reconciler(
        "officers/sup", sees=HANOI_SUPERVISOR.sees, may_repair=False, officer_id="sup"
    )
    assert findings(reconciliation, supervisor) == []
    with pytest.raises(PermissionDenied):
        findings(reconciliation, supervisor, unit_code="48")
    with pytest.raises(PermissionDenied):
        findings(reconciliation, supervisor, repair=True)


def test_an_unreachable_population_database_is_unavailable(
    reconciliation, registry, population
) -> None:
    registered(registry, population)
    population.down = True
    with pytest.raises(Unavailable):
        findings(reconciliation)


def test_an_invalid_request_names_each_bad_field(reconciliation) -> None:
    request = rc.ReconcileRequest(request_id="x", unit_code="0")
    request.pending_threshold.seconds = -1
    with pytest.raises(InvalidArgument) as refused:
        list(reconciliation.run(request, ADMIN, ExchangeRef()))
    assert {v.field for v in refused.value.violations} == {
        "request_id", "unit_code", "start_date", "end_date", "pending_threshold",
    }  # fmt: skip
