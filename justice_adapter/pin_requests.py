"""The registry's client of the population database, reached through the gateway.

``PinIssuer`` and ``CitizenUpdater`` are the narrow interfaces the registry needs;
``GatewayPinIssuer`` and ``GatewayCitizenUpdater`` implement them over gRPC and tests use
small in-memory fakes. Failures come in two kinds::

    Exception
     ├── lienthong.errors.Unavailable   transient: the call may succeed later
     └── PinRejected                    definitive: the population database refused the data

``pin_fits`` checks a returned PIN against the law before the registry stores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import grpc
from google.protobuf import field_mask_pb2

from lienthong import metadata, pin
from lienthong.errors import Unavailable
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2, citizen_service_pb2_grpc
from lienthong.reference import CodeLists, Level

if TYPE_CHECKING:
    from lienthong.civilregistry.v1 import birth_registration_pb2 as br

PURPOSE = "birth-registration"
CORRECTION_PURPOSE = "civil-status-correction"

# Codes by which the population database refuses the data itself: asking again with the same
# data gets the same answer. Every other failure may pass and is reported as Unavailable.
DEFINITIVE = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)


class PinRejected(Exception):
    """The population database refused a request about this registration, for good.

    ``details`` is the population database's developer-facing message; it names fields,
    not their values, but is still not logged.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        """Keep the status code and message of the refusal."""
        super().__init__(f"population database refused the request: {code.name}")
        self.code = code
        self.details = details


class PinIssuer(Protocol):
    """What the registry needs of the population database."""

    def issue(
        self, registration: br.BirthRegistration, request_id: str, *, timeout: float = 5.0
    ) -> str:
        """Return the PIN of a committed registration (its name set).

        Raises Unavailable when it cannot be obtained now, PinRejected when it never will be
        with this data. Repeating a call for the same registration returns the same PIN.
        """
        ...


class GatewayPinIssuer:
    """Obtains PINs from lienthong.population.v1.CitizenService through the gateway."""

    def __init__(self, channel: grpc.Channel) -> None:
        """Use ``channel``, a mutual-TLS channel to the gateway; the caller owns and closes it."""
        self._stub = citizen_service_pb2_grpc.CitizenServiceStub(channel)

    def issue(
        self, registration: br.BirthRegistration, request_id: str, *, timeout: float = 5.0
    ) -> str:
        """Send the registered birth (Decree 137/2015 Art. 14) and return its PIN."""
        request = citizen_service_pb2.IssuePersonalIdentificationNumberRequest(
            request_id=request_id, registered_birth=registered_birth(registration)
        )
        try:
            response = self._stub.IssuePersonalIdentificationNumber(
                request,
                timeout=timeout,
                metadata=((metadata.REQUEST_ID, request_id), (metadata.PURPOSE, PURPOSE)),
            )
        except grpc.RpcError as error:
            raise _failure(error) from error
        return response.personal_identification_number


@dataclass(frozen=True)
class CitizenUpdate:
    """What an UpdateCitizen call did: the PIN in force, and the one it cancelled if any."""

    pin: str
    cancelled_pin: str | None


class CitizenUpdater(Protocol):
    """What the registry needs of the population database to pass on a change."""

    def update(  # noqa: PLR0913 - one call's inputs, keyword-only after the first
        self,
        registration: br.BirthRegistration,
        *,
        pin: str,
        paths: list[str],
        reason: str,
        request_id: str,
        timeout: float = 5.0,
    ) -> CitizenUpdate:
        """Send the changed ``paths`` (of population.v1.Citizen) of the record ``pin``.

        Raises Unavailable or PinRejected as ``PinIssuer.issue`` does. Repeating a call with
        the same request_id returns the first answer.
        """
        ...


class GatewayCitizenUpdater:
    """Passes changes on to lienthong.population.v1.CitizenService through the gateway."""

    def __init__(self, channel: grpc.Channel) -> None:
        """Use ``channel``, a mutual-TLS channel to the gateway; the caller owns and closes it."""
        self._stub = citizen_service_pb2_grpc.CitizenServiceStub(channel)

    def update(  # noqa: PLR0913 - as CitizenUpdater.update
        self,
        registration: br.BirthRegistration,
        *,
        pin: str,
        paths: list[str],
        reason: str,
        request_id: str,
        timeout: float = 5.0,
    ) -> CitizenUpdate:
        """Call UpdateCitizen with the registration's current values of ``paths``."""
        citizen = citizen_of(registration)
        citizen.name = f"citizens/{pin}"
        request = citizen_service_pb2.UpdateCitizenRequest(
            request_id=request_id,
            citizen=citizen,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
            reason=reason,
        )
        try:
            response = self._stub.UpdateCitizen(
                request,
                timeout=timeout,
                metadata=(
                    (metadata.REQUEST_ID, request_id),
                    (metadata.PURPOSE, CORRECTION_PURPOSE),
                ),
            )
        except grpc.RpcError as error:
            raise _failure(error) from error
        return CitizenUpdate(
            pin=response.citizen.personal_identification_number,
            cancelled_pin=response.cancelled_personal_identification_number or None,
        )


def _failure(error: grpc.RpcError) -> Exception:
    """A failed call as PinRejected (definitive) or Unavailable (may pass)."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    if code in DEFINITIVE:
        details = error.details() if isinstance(error, grpc.Call) else ""
        return PinRejected(code, details or "")
    return Unavailable(f"population database: {code.name}")


def citizen_of(registration: br.BirthRegistration) -> citizen_pb2.Citizen:
    """The population database's view of a registration's child, as UpdateCitizen takes it."""
    birth = registered_birth(registration)
    citizen = citizen_pb2.Citizen(
        full_name=birth.full_name,
        date_of_birth=birth.date_of_birth,
        sex=birth.sex,
        registration_place=birth.registration_place,
        home_town=birth.home_town,
        ethnicity=birth.ethnicity,
        nationality=birth.nationality,
        father=birth.father,
        mother=birth.mother,
    )
    if birth.HasField("legal_representative"):
        citizen.legal_representative.CopyFrom(birth.legal_representative)
    return citizen


def registered_birth(registration: br.BirthRegistration) -> citizen_pb2.RegisteredBirth:
    """What the population database is sent of a registration, and nothing more."""
    child = registration.child
    birth = citizen_pb2.RegisteredBirth(
        birth_registration=registration.name,
        full_name=child.name,
        date_of_birth=child.date_of_birth,
        sex=child.sex,
        registration_place=registration.registration_unit,
        home_town=child.home_town,
        ethnicity=child.ethnicity,
        nationality=child.nationality,
        father=_related_person(registration.father),
        mother=_related_person(registration.mother),
    )
    if registration.HasField("legal_representative"):
        birth.legal_representative.CopyFrom(_related_person(registration.legal_representative))
    return birth


def _related_person(parent: br.Parent) -> citizen_pb2.RelatedPerson:
    if parent.undetermined:
        return citizen_pb2.RelatedPerson(undetermined=True)
    return citizen_pb2.RelatedPerson(
        full_name=parent.name,
        nationality=parent.nationality,
        personal_identification_number=parent.personal_identification_number,
    )


def pin_fits(value: str, registration: br.BirthRegistration, codes: CodeLists) -> bool:
    """Whether a PIN encodes the registration's province, the child's sex and year of birth.

    Decree 137/2015 Art. 13: a PIN that does not is wrong and must not be stored.
    """
    unit = registration.registration_unit
    try:
        parts = pin.parse(value)
        found = codes.unit(Level(unit.level), unit.code)
    except ValueError:
        return False
    if found is None:
        return False
    child = registration.child
    return (
        parts.province_code == codes.pin_province_code(found)
        and parts.sex == child.sex
        and parts.birth_year == child.date_of_birth.year
    )
