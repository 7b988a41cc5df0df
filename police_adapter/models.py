"""Tables of the population database adapter."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, Index, Integer, SmallInteger, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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


def create_schema(engine: Engine) -> None:
    """Create the tables that do not exist yet (Alembic migrations come with issue 5)."""
    Base.metadata.create_all(engine)
