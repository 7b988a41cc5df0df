"""The civil-status registry's domain service: register, read and list birth registrations.

A registration is committed before its PIN is requested, so that the population database
being down never loses a registration or its number: the registration then stays
PIN_STATUS_PENDING, and the outbox (justice_adapter.outbox) delivers its PIN request later.
Logs carry registration names and request ids, never personal data (Decree 13/2023).
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import re
from typing import TYPE_CHECKING, Literal, get_args

import structlog
from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from justice_adapter import paging
from justice_adapter.evidence import NO_EXCHANGE, Event, ExchangeRef, record_event
from justice_adapter.models import (
    BirthRegistrationRow,
    allocate_registration_number,
    to_message,
)
from justice_adapter.scope import (
    COMMUNE_OFFICER,
    DISTRICT_OFFICER,
    PROVINCIAL_SUPERVISOR,
    Locality,
    Officer,
    out_of_scope,
)
from justice_adapter.validation import REQUIRED_LEVEL, validate_register_birth
from lienthong import validation
from lienthong.calendar.v1 import date_pb2
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from lienthong.reference import CODE_LENGTH, CodeLists, Level, Unit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker
    from sqlalchemy.sql.elements import ColumnElement

    from justice_adapter.outbox import PinOutbox
    from lienthong.civilregistry.v1 import birth_registration_service_pb2 as service

log = structlog.get_logger(__name__)

# Procedures under which a child of Vietnamese nationality is given a PIN.
PIN_PROCEDURES = frozenset(
    {br.REGISTRATION_PROCEDURE_FIRST_REGISTRATION, br.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT}
)
# Set by the registry, never taken from a request.
OutputOnlyField = Literal[
    "name",
    "registration_number",
    "registration_date",
    "personal_identification_number",
    "pin_status",
    "registering_officer",
    "create_time",
    "update_time",
]
OUTPUT_ONLY: tuple[OutputOnlyField, ...] = get_args(OutputOnlyField)
NAME_PATTERN = "birthRegistrations/{unit_code}-{year}-{number}"
NAME_REGEX = re.compile(r"birthRegistrations/([0-9]{3}|[0-9]{5})-[0-9]{4}-[1-9][0-9]{0,8}")
_LEVEL_OF_LENGTH = {length: level for level, length in CODE_LENGTH.items()}


class BirthRegistry:
    """Birth registrations of every unit, in one database."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        outbox: PinOutbox,
        codes: CodeLists,
        *,
        reads: sessionmaker[Session] | None = None,
    ) -> None:
        """Use ``sessions`` for the database, ``outbox`` for PINs, ``codes`` to validate.

        ``outbox`` works on the same database; its worker delivers what the immediate
        attempt of ``register_birth`` could not.
        """
        self._sessions = sessions
        self._outbox = outbox
        self._codes = codes
        # Reads that need no lock (lienthong.db.read_session_factory); the same by default.
        self._reads = reads or sessions

    def register_birth(
        self,
        request: service.RegisterBirthRequest,
        officer: Officer,
        exchange: ExchangeRef = NO_EXCHANGE,
    ) -> br.BirthRegistration:
        """Enter a registration, numbered in its unit and year, and request its PIN if due.

        ``officer`` must be a commune or district officer of the registering unit;
        ``exchange`` is the gateway exchange of the call, kept as the registration's evidence.

        The PIN is asked for at once, so that the common case does not wait for the outbox's
        worker; when that fails the registration is returned PIN_STATUS_PENDING and the
        worker retries. A repeat of a request_id returns the stored registration as it now
        stands (AIP-155); the request_id reused with other content raises AlreadyExists.
        """
        officer.require_writer()
        validate_register_birth(request, self._codes)
        officer.require_writer_for(request.birth_registration.registration_unit.code)
        submitted = _without_output_only(request.birth_registration)
        digest = hashlib.sha256(submitted.SerializeToString(deterministic=True)).hexdigest()
        stored = self._stored_answer(request.request_id, digest)
        if stored is not None:
            return stored
        try:
            lease_end = self._outbox.claim_on_entry()
            registration = self._insert(
                request.request_id, digest, submitted, (officer, exchange), lease_end
            )
        except IntegrityError:
            # A concurrent call with the same request_id committed first: answer as it did.
            stored = self._stored_answer(request.request_id, digest)
            if stored is None:
                raise
            return stored
        log.info(
            "birth_registered",
            birth_registration=registration.name,
            request_id=request.request_id,
            pin_status=br.PinStatus.Name(registration.pin_status),
        )
        if registration.pin_status == br.PIN_STATUS_PENDING:
            return self._outbox.deliver_new(registration, request.request_id, lease_end)
        return registration

    def get(self, name: str, officer: Officer) -> br.BirthRegistration:
        """The registration named ``name``, within ``officer``'s reach; NotFound when none."""
        if not NAME_REGEX.fullmatch(name):
            raise InvalidArgument([FieldViolation("name", f"must be {NAME_PATTERN}")])
        # Whether it exists is itself outside the reach of an officer of another locality.
        unit = unit_of_code(self._codes, name.removeprefix("birthRegistrations/").split("-")[0])
        if unit is not None and not officer.sees(
            Locality(unit.code, unit.province_code, unit.district_code)
        ):
            raise out_of_scope(officer, name)
        with self._reads() as session:
            row = session.scalars(
                select(BirthRegistrationRow).where(BirthRegistrationRow.name == name)
            ).one_or_none()
            if row is None:
                raise NotFound(f"{name} does not exist")
            if not officer.sees(locality_of(row)):
                raise out_of_scope(officer, name)
            return to_message(row)

    def list(
        self, request: service.ListBirthRegistrationsRequest, officer: Officer
    ) -> tuple[builtins.list[br.BirthRegistration], str]:
        """One page of the registrations within ``officer``'s reach, and the next page's token.

        Pages follow registration order.
        """
        v = validation.Violations()
        page_size = paging.page_size(v, request.page_size)
        after = paging.decode_page_token(v, request.page_token)
        conditions = self._filters(v, request, officer)
        conditions.extend(reach_of(officer))
        v.raise_if_any()
        query = (
            select(BirthRegistrationRow)
            .where(BirthRegistrationRow.id > after, *conditions)
            .order_by(BirthRegistrationRow.id)
            .limit(page_size + 1)  # one more tells whether another page follows
        )
        with self._reads() as session:
            rows = session.scalars(query).all()
            page = [to_message(row) for row in rows[:page_size]]
            more = len(rows) > page_size
            return page, paging.encode_page_token(rows[page_size - 1].id) if more else ""

    def _stored_answer(self, request_id: str, digest: str) -> br.BirthRegistration | None:
        with self._reads() as session:
            row = session.scalars(
                select(BirthRegistrationRow).where(BirthRegistrationRow.request_id == request_id)
            ).one_or_none()
            if row is None:
                return None
            if row.request_digest != digest:
                raise AlreadyExists(
                    "request_id was already used for a different registration",
                    reason="REQUEST_ID_REUSED",
                )
            return to_message(row)

    def _insert(
        self,
        request_id: str,
        digest: str,
        submitted: br.BirthRegistration,
        by: tuple[Officer, ExchangeRef],
        lease_end: dt.datetime,
    ) -> br.BirthRegistration:
        officer, exchange = by
        record = br.BirthRegistration()
        record.CopyFrom(submitted)
        normalise_names(record)
        record.registering_officer = officer.resource_name
        unit = self._unit_of(record)
        vietnamese = validation.is_vietnamese(record.child.nationality)
        due = vietnamese and record.procedure in PIN_PROCEDURES
        today = validation.today()
        now = dt.datetime.now(dt.UTC)
        # One transaction: the number is given if and only if the registration is stored.
        with self._sessions.begin() as session:
            number = allocate_registration_number(session, unit.code, today.year)
            row = BirthRegistrationRow(
                name=f"birthRegistrations/{unit.code}-{today.year}-{number}",
                request_id=request_id,
                request_digest=digest,
                procedure=record.procedure,
                unit_level=unit.level,
                unit_code=unit.code,
                province_code=unit.province_code,
                district_code=unit.district_code,
                registration_year=today.year,
                registration_number=number,
                registration_date=today,
                record=json_format.MessageToDict(record, preserving_proto_field_name=True),
                child_nationality_vn=vietnamese,
                pin=None,
                pin_status=br.PIN_STATUS_PENDING if due else br.PIN_STATUS_NOT_APPLICABLE,
                pin_attempts=0,
                # The outbox entry of the PIN request, committed with the rest and held by
                # this call's immediate attempt (the worker's if this process dies).
                pin_next_attempt_at=lease_end if due else None,
                create_time=now,
                update_time=now,
            )
            session.add(row)
            session.flush()
            record_event(
                session,
                registration_id=row.id,
                event=Event.REGISTERED,
                exchange=exchange,
                record=row.record,
            )
            return to_message(row)

    def _unit_of(self, registration: br.BirthRegistration) -> Unit:
        unit = registration.registration_unit
        found = self._codes.unit(Level(unit.level), unit.code)
        if found is None:  # validate_register_birth has checked it exists
            raise LookupError(f"unit {unit.code} is not in the code list")
        return found

    def _unit_filter(
        self, v: validation.Violations, unit_code: str, officer: Officer
    ) -> builtins.list[ColumnElement[bool]]:
        """Registrations within ``unit_code``, which must be within ``officer``'s reach."""
        if not unit_code:
            return []
        unit = unit_of_code(self._codes, unit_code)
        if unit is None:
            v.add("unit_code", "must be a province, district or commune code of the list")
            return []
        if not officer.sees(Locality(unit.code, unit.province_code, unit.district_code)):
            raise out_of_scope(officer, f"unit {unit.code}")
        return [within(unit)]

    def _filters(
        self,
        v: validation.Violations,
        request: service.ListBirthRegistrationsRequest,
        officer: Officer,
    ) -> builtins.list[ColumnElement[bool]]:
        conditions = self._unit_filter(v, request.unit_code, officer)
        if request.procedure:
            if request.procedure not in REQUIRED_LEVEL:
                v.add("procedure", "is not a registration procedure")
            conditions.append(BirthRegistrationRow.procedure == request.procedure)
        if request.pin_status:
            if request.pin_status not in br.PinStatus.values():
                v.add("pin_status", "is not a PIN status")
            conditions.append(BirthRegistrationRow.pin_status == request.pin_status)
        start = filter_date(
            v,
            "registered_from",
            request.registered_from,
            present=request.HasField("registered_from"),
        )
        end = filter_date(
            v, "registered_to", request.registered_to, present=request.HasField("registered_to")
        )
        if start is not None:
            conditions.append(BirthRegistrationRow.registration_date >= start)
        if end is not None:
            conditions.append(BirthRegistrationRow.registration_date <= end)
        if start is not None and end is not None and start > end:
            v.add("registered_to", "must not be before registered_from")
        return conditions


def _without_output_only(registration: br.BirthRegistration) -> br.BirthRegistration:
    submitted = br.BirthRegistration()
    submitted.CopyFrom(registration)
    for field in OUTPUT_ONLY:
        submitted.ClearField(field)
    return submitted


def normalise_names(registration: br.BirthRegistration) -> None:
    """Store names as the register writes them: NFC, upper case, single spaces."""
    holders = (
        registration.child,
        registration.father,
        registration.mother,
        registration.declarant,
    )
    for holder in holders:
        # An undetermined parent has no name; touching it would make one appear.
        if holder.HasField("name"):
            name = holder.name
            name.family_name = validation.normalise_name_part(name.family_name)
            name.middle_name = validation.normalise_name_part(name.middle_name)
            name.given_name = validation.normalise_name_part(name.given_name)


def filter_date(
    v: validation.Violations,
    field: str,
    date: date_pb2.Date,
    *,
    present: bool,
    required: bool = False,
) -> dt.date | None:
    """The date of a filter field; None when absent (a violation too when ``required``)."""
    if not present:
        if required:
            v.add(field, "is required")
        return None
    try:
        return dt.date(date.year, date.month, date.day)
    except ValueError:
        v.add(field, "must be a complete, existing calendar date")
        return None


def unit_of_code(codes: CodeLists, code: str) -> Unit | None:
    """The unit of a statistics office code of any level, told by its length."""
    level = _LEVEL_OF_LENGTH.get(len(code))
    return None if level is None else codes.unit(level, code)


def within(unit: Unit) -> ColumnElement[bool]:
    """Registrations made by ``unit`` or by any unit inside it."""
    column = {
        Level.PROVINCE: BirthRegistrationRow.province_code,
        Level.DISTRICT: BirthRegistrationRow.district_code,
        Level.COMMUNE: BirthRegistrationRow.unit_code,
    }[unit.level]
    return column == unit.code


def locality_of(row: BirthRegistrationRow) -> Locality:
    """Where a registration lies: its unit, district and province."""
    return Locality(row.unit_code, row.province_code, row.district_code)


def reach_of(officer: Officer) -> builtins.list[ColumnElement[bool]]:
    """The conditions that keep registrations within ``officer``'s reach."""
    unit = officer.unit
    if unit is None:
        return []  # a ministry administrator: every locality
    column: dict[int, ColumnElement[bool]] = {
        PROVINCIAL_SUPERVISOR: BirthRegistrationRow.province_code == unit.province_code,
        DISTRICT_OFFICER: BirthRegistrationRow.district_code == unit.district_code,
        COMMUNE_OFFICER: BirthRegistrationRow.unit_code == unit.unit_code,
    }
    return [column[officer.role]]
