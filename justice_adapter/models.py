"""The registry's tables, their mapping to messages, and registration numbering.

Both work on SQLite (development, tests) and PostgreSQL (production). The schema is created
with ``create_schema``; Alembic migrations take over in a later issue.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import json_format
from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from lienthong.calendar.v1 import date_pb2
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.db import schema_transaction

UNIT_CODE = 5  # the longest statistics office code, a commune's
PIN_LENGTH = 12
SHA256_HEX = 64
NAME_LENGTH = 64  # "birthRegistrations/" + unit + year + number fits with room to spare
REQUEST_ID_LENGTH = 36  # a UUID in its canonical text form
ERROR_CODE_LENGTH = 32  # the longest gRPC code name, DEADLINE_EXCEEDED, with room to spare
OFFICER_ID_LENGTH = 63
IDENTITY_LENGTH = 2048  # the longest SPIFFE ID
DECISION_NUMBER_LENGTH = 100


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL keeps the offset (timestamptz); SQLite has no such type, so values are
    converted to UTC before they are stored and given their UTC zone back when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Refuse naive values, which would be read back in an unknown zone."""
        del dialect
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        """Return every value in UTC, with its zone."""
        del dialect
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """The declarative base of the registry's tables."""


class BirthRegistrationRow(Base):
    """One entry of a unit's birth register.

    The full registration is kept as JSON in ``record``; the columns beside it are what the
    registry searches, orders, numbers and updates by.

    A row with ``PIN_STATUS_PENDING`` is also the outbox entry of its PIN request
    (justice_adapter.outbox): it commits in the registration's own transaction, so a PIN
    request can be lost only with the registration itself. ``pin_next_attempt_at`` is set
    exactly while the PIN is pending.
    """

    __tablename__ = "birth_registration"
    __table_args__ = (
        UniqueConstraint(
            "unit_code",
            "registration_year",
            "registration_number",
            name="uq_birth_registration_number",
        ),
        # Listing pages in id order after a filter by province, district or date.
        Index("ix_birth_registration_province", "province_code", "id"),
        Index("ix_birth_registration_district", "district_code", "id"),
        Index("ix_birth_registration_date", "registration_date", "id"),
        # The outbox's look-up of due PIN requests; NULL for every row not pending.
        Index("ix_birth_registration_pin_due", "pin_next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), unique=True)
    # SHA-256 of the request's registration: tells a repeat from a request_id reused.
    request_digest: Mapped[str] = mapped_column(String(SHA256_HEX))
    procedure: Mapped[int] = mapped_column(Integer)
    unit_level: Mapped[int] = mapped_column(Integer)
    unit_code: Mapped[str] = mapped_column(String(UNIT_CODE))
    province_code: Mapped[str] = mapped_column(String(2))
    district_code: Mapped[str | None] = mapped_column(String(3))
    registration_year: Mapped[int] = mapped_column(Integer)
    registration_number: Mapped[int] = mapped_column(Integer)
    registration_date: Mapped[dt.date] = mapped_column(Date)
    record: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    child_nationality_vn: Mapped[bool]
    pin: Mapped[str | None] = mapped_column(String(PIN_LENGTH))
    pin_status: Mapped[int] = mapped_column(Integer)
    # PIN requests sent for this registration whose outcome was recorded.
    pin_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the outbox may next send the PIN request; while one is in flight, the end of its
    # lease. NULL once the PIN is issued, or when none is due.
    pin_next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    # The gRPC code name of the last failed attempt, never its message: that may quote data.
    pin_last_error: Mapped[str | None] = mapped_column(String(ERROR_CODE_LENGTH))
    create_time: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    # The PINs an amendment or correction cancelled, oldest first; loaded with the row.
    cancelled_pins: Mapped[list[CancelledPinRow]] = relationship(
        lazy="selectin", order_by="CancelledPinRow.id"
    )


class CancelledPinRow(Base):
    """A PIN of a registration that the population database cancelled and replaced."""

    __tablename__ = "cancelled_pin"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    registration_id: Mapped[int] = mapped_column(ForeignKey("birth_registration.id"), index=True)
    # A PIN is issued once: a cancelled one can never come back to any registration.
    pin: Mapped[str] = mapped_column(String(PIN_LENGTH), unique=True)
    replaced_by: Mapped[str] = mapped_column(String(PIN_LENGTH))
    change_id: Mapped[int] = mapped_column(ForeignKey("registration_change.id"))
    cancel_time: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class RegistrationChangeRow(Base):
    """One amendment or formal correction of a registration, and its delivery.

    The row commits with the change itself. When the registration holds a PIN and a changed
    field is one the population database keeps, the row is also the outbox entry of the
    UpdateCitizen call (justice_adapter.change_delivery): ``delivery`` is PENDING and
    ``next_attempt_at`` set until it is delivered. ``reason`` is the officer's text and may
    quote personal data: it stays in this database and is never logged.
    """

    __tablename__ = "registration_change"
    __table_args__ = (Index("ix_registration_change_due", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    registration_id: Mapped[int] = mapped_column(ForeignKey("birth_registration.id"), index=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), unique=True)
    request_digest: Mapped[str] = mapped_column(String(SHA256_HEX))
    kind: Mapped[str] = mapped_column(String(16))  # "amendment" or "correction"
    paths: Mapped[list[str]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    decision_number: Mapped[str | None] = mapped_column(String(DECISION_NUMBER_LENGTH))
    decision_date: Mapped[dt.date | None] = mapped_column(Date)
    officer_id: Mapped[str] = mapped_column(String(OFFICER_ID_LENGTH))
    # SHA-256 of the registration record (deterministic serialisation) before and after.
    before_digest: Mapped[str] = mapped_column(String(SHA256_HEX))
    after_digest: Mapped[str] = mapped_column(String(SHA256_HEX))
    # Paths of population.v1.Citizen to send; empty when nothing goes to the population side.
    citizen_paths: Mapped[list[str]] = mapped_column(JSON)
    delivery: Mapped[str] = mapped_column(String(16))  # see change_delivery.Delivery
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(String(ERROR_CODE_LENGTH))
    cancelled_pin: Mapped[str | None] = mapped_column(String(PIN_LENGTH))
    create_time: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    deliver_time: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class RegistrationEventRow(Base):
    """An exchange that created or changed a registration: the registry's side of the evidence.

    ``leaf_index`` is the exchange's request entry in the gateway's audit log, as the gateway
    said on its mTLS leg; ``record_digest`` is the SHA-256 of the stored record after the
    event (justice_adapter.evidence.record_digest), so that a record changed outside the
    recorded path shows. A repair's ``request_id`` makes it happen once per run.
    """

    __tablename__ = "registration_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    registration_id: Mapped[int] = mapped_column(ForeignKey("birth_registration.id"), index=True)
    event: Mapped[str] = mapped_column(String(16))  # see justice_adapter.evidence.Event
    exchange_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_LENGTH))
    leaf_index: Mapped[int | None] = mapped_column(BigInteger)
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_LENGTH), unique=True)
    record_digest: Mapped[str] = mapped_column(String(SHA256_HEX))
    # For a repair: the PIN the registration held before, which the repair may replace.
    previous_pin: Mapped[str | None] = mapped_column(String(PIN_LENGTH))
    create_time: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class OfficerRow(Base):
    """A civil-status officer's account; ``identity`` is its certificate's SPIFFE ID."""

    __tablename__ = "officer"
    __table_args__ = (
        Index("ix_officer_province", "province_code", "id"),
        Index("ix_officer_district", "district_code", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    officer_id: Mapped[str] = mapped_column(String(OFFICER_ID_LENGTH), unique=True)
    identity: Mapped[str] = mapped_column(String(IDENTITY_LENGTH), unique=True)
    # NULL for accounts made from the configuration, which have no request.
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_LENGTH), unique=True)
    request_digest: Mapped[str | None] = mapped_column(String(SHA256_HEX))
    display_name: Mapped[dict[str, Any]] = mapped_column(JSON)
    role: Mapped[int] = mapped_column(Integer)
    # NULL for a ministry administrator, whose account belongs to no unit.
    unit_level: Mapped[int | None] = mapped_column(Integer)
    unit_code: Mapped[str | None] = mapped_column(String(UNIT_CODE))
    province_code: Mapped[str | None] = mapped_column(String(2))
    district_code: Mapped[str | None] = mapped_column(String(3))
    state: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class RegistrationCounter(Base):
    """The last registration number given by a unit in a calendar year."""

    __tablename__ = "registration_counter"

    unit_code: Mapped[str] = mapped_column(String(UNIT_CODE), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer)


def allocate_registration_number(session: Session, unit_code: str, year: int) -> int:
    """The next registration number of ``unit_code`` in ``year``, from 1, without gaps.

    Call it in the transaction that inserts the registration: the counter row stays locked
    until that transaction ends, so a rollback gives the number back and concurrent
    registrations wait for each other. (PostgreSQL locks the row with SELECT ... FOR UPDATE;
    SQLite ignores it, but lienthong.db begins every transaction IMMEDIATE, which serialises
    writers.)
    """
    locked = (
        select(RegistrationCounter)
        .where(RegistrationCounter.unit_code == unit_code, RegistrationCounter.year == year)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    counter = session.scalars(locked).one_or_none()
    if counter is None:
        try:
            # A savepoint, so that losing the race to create the row keeps our transaction.
            with session.begin_nested():
                session.add(RegistrationCounter(unit_code=unit_code, year=year, last_number=0))
        except IntegrityError:
            pass  # another transaction created it first: lock theirs below
        counter = session.scalars(locked).one()
    counter.last_number += 1
    session.flush()
    return counter.last_number


def to_message(row: BirthRegistrationRow) -> br.BirthRegistration:
    """The registration a row stores, with its output-only fields set from the columns."""
    registration = json_format.ParseDict(row.record, br.BirthRegistration())
    registration.name = row.name
    registration.registration_number = row.registration_number
    date = row.registration_date
    registration.registration_date.CopyFrom(
        date_pb2.Date(year=date.year, month=date.month, day=date.day)
    )
    registration.personal_identification_number = row.pin or ""
    registration.pin_status = br.PinStatus.ValueType(row.pin_status)
    registration.cancelled_personal_identification_numbers.extend(
        cancelled.pin for cancelled in row.cancelled_pins
    )
    registration.create_time.FromDatetime(row.create_time)
    registration.update_time.FromDatetime(row.update_time)
    return registration


def create_schema(engine: Engine) -> None:
    """Create the tables that do not exist yet, one process at a time."""
    with schema_transaction(engine) as connection:
        Base.metadata.create_all(connection)
