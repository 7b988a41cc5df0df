"""Registration statistics as the 2016 pilot reported them, per locality and period.

One row per locality: registrations; first registrations given a PIN; those not given one,
for foreign nationality and as re-registrations; those still pending; and the active officer
accounts with the registering units they belong to (the pilot's "1,594 officers in 1,276
units"; supervisors' and administrators' accounts register nothing and are not counted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import case, func, select

from justice_adapter.models import BirthRegistrationRow, OfficerRow
from justice_adapter.registry import filter_date, reach_of, unit_of_code, within
from justice_adapter.scope import (
    COMMUNE_OFFICER,
    DISTRICT_OFFICER,
    Locality,
    Officer,
    out_of_scope,
)
from lienthong import validation
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import birth_registration_service_pb2 as service
from lienthong.civilregistry.v1 import officer_pb2
from lienthong.reference import Level, Unit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker
    from sqlalchemy.sql.elements import ColumnElement

    from lienthong.reference import CodeLists

MAX_UNIT_CODES = 100
_COUNTED = (
    "registrations",
    "pins_issued",
    "not_applicable_foreign",
    "not_applicable_re_registration",
    "pins_pending",
    "officer_accounts",
    "units",
)


class RegistrationStatistics:
    """Counts registrations and accounts for the localities a caller may see."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        codes: CodeLists,
        *,
        reads: sessionmaker[Session] | None = None,
    ) -> None:
        """Count in the registry's database; ``codes`` resolves locality codes."""
        self._sessions = sessions
        self._codes = codes
        # Reads that need no lock (lienthong.db.read_session_factory); the same by default.
        self._reads = reads or sessions

    def report(
        self, request: service.GetRegistrationStatisticsRequest, officer: Officer
    ) -> service.GetRegistrationStatisticsResponse:
        """One row per requested locality (or per province in reach), and their total."""
        v = validation.Violations()
        start = filter_date(
            v,
            "registered_from",
            request.registered_from,
            present=request.HasField("registered_from"),
            required=True,
        )
        end = filter_date(
            v,
            "registered_to",
            request.registered_to,
            present=request.HasField("registered_to"),
            required=True,
        )
        if start is not None and end is not None and start > end:
            v.add("registered_to", "must not be before registered_from")
        units = self._units(v, list(request.unit_codes))
        v.raise_if_any()
        if start is None or end is None:  # a violation was raised otherwise
            raise AssertionError
        for unit in units:
            if not officer.sees(Locality(unit.code, unit.province_code, unit.district_code)):
                raise out_of_scope(officer, f"unit {unit.code}")
        period = BirthRegistrationRow.registration_date.between(start, end)
        response = service.GetRegistrationStatisticsResponse()
        with self._reads() as session:
            if not units:
                units = self._provinces_in_reach(session, officer)
            for unit in units:
                row = response.rows.add(unit_code=unit.code)
                self._count(session, row, [within(unit), period, *reach_of(officer)], unit)
        for name in _COUNTED:
            setattr(response.total, name, sum(getattr(row, name) for row in response.rows))
        return response

    def _units(self, v: validation.Violations, codes: list[str]) -> list[Unit]:
        if len(codes) > MAX_UNIT_CODES:
            v.add("unit_codes", f"must name at most {MAX_UNIT_CODES} localities")
            return []
        units: list[Unit] = []
        for index, code in enumerate(codes):
            unit = unit_of_code(self._codes, code)
            if unit is None:
                v.add(f"unit_codes[{index}]", "must be a province, district or commune code")
            elif any(_overlap(unit, other) for other in units):
                v.add(f"unit_codes[{index}]", "overlaps another locality of the request")
            else:
                units.append(unit)
        return units

    def _provinces_in_reach(self, session: Session, officer: Officer) -> list[Unit]:
        """Without localities asked for: the officer's own unit, or every province in use."""
        if officer.unit is not None and officer.role in (COMMUNE_OFFICER, DISTRICT_OFFICER):
            level = Level.COMMUNE if officer.role == COMMUNE_OFFICER else Level.DISTRICT
            own = self._codes.unit(level, officer.unit.unit_code)
            return [] if own is None else [own]
        if officer.unit is not None:
            codes = {officer.unit.province_code}
        else:
            registered = session.scalars(select(BirthRegistrationRow.province_code).distinct())
            staffed = session.scalars(
                select(OfficerRow.province_code).where(OfficerRow.province_code.is_not(None))
            ).all()
            codes = {*registered, *(code for code in staffed if code is not None)}
        provinces = (self._codes.unit(Level.PROVINCE, code) for code in sorted(codes))
        return [province for province in provinces if province is not None]

    @staticmethod
    def _count(
        session: Session,
        row: service.RegistrationStatistics,
        where: list[ColumnElement[bool]],
        unit: Unit,
    ) -> None:
        status, procedure = BirthRegistrationRow.pin_status, BirthRegistrationRow.procedure
        re_registration = br.REGISTRATION_PROCEDURE_RE_REGISTRATION
        counts = session.execute(
            select(
                func.count(),
                _number(status == br.PIN_STATUS_ISSUED),
                _number((status == br.PIN_STATUS_NOT_APPLICABLE) & (procedure != re_registration)),
                _number((status == br.PIN_STATUS_NOT_APPLICABLE) & (procedure == re_registration)),
                _number(status == br.PIN_STATUS_PENDING),
            ).where(*where)
        ).one()
        (
            row.registrations,
            row.pins_issued,
            row.not_applicable_foreign,
            row.not_applicable_re_registration,
            row.pins_pending,
        ) = (int(count or 0) for count in counts)
        column = {
            Level.PROVINCE: OfficerRow.province_code,
            Level.DISTRICT: OfficerRow.district_code,
            Level.COMMUNE: OfficerRow.unit_code,
        }[unit.level]
        staffed = session.scalars(
            select(OfficerRow.unit_code).where(
                column == unit.code,
                OfficerRow.state == officer_pb2.OFFICER_STATE_ACTIVE,
                OfficerRow.role.in_((COMMUNE_OFFICER, DISTRICT_OFFICER)),
            )
        ).all()
        row.officer_accounts = len(staffed)
        row.units = len(set(staffed))


def _number(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.sum(case((condition, 1), else_=0))


def _overlap(one: Unit, other: Unit) -> bool:
    def contains(outer: Unit, inner: Unit) -> bool:
        return outer.code in (inner.code, inner.province_code, inner.district_code) and (
            outer.level <= inner.level
        )

    return contains(one, other) or contains(other, one)
