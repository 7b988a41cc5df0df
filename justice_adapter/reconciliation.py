"""Reconciliation: each registration of a locality and period against its citizen record.

The population database sends, for the province, each record's PIN, state, registration,
events and salted field digests (justice_adapter.population_digests); the registry computes
the same digests of its own registrations with the same fresh salt and compares. The
registrations are read in chunks, in registration order, and findings streamed as they come.

Per registration, at most one finding about its PIN, in this order of precedence::

    not given a PIN, yet one in force there          PIN_NOT_APPLICABLE      (decision)
    no PIN, one in force there                       PIN_NOT_RECORDED        re-send
    no PIN, pending past the threshold               PIN_PENDING_TOO_LONG    re-send
    its PIN held by another registration here too    DUPLICATE_PIN           re-send
    its PIN unknown there, another in force there    PIN_MISMATCH            re-send
    its PIN unknown there                            CITIZEN_MISSING         re-send
    its PIN cancelled there                          CANCELLED_PIN_IN_USE    re-send if the
                                                                             cancellation has
                                                                             no successor
    its PIN in force there for another registration  PIN_MISMATCH            re-send
    its PIN in force for it, fields differ           FIELD_MISMATCH          re-send fields if
                                                                             the registry's
                                                                             record is intact

and, besides, CANCELLED_PIN_ACTIVE for each PIN it keeps as cancelled that is in force
there, and REGISTRATION_MISSING for each record in force there, made in the period for a
registration of the locality the registry does not hold. A re-send of the registration
(IssuePersonalIdentificationNumber with its original request ID) lets the population
database answer with, or restore, the PIN its history says it issued.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from justice_adapter.evidence import ExchangeRef, record_digest
from justice_adapter.models import (
    BirthRegistrationRow,
    CancelledPinRow,
    RegistrationEventRow,
)
from justice_adapter.pin_requests import registered_birth
from justice_adapter.registry import unit_of_code, within
from justice_adapter.scope import Locality
from lienthong import validation
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import reconciliation_service_pb2 as rc
from lienthong.errors import PermissionDenied
from lienthong.field_digests import FIELDS, field_digests
from lienthong.population.v1 import citizen_pb2
from lienthong.stored_json import parse_stored

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from justice_adapter.population_digests import CitizenDigests
    from justice_adapter.repairs import Repairs
    from lienthong.population.v1 import citizen_service_pb2
    from lienthong.reference import CodeLists, Unit

DEFAULT_PENDING = dt.timedelta(hours=24)
MAX_PERIOD_DAYS = 366
MAX_PENDING = dt.timedelta(days=MAX_PERIOD_DAYS)
CHUNK = 1000  # registrations read, and findings sent, at a time
SALT_BYTES = 32
ACTIVE = citizen_pb2.CITIZEN_STATE_ACTIVE
NAME_PREFIX = "birthRegistrations/"


@dataclass(frozen=True)
class Reconciler:
    """Who runs a reconciliation: an officer, or a system named in the configuration."""

    name: str
    sees: Callable[[Locality], bool]
    may_repair: bool
    officer_id: str | None = None


@dataclass(frozen=True)
class Run:
    """A validated request."""

    request_id: str
    unit: Unit
    start: dt.date
    end: dt.date
    pending_threshold: dt.timedelta
    repair: bool

    def created_from(self) -> dt.datetime:
        """The first instant of the period, in UTC."""
        return dt.datetime.combine(self.start, dt.time(), validation.VIETNAM_TIME).astimezone(
            dt.UTC
        )

    def created_before(self) -> dt.datetime:
        """The first instant after the period, in UTC."""
        after = self.end + dt.timedelta(days=1)
        return dt.datetime.combine(after, dt.time(), validation.VIETNAM_TIME).astimezone(dt.UTC)


def validate_request(request: rc.ReconcileRequest, codes: CodeLists) -> Run:
    """The run a request asks for; InvalidArgument listing every bad field."""
    v = validation.Violations()
    validation.check_request_id(v, "request_id", request.request_id)
    unit = None
    if not request.unit_code:
        v.add("unit_code", "is required")
    else:
        unit = unit_of_code(codes, request.unit_code)
        if unit is None:
            v.add("unit_code", "must be a province, district or commune code of the list")
    start = _date(v, "start_date", request.start_date, present=request.HasField("start_date"))
    end = _date(v, "end_date", request.end_date, present=request.HasField("end_date"))
    if start is not None and end is not None:
        if end < start:
            v.add("end_date", "must not be before start_date")
        elif (end - start).days > MAX_PERIOD_DAYS:
            v.add("end_date", f"must be at most {MAX_PERIOD_DAYS} days after start_date")
    threshold = DEFAULT_PENDING
    if request.HasField("pending_threshold"):
        given = request.pending_threshold
        if not 1 <= given.seconds <= MAX_PENDING.total_seconds() or given.nanos < 0:
            v.add("pending_threshold", f"must be from 1 second to {MAX_PENDING.days} days")
        else:
            threshold = given.ToTimedelta()
    v.raise_if_any()
    # Each is set, or a violation was raised.
    assert unit is not None  # noqa: S101
    assert start is not None  # noqa: S101
    assert end is not None  # noqa: S101
    return Run(request.request_id, unit, start, end, threshold, request.repair)


def _date(v: validation.Violations, name: str, value: object, *, present: bool) -> dt.date | None:
    if not present:
        v.add(name, "is required")
        return None
    try:
        return dt.date(value.year, value.month, value.day)  # type: ignore[attr-defined]
    except ValueError:
        v.add(name, "must be a complete, existing calendar date")
        return None


@dataclass
class _Population:
    """The population database's records of the province, indexed."""

    by_pin: dict[str, citizen_service_pb2.CitizenDigest] = field(default_factory=dict)
    active_by_registration: dict[str, citizen_service_pb2.CitizenDigest] = field(
        default_factory=dict
    )
    matched: set[str] = field(default_factory=set)  # registrations compared

    def add(self, record: citizen_service_pb2.CitizenDigest) -> None:
        self.by_pin[record.personal_identification_number] = record
        if record.state == ACTIVE:
            self.active_by_registration[record.birth_registration] = record


@dataclass(frozen=True)
class _Registration:
    """What the registry holds of one registration, for comparison."""

    row_id: int
    name: str
    unit_code: str
    pin: str | None
    pin_status: int
    pending_since: dt.datetime
    digests: dict[str, bytes]
    intact: bool
    events: list[rc.CitedExchange]
    cancelled: list[str]


class Reconciliation:
    """Compares the registry with the population database, and queues repairs."""

    def __init__(
        self,
        reads: sessionmaker[Session],
        population: CitizenDigests,
        repairs: Repairs,
        codes: CodeLists,
        clock: Callable[[], dt.datetime],
    ) -> None:
        """Read registrations with ``reads``; ``repairs`` queues the re-sends."""
        self._reads = reads
        self._population = population
        self._repairs = repairs
        self._codes = codes
        self._clock = clock

    def run(
        self, request: rc.ReconcileRequest, reconciler: Reconciler, exchange: ExchangeRef
    ) -> Iterator[rc.ReconcileResponse]:
        """Stream the findings in batches, then the summary."""
        run = validate_request(request, self._codes)
        unit = run.unit
        if not reconciler.sees(Locality(unit.code, unit.province_code, unit.district_code)):
            raise PermissionDenied(
                f"unit {unit.code} is outside the reach of {reconciler.name}",
                reason="OUTSIDE_SCOPE",
            )
        if run.repair and not reconciler.may_repair:
            raise PermissionDenied(
                "only a ministry administrator may repair", reason="ROLE_NOT_ALLOWED"
            )
        salt = os.urandom(SALT_BYTES)
        compare_time = self._clock()
        # The population database digests its records (another process, another core) while
        # the registry digests its own; the comparison waits for both.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="population") as reader:
            reading = reader.submit(self._read_population, unit.province_code, run, salt)
            chunks = self._registrations(run, salt)
            ready = []
            for chunk in chunks:
                ready.append(chunk)
                if reading.done():
                    break
            population = reading.result()
        counts: Counter[str] = Counter()
        for chunk in itertools.chain(ready, chunks):
            counts["registrations"] += len(chunk)
            findings = self._compare(run, chunk, population, compare_time)
            counts["findings"] += len(findings)
            if run.repair:
                counts["repairs"] += self._repair(run, findings, reconciler, exchange)
            if findings:
                yield rc.ReconcileResponse(findings=findings)
        orphans = self._orphans(run, population)
        counts["findings"] += len(orphans)
        summary = rc.ReconciliationSummary(
            registrations=counts["registrations"],
            citizen_records=len(population.by_pin),
            findings=counts["findings"],
            repairs_queued=counts["repairs"],
        )
        summary.compare_time.FromDatetime(compare_time)
        for start in range(0, len(orphans), CHUNK):
            yield rc.ReconcileResponse(findings=orphans[start : start + CHUNK])
        yield rc.ReconcileResponse(summary=summary)

    def _read_population(self, province_code: str, run: Run, salt: bytes) -> _Population:
        population = _Population()
        for record in self._population.list(province_code, run.created_from(), salt):
            population.add(record)
        return population

    def _registrations(self, run: Run, salt: bytes) -> Iterator[list[_Registration]]:
        """The registrations of the run's locality and period, a chunk at a time."""
        after = 0
        columns = (
            BirthRegistrationRow.id,
            BirthRegistrationRow.name,
            BirthRegistrationRow.unit_code,
            BirthRegistrationRow.pin,
            BirthRegistrationRow.pin_status,
            BirthRegistrationRow.update_time,
            BirthRegistrationRow.record,
        )
        while True:
            with self._reads() as session:
                rows = session.execute(
                    select(*columns)
                    .where(
                        BirthRegistrationRow.id > after,
                        within(run.unit),
                        BirthRegistrationRow.registration_date >= run.start,
                        BirthRegistrationRow.registration_date <= run.end,
                    )
                    .order_by(BirthRegistrationRow.id)
                    .limit(CHUNK)
                ).all()
                if not rows:
                    return
                ids = [row.id for row in rows]
                events = _events(session, ids)
                cancelled = _cancelled(session, ids)
            after = ids[-1]
            chunk = []
            for row in rows:
                registration = parse_stored(row.record, br.BirthRegistration())
                registration.name = row.name
                history = events.get(row.id, [])
                chunk.append(
                    _Registration(
                        row_id=row.id,
                        name=row.name,
                        unit_code=row.unit_code,
                        pin=row.pin,
                        pin_status=row.pin_status,
                        pending_since=row.update_time,
                        digests=field_digests(registered_birth(registration), salt),
                        intact=bool(history)
                        and history[-1].record_digest == record_digest(row.record),
                        events=[_cited(event) for event in history if event.leaf_index is not None],
                        cancelled=cancelled.get(row.id, []),
                    )
                )
            yield chunk

    def _compare(
        self,
        run: Run,
        chunk: Sequence[_Registration],
        population: _Population,
        now: dt.datetime,
    ) -> list[rc.Finding]:
        duplicates = self._duplicated_pins([r.pin for r in chunk if r.pin is not None])
        findings = []
        for registration in chunk:
            population.matched.add(registration.name)
            finding = _pin_finding(registration, population, duplicates, run, now)
            if finding is not None:
                findings.append(finding)
            for cancelled in registration.cancelled:
                record = population.by_pin.get(cancelled)
                if record is not None and record.state == ACTIVE:
                    found = _finding(rc.FINDING_KIND_CANCELLED_PIN_ACTIVE, registration, record)
                    found.repair_action = rc.REPAIR_ACTION_NONE
                    findings.append(found)
        return findings

    def _duplicated_pins(self, pins: list[str]) -> set[str]:
        """Which of ``pins`` more than one registration of the whole registry holds."""
        if not pins:
            return set()
        with self._reads() as session:
            return {
                pin
                for pin in session.scalars(
                    select(BirthRegistrationRow.pin)
                    .where(BirthRegistrationRow.pin.in_(pins))
                    .group_by(BirthRegistrationRow.pin)
                    .having(func.count() > 1)
                )
                if pin is not None
            }

    def _orphans(self, run: Run, population: _Population) -> list[rc.Finding]:
        """Records in force, made in the period, for registrations of the locality not held."""
        start, end = run.created_from(), run.created_before()
        candidates = {}
        for name, record in population.active_by_registration.items():
            if name in population.matched:
                continue
            made = record.create_time.ToDatetime(tzinfo=dt.UTC)
            if start <= made < end and self._in_locality(name, run.unit):
                candidates[name] = record
        held: set[str] = set()
        names = sorted(candidates)
        with self._reads() as session:
            for index in range(0, len(names), CHUNK):
                held.update(
                    session.scalars(
                        select(BirthRegistrationRow.name).where(
                            BirthRegistrationRow.name.in_(names[index : index + CHUNK])
                        )
                    ).all()
                )
        findings = []
        for name in names:
            if name in held:
                continue
            record = candidates[name]
            finding = rc.Finding(
                kind=rc.FINDING_KIND_REGISTRATION_MISSING,
                birth_registration=name,
                unit_code=_unit_code_of(name),
                population_personal_identification_number=record.personal_identification_number,
                repair_action=rc.REPAIR_ACTION_NONE,
                population_record_intact=record.intact,
            )
            finding.exchanges.extend(_population_cited(record))
            findings.append(finding)
        return findings

    def _in_locality(self, name: str, unit: Unit) -> bool:
        found = unit_of_code(self._codes, _unit_code_of(name))
        if found is None:
            return False
        return unit.code in (found.code, found.district_code, found.province_code)

    def _repair(
        self,
        run: Run,
        findings: Iterable[rc.Finding],
        reconciler: Reconciler,
        exchange: ExchangeRef,
    ) -> int:
        queued = 0
        for finding in findings:
            if finding.repair_action == rc.REPAIR_ACTION_NONE:
                continue
            finding.repair_queued = self._repairs.queue(
                finding, run_request_id=run.request_id, by=reconciler.officer_id, exchange=exchange
            )
            queued += finding.repair_queued
        return queued


def _pin_finding(
    registration: _Registration,
    population: _Population,
    duplicates: set[str],
    run: Run,
    now: dt.datetime,
) -> rc.Finding | None:
    """The finding about the registration's PIN, or about its fields; None when they agree."""
    active = population.active_by_registration.get(registration.name)
    if registration.pin_status == br.PIN_STATUS_NOT_APPLICABLE:
        if active is None:
            return None
        return _finding(rc.FINDING_KIND_PIN_NOT_APPLICABLE, registration, active)
    if registration.pin is None:
        if active is not None:
            return _finding(rc.FINDING_KIND_PIN_NOT_RECORDED, registration, active, _RESEND)
        if now - registration.pending_since > run.pending_threshold:
            return _finding(rc.FINDING_KIND_PIN_PENDING_TOO_LONG, registration, None, _RESEND)
        return None
    return _held_pin_finding(registration, registration.pin, population, duplicates)


def _held_pin_finding(
    registration: _Registration, pin: str, population: _Population, duplicates: set[str]
) -> rc.Finding | None:
    """The finding about a registration that holds ``pin``."""
    active = population.active_by_registration.get(registration.name)
    held = population.by_pin.get(pin)
    if pin in duplicates and (held is None or held.birth_registration != registration.name):
        return _finding(
            rc.FINDING_KIND_DUPLICATE_PIN, registration, held or active, _RESEND, also=active
        )
    if held is None:
        kind = rc.FINDING_KIND_PIN_MISMATCH if active else rc.FINDING_KIND_CITIZEN_MISSING
        return _finding(kind, registration, active, _RESEND)
    if held.state != ACTIVE:
        # Cancelled with a successor: the population database holds a newer correction.
        repair = rc.REPAIR_ACTION_NONE if held.replaced_by else _RESEND
        return _finding(rc.FINDING_KIND_CANCELLED_PIN_IN_USE, registration, held, repair)
    if held.birth_registration != registration.name:
        return _finding(rc.FINDING_KIND_PIN_MISMATCH, registration, held, _RESEND, also=active)
    theirs = {digest.field: digest.sha256 for digest in held.field_digests}
    differing = [name for name in FIELDS if theirs.get(name) != registration.digests.get(name)]
    if not differing:
        return None
    finding = _finding(
        rc.FINDING_KIND_FIELD_MISMATCH,
        registration,
        held,
        # The registry's data is re-sent only when its record is what its history recorded.
        rc.REPAIR_ACTION_RESEND_FIELDS if registration.intact else rc.REPAIR_ACTION_NONE,
    )
    finding.fields.extend(differing)
    return finding


_RESEND = rc.REPAIR_ACTION_RESEND_REGISTRATION


def _finding(
    kind: rc.FindingKind.ValueType,
    registration: _Registration,
    record: citizen_service_pb2.CitizenDigest | None,
    repair: rc.RepairAction.ValueType = rc.REPAIR_ACTION_NONE,
    *,
    also: citizen_service_pb2.CitizenDigest | None = None,
) -> rc.Finding:
    """A finding about ``registration`` and the population's ``record`` (and ``also``)."""
    finding = rc.Finding(
        kind=kind,
        birth_registration=registration.name,
        unit_code=registration.unit_code,
        registry_personal_identification_number=registration.pin or "",
        repair_action=repair,
        registry_record_intact=registration.intact,
    )
    finding.exchanges.extend(registration.events)
    if record is not None:
        finding.population_personal_identification_number = record.personal_identification_number
        finding.population_record_intact = record.intact
        finding.exchanges.extend(_population_cited(record))
    if also is not None and also is not record:
        finding.exchanges.extend(_population_cited(also))
    return finding


def _population_cited(record: citizen_service_pb2.CitizenDigest) -> list[rc.CitedExchange]:
    return [
        rc.CitedExchange(
            side=rc.RECORD_SIDE_POPULATION,
            event=event.kind,
            exchange_id=event.exchange_id,
            leaf_index=event.leaf_index,
        )
        for event in record.events
        if event.HasField("leaf_index")
    ]


def _cited(event: RegistrationEventRow) -> rc.CitedExchange:
    return rc.CitedExchange(
        side=rc.RECORD_SIDE_REGISTRY,
        event=event.event,
        exchange_id=event.exchange_id or "",
        leaf_index=event.leaf_index or 0,
    )


def _events(session: Session, ids: list[int]) -> dict[int, list[RegistrationEventRow]]:
    """Each registration's events, oldest first."""
    found: dict[int, list[RegistrationEventRow]] = defaultdict(list)
    for event in session.scalars(
        select(RegistrationEventRow)
        .where(RegistrationEventRow.registration_id.in_(ids))
        .order_by(RegistrationEventRow.id)
    ):
        found[event.registration_id].append(event)
    return found


def _cancelled(session: Session, ids: list[int]) -> dict[int, list[str]]:
    """The PINs each registration keeps as cancelled."""
    found: dict[int, list[str]] = defaultdict(list)
    for registration_id, pin in session.execute(
        select(CancelledPinRow.registration_id, CancelledPinRow.pin)
        .where(CancelledPinRow.registration_id.in_(ids))
        .order_by(CancelledPinRow.id)
    ):
        found[registration_id].append(pin)
    return found


def _unit_code_of(name: str) -> str:
    return name.removeprefix(NAME_PREFIX).split("-")[0]
