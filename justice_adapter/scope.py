"""Who an officer is, and what their role and unit let them see and do.

Pure rules, no database: the registry, the directory of accounts and the statistics all ask
an ``Officer`` the same questions. Roles (OfficerRole in the contract):

    commune officer       registers (first registration, re-registration) and amends for
                          its commune; reads its commune; decides corrections for persons
                          under 14 registered there
    district officer      registers with a foreign element and amends for its district unit;
                          reads every unit of its district; decides corrections for persons of
                          14 and over registered in its district, and any of its own unit's
    provincial supervisor reads every registration and statistic of its province; writes
                          nothing (Hà Nội's request in the 2016 pilot)
    ministry administrator manages accounts; reads every registration and statistic, the
                          ministry being the civil-status authority over every province;
                          writes no registration
"""

from __future__ import annotations

from dataclasses import dataclass

from lienthong.civilregistry.v1 import officer_pb2
from lienthong.errors import PermissionDenied
from lienthong.reference import Level

COMMUNE_OFFICER = officer_pb2.OFFICER_ROLE_COMMUNE_OFFICER
DISTRICT_OFFICER = officer_pb2.OFFICER_ROLE_DISTRICT_OFFICER
PROVINCIAL_SUPERVISOR = officer_pb2.OFFICER_ROLE_PROVINCIAL_SUPERVISOR
MINISTRY_ADMINISTRATOR = officer_pb2.OFFICER_ROLE_MINISTRY_ADMINISTRATOR

# The level of the unit an account of each role belongs to; None: no unit.
ROLE_LEVEL: dict[int, Level | None] = {
    COMMUNE_OFFICER: Level.COMMUNE,
    DISTRICT_OFFICER: Level.DISTRICT,
    PROVINCIAL_SUPERVISOR: Level.PROVINCE,
    MINISTRY_ADMINISTRATOR: None,
}


@dataclass(frozen=True)
class Locality:
    """Where a registration or an account lies: its unit and the units above it."""

    unit_code: str
    province_code: str
    district_code: str | None


@dataclass(frozen=True)
class Officer:
    """The authenticated caller: an active account with its role and unit."""

    officer_id: str
    role: int
    unit: Locality | None

    @property
    def resource_name(self) -> str:
        """The account's resource name, "officers/{officer_id}"."""
        return f"officers/{self.officer_id}"

    def sees(self, place: Locality) -> bool:
        """Whether registrations and accounts at ``place`` are within this officer's reach."""
        if self.role == MINISTRY_ADMINISTRATOR:
            return True
        unit = self.unit
        if unit is None:
            return False
        if self.role == PROVINCIAL_SUPERVISOR:
            return place.province_code == unit.province_code
        if self.role == DISTRICT_OFFICER:
            return place.district_code == unit.district_code
        return place.unit_code == unit.unit_code

    def require_writer(self) -> None:
        """Refuse a read-only role: supervisors and administrators change no registration."""
        if self.role not in (COMMUNE_OFFICER, DISTRICT_OFFICER):
            raise PermissionDenied(
                "only commune and district officers change registrations; this account is "
                "read-only for them",
                reason="ROLE_NOT_ALLOWED",
            )

    def require_writer_for(self, unit_code: str) -> None:
        """Refuse unless this officer registers or amends for the unit ``unit_code``."""
        self.require_writer()
        if self.unit is None or self.unit.unit_code != unit_code:
            raise PermissionDenied(
                f"{self.resource_name} belongs to another unit than {unit_code}",
                reason="OTHER_UNIT",
            )

    def require_administrator(self) -> None:
        """Refuse unless this officer is a ministry administrator."""
        if self.role != MINISTRY_ADMINISTRATOR:
            raise PermissionDenied(
                "only a ministry administrator manages accounts", reason="ROLE_NOT_ALLOWED"
            )


def out_of_scope(officer: Officer, what: str) -> PermissionDenied:
    """The refusal of a read outside ``officer``'s reach; ``what`` names the resource."""
    return PermissionDenied(
        f"{what} is outside the reach of {officer.resource_name}", reason="OUTSIDE_SCOPE"
    )
