"""The gRPC servicers of the civil-status registry.

They translate messages only: domain errors raised by the registry, and NotImplementedError
for what later issues bring, become status codes in lienthong.grpc_server.EdgeInterceptor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from lienthong.civilregistry.v1 import (
    birth_registration_service_pb2 as service,
)
from lienthong.civilregistry.v1 import (
    birth_registration_service_pb2_grpc as service_grpc,
)
from lienthong.civilregistry.v1 import (
    officer_service_pb2_grpc as officer_grpc,
)

if TYPE_CHECKING:
    import grpc

    from justice_adapter.registry import BirthRegistry
    from lienthong.civilregistry.v1 import officer_service_pb2 as officer


class BirthRegistrationServicer(service_grpc.BirthRegistrationServiceServicer):
    """lienthong.civilregistry.v1.BirthRegistrationService over a BirthRegistry."""

    def __init__(self, registry: BirthRegistry) -> None:
        """Serve ``registry``."""
        self._registry = registry

    def RegisterBirth(
        self, request: service.RegisterBirthRequest, context: grpc.ServicerContext
    ) -> service.RegisterBirthResponse:
        """Enter a birth registration and request its PIN when due."""
        del context
        return service.RegisterBirthResponse(
            birth_registration=self._registry.register_birth(request)
        )

    def GetBirthRegistration(
        self, request: service.GetBirthRegistrationRequest, context: grpc.ServicerContext
    ) -> service.GetBirthRegistrationResponse:
        """Return one registration."""
        del context
        return service.GetBirthRegistrationResponse(
            birth_registration=self._registry.get(request.name)
        )

    def ListBirthRegistrations(
        self, request: service.ListBirthRegistrationsRequest, context: grpc.ServicerContext
    ) -> service.ListBirthRegistrationsResponse:
        """Return one page of registrations."""
        del context
        registrations, next_page_token = self._registry.list(request)
        return service.ListBirthRegistrationsResponse(
            birth_registrations=registrations, next_page_token=next_page_token
        )

    def AmendBirthRegistration(
        self, request: service.AmendBirthRegistrationRequest, context: grpc.ServicerContext
    ) -> NoReturn:
        """Not in this version: UNIMPLEMENTED."""
        raise NotImplementedError

    def CorrectBirthRegistration(
        self, request: service.CorrectBirthRegistrationRequest, context: grpc.ServicerContext
    ) -> NoReturn:
        """Not in this version: UNIMPLEMENTED."""
        raise NotImplementedError

    def GetRegistrationStatistics(
        self, request: service.GetRegistrationStatisticsRequest, context: grpc.ServicerContext
    ) -> NoReturn:
        """Not in this version: UNIMPLEMENTED."""
        raise NotImplementedError


class OfficerServicer(officer_grpc.OfficerServiceServicer):
    """lienthong.civilregistry.v1.OfficerService; officer accounts come in a later version."""

    def CreateOfficer(
        self, request: officer.CreateOfficerRequest, context: grpc.ServicerContext
    ) -> NoReturn:
        """Not in this version: UNIMPLEMENTED."""
        raise NotImplementedError

    def GetOfficer(
        self, request: officer.GetOfficerRequest, context: grpc.ServicerContext
    ) -> NoReturn:
        """Not in this version: UNIMPLEMENTED."""
        raise NotImplementedError

    def ListOfficers(
        self, request: officer.ListOfficersRequest, context: grpc.ServicerContext
    ) -> NoReturn:
        """Not in this version: UNIMPLEMENTED."""
        raise NotImplementedError

    def DisableOfficer(
        self, request: officer.DisableOfficerRequest, context: grpc.ServicerContext
    ) -> NoReturn:
        """Not in this version: UNIMPLEMENTED."""
        raise NotImplementedError
