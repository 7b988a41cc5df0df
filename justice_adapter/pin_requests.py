"""The registry's client of the population database, reached through the gateway.

``PinIssuer`` is the narrow interface the registry needs; ``GatewayPinIssuer`` implements it
over gRPC and tests use a small in-memory fake. Failures come in two kinds::

    Exception
     ├── lienthong.errors.Unavailable   transient: the PIN may be obtained later
     └── PinRejected                    definitive: the population database refused the data

``pin_fits`` checks a returned PIN against the law before the registry stores it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import grpc

from lienthong import metadata, pin
from lienthong.errors import Unavailable
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2, citizen_service_pb2_grpc
from lienthong.reference import CodeLists, Level

if TYPE_CHECKING:
    from lienthong.civilregistry.v1 import birth_registration_pb2 as br

PURPOSE = "birth-registration"

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
    """The population database refused to issue a PIN for this registration.

    ``details`` is the population database's developer-facing message; it names fields,
    not their values, but is still not logged.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        """Keep the status code and message of the refusal."""
        super().__init__(f"PIN request rejected: {code.name}")
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
            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
            if code in DEFINITIVE:
                details = error.details() if isinstance(error, grpc.Call) else ""
                raise PinRejected(code, details or "") from error
            raise Unavailable(f"population database: {code.name}") from error
        return response.personal_identification_number


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
