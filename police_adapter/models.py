"""Tables of the population database adapter."""

from __future__ import annotations

import datetime as dt
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    Index,
    Integer,
    SmallInteger,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lienthong.db import schema_transaction
from lienthong.population.v1 import citizen_pb2


class Base(DeclarativeBase):
    """Declarative base of the adapter's tables."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CitizenRecord(Base):
    """A citizen record keyed by its PIN; a cancelled PIN keeps its row forever."""

    __tablename__ = "citizen"

    pin: Mapped[str] = mapped_column(String(12), primary_key=True)
    state: Mapped[int] = mapped_column(SmallInteger)
    birth_registration: Mapped[str] = mapped_column(String(80))
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    province_code: Mapped[str] = mapped_column(String(3))
    sex: Mapped[int] = mapped_column(SmallInteger)
    birth_year: Mapped[int] = mapped_column(Integer)
    # The RegisteredBirth as received, in the protobuf JSON mapping.
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    replaced_by: Mapped[str | None] = mapped_column(String(12))
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    update_time: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_utcnow, onupdate=_utcnow
    )

    __table_args__ = (
        # One registration has at most one PIN in force; cancelled ones stay beside it.
        Index(
            "citizen_active_registration",
            "birth_registration",
            unique=True,
            sqlite_where=text(f"state = {citizen_pb2.CITIZEN_STATE_ACTIVE}"),
            postgresql_where=text(f"state = {citizen_pb2.CITIZEN_STATE_ACTIVE}"),
        ),
    )


class PinPrefixPool(Base):
    """The numbers of one prefix (PPP G YY) not yet drawn: positions 0 .. remaining-1."""

    __tablename__ = "pin_prefix_pool"

    prefix: Mapped[str] = mapped_column(String(6), primary_key=True)
    remaining: Mapped[int] = mapped_column(Integer)


class PinPoolSwap(Base):
    """A position of a prefix's pool whose number is not the position itself.

    Together with PinPrefixPool this is a Fisher-Yates shuffle stored sparsely: only the
    positions that a draw has swapped have a row, at most one per number drawn.
    """

    __tablename__ = "pin_pool_swap"

    prefix: Mapped[str] = mapped_column(String(6), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[int] = mapped_column(Integer)


# The changes a request_id records at most once; a re-send after drift may issue or restore
# again under its original request_id.
ONCE_PER_REQUEST = "kind NOT IN ('ISSUED', 'RESTORED')"


class CitizenChange(Base):
    """One change of a citizen record: its history, never rewritten.

    Records what changed (field names and SHA-256 digests of the record before and after, not
    the values), when, through which exchange and request, and on whose behalf.
    """

    __tablename__ = "citizen_change"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pin: Mapped[str] = mapped_column(String(12), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    fields: Mapped[list[str]] = mapped_column(JSON)
    before_sha256: Mapped[str | None] = mapped_column(String(64))
    after_sha256: Mapped[str | None] = mapped_column(String(64))
    related_pin: Mapped[str | None] = mapped_column(String(12))
    # Indexed in full: the unique index below is partial, which SQLite uses for few queries.
    request_id: Mapped[str] = mapped_column(String(36), index=True)
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    exchange_id: Mapped[str | None] = mapped_column(String(64))
    # The leaf index of the exchange's request entry in the gateway's audit log.
    exchange_leaf: Mapped[int | None] = mapped_column(BigInteger)
    caller: Mapped[str | None] = mapped_column(String(2048))
    on_behalf_of: Mapped[str | None] = mapped_column(String(256))
    reason: Mapped[str | None] = mapped_column(String(500))
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)

    __table_args__ = (
        Index(
            "citizen_change_request",
            "request_id",
            "kind",
            unique=True,
            sqlite_where=text(ONCE_PER_REQUEST),
            postgresql_where=text(ONCE_PER_REQUEST),
        ),
    )


def create_schema(engine: Engine) -> None:
    """Bring the database to the latest schema with the adapter's Alembic migrations."""
    config = Config()
    config.set_main_option("script_location", "police_adapter:migrations")
    # One process at a time: replicas starting together would both migrate.
    with schema_transaction(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
