"""The gRPC servicers of the civil-status registry.

They authenticate the calling officer and translate messages; domain errors raised below
become status codes in lienthong.grpc_server.EdgeInterceptor. The officer is the identity of
the client certificate the gateway verified (lienthong.identity.caller_identity), never a
header a client sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from justice_adapter.evidence import ExchangeRef
from justice_adapter.reconciliation import Reconciler
from justice_adapter.scope import MINISTRY_ADMINISTRATOR
from lienthong.civilregistry.v1 import (
    birth_registration_service_pb2 as service,
)
from lienthong.civilregistry.v1 import (
    birth_registration_service_pb2_grpc as service_grpc,
)
from lienthong.civilregistry.v1 import (
    officer_service_pb2 as officer_service,
)
from lienthong.civilregistry.v1 import (
    officer_service_pb2_grpc as officer_grpc,
)
from lienthong.civilregistry.v1 import (
    reconciliation_service_pb2 as reconciliation,
)
from lienthong.civilregistry.v1 import (
    reconciliation_service_pb2_grpc as reconciliation_grpc,
)
from lienthong.identity import caller_identity

if TYPE_CHECKING:
    from collections.abc import Iterator

    import grpc

    from justice_adapter.changes import RegistrationChanges
    from justice_adapter.officers import OfficerDirectory
    from justice_adapter.reconciliation import Reconciliation
    from justice_adapter.registry import BirthRegistry
    from justice_adapter.scope import Officer
    from justice_adapter.statistics import RegistrationStatistics


class Authenticator:
    """Finds the active officer account behind a call."""

    def __init__(self, directory: OfficerDirectory, gateways: frozenset[str] | None) -> None:
        """Trust ``lienthong-caller`` from the peers in ``gateways`` only."""
        self._directory = directory
        self._gateways = gateways

    def officer(self, context: grpc.ServicerContext) -> Officer:
        """The calling officer; PermissionDenied without an active account."""
        return self._directory.authenticate(caller_identity(context, self._gateways))

    def reconciler(self, context: grpc.ServicerContext, systems: frozenset[str]) -> Reconciler:
        """The caller of a reconciliation: one of ``systems``, or else an active officer."""
        identity = caller_identity(context, self._gateways)
        if identity in systems:
            return Reconciler(identity, sees=lambda _place: True, may_repair=False)
        officer = self._directory.authenticate(identity)
        return Reconciler(
            officer.resource_name,
            sees=officer.sees,
            may_repair=officer.role == MINISTRY_ADMINISTRATOR,
            officer_id=officer.officer_id,
        )


class BirthRegistrationServicer(service_grpc.BirthRegistrationServiceServicer):
    """lienthong.civilregistry.v1.BirthRegistrationService."""

    def __init__(
        self,
        authenticator: Authenticator,
        registry: BirthRegistry,
        changes: RegistrationChanges,
        statistics: RegistrationStatistics,
    ) -> None:
        """Serve ``registry``, ``changes`` and ``statistics`` to authenticated officers."""
        self._auth = authenticator
        self._registry = registry
        self._changes = changes
        self._statistics = statistics

    def RegisterBirth(
        self, request: service.RegisterBirthRequest, context: grpc.ServicerContext
    ) -> service.RegisterBirthResponse:
        """Enter a birth registration and request its PIN when due."""
        registration = self._registry.register_birth(
            request, self._auth.officer(context), ExchangeRef.of(context)
        )
        return service.RegisterBirthResponse(birth_registration=registration)

    def GetBirthRegistration(
        self, request: service.GetBirthRegistrationRequest, context: grpc.ServicerContext
    ) -> service.GetBirthRegistrationResponse:
        """Return one registration."""
        registration = self._registry.get(request.name, self._auth.officer(context))
        return service.GetBirthRegistrationResponse(birth_registration=registration)

    def ListBirthRegistrations(
        self, request: service.ListBirthRegistrationsRequest, context: grpc.ServicerContext
    ) -> service.ListBirthRegistrationsResponse:
        """Return one page of registrations."""
        registrations, next_page_token = self._registry.list(request, self._auth.officer(context))
        return service.ListBirthRegistrationsResponse(
            birth_registrations=registrations, next_page_token=next_page_token
        )

    def AmendBirthRegistration(
        self, request: service.AmendBirthRegistrationRequest, context: grpc.ServicerContext
    ) -> service.AmendBirthRegistrationResponse:
        """Amend a registration within the grace window."""
        result = self._changes.amend(request, self._auth.officer(context), ExchangeRef.of(context))
        return service.AmendBirthRegistrationResponse(
            birth_registration=result.registration,
            cancelled_personal_identification_number=result.cancelled_pin,
            population_update_pending=result.population_update_pending,
        )

    def CorrectBirthRegistration(
        self, request: service.CorrectBirthRegistrationRequest, context: grpc.ServicerContext
    ) -> service.CorrectBirthRegistrationResponse:
        """Record a formal correction."""
        result = self._changes.correct(
            request, self._auth.officer(context), ExchangeRef.of(context)
        )
        return service.CorrectBirthRegistrationResponse(
            birth_registration=result.registration,
            cancelled_personal_identification_number=result.cancelled_pin,
            population_update_pending=result.population_update_pending,
        )

    def GetRegistrationStatistics(
        self, request: service.GetRegistrationStatisticsRequest, context: grpc.ServicerContext
    ) -> service.GetRegistrationStatisticsResponse:
        """Count registrations per locality and period."""
        return self._statistics.report(request, self._auth.officer(context))


class OfficerServicer(officer_grpc.OfficerServiceServicer):
    """lienthong.civilregistry.v1.OfficerService."""

    def __init__(self, authenticator: Authenticator, directory: OfficerDirectory) -> None:
        """Serve ``directory`` to authenticated officers."""
        self._auth = authenticator
        self._directory = directory

    def CreateOfficer(
        self, request: officer_service.CreateOfficerRequest, context: grpc.ServicerContext
    ) -> officer_service.CreateOfficerResponse:
        """Create an account."""
        officer = self._directory.create(request, self._auth.officer(context))
        return officer_service.CreateOfficerResponse(officer=officer)

    def GetOfficer(
        self, request: officer_service.GetOfficerRequest, context: grpc.ServicerContext
    ) -> officer_service.GetOfficerResponse:
        """Return one account."""
        officer = self._directory.get(request.name, self._auth.officer(context))
        return officer_service.GetOfficerResponse(officer=officer)

    def ListOfficers(
        self, request: officer_service.ListOfficersRequest, context: grpc.ServicerContext
    ) -> officer_service.ListOfficersResponse:
        """Return one page of accounts."""
        officers, token = self._directory.list(request, self._auth.officer(context))
        return officer_service.ListOfficersResponse(officers=officers, next_page_token=token)

    def DisableOfficer(
        self, request: officer_service.DisableOfficerRequest, context: grpc.ServicerContext
    ) -> officer_service.DisableOfficerResponse:
        """Disable an account."""
        officer = self._directory.disable(request.name, self._auth.officer(context))
        return officer_service.DisableOfficerResponse(officer=officer)


class ReconciliationServicer(reconciliation_grpc.ReconciliationServiceServicer):
    """lienthong.civilregistry.v1.ReconciliationService."""

    def __init__(
        self,
        authenticator: Authenticator,
        reconciliation: Reconciliation,
        systems: frozenset[str],
    ) -> None:
        """Serve ``reconciliation`` to officers and to the ``systems`` that may reconcile."""
        self._auth = authenticator
        self._reconciliation = reconciliation
        self._systems = systems

    def Reconcile(
        self, request: reconciliation.ReconcileRequest, context: grpc.ServicerContext
    ) -> Iterator[reconciliation.ReconcileResponse]:
        """Stream the findings of a locality and period, and repair them if asked."""
        reconciler = self._auth.reconciler(context, self._systems)
        yield from self._reconciliation.run(request, reconciler, ExchangeRef.of(context))
