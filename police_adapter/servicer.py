"""lienthong.population.v1.CitizenService over the population register."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from google.rpc import code_pb2

from lienthong import errors
from lienthong.population.v1 import citizen_service_pb2, citizen_service_pb2_grpc
from police_adapter.digests import CitizenDigestLister
from police_adapter.history import Provenance
from police_adapter.population import PopulationRegister

_STREAM_CODES: dict[type[errors.LienthongError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
}


class CitizenServicer(citizen_service_pb2_grpc.CitizenServiceServicer):
    """Translates CitizenService calls to the register; errors map at the shared edge."""

    def __init__(self, register: PopulationRegister, digests: CitizenDigestLister) -> None:
        """Serve ``register``, and ``digests`` for reconciliation."""
        self._register = register
        self._digests = digests

    def IssuePersonalIdentificationNumber(
        self,
        request: citizen_service_pb2.IssuePersonalIdentificationNumberRequest,
        context: grpc.ServicerContext,
    ) -> citizen_service_pb2.IssuePersonalIdentificationNumberResponse:
        """Issue or return the registration's PIN."""
        return self._register.issue(request, Provenance.of(context))

    def StreamIssuePersonalIdentificationNumbers(
        self,
        request_iterator: Iterator[
            citizen_service_pb2.StreamIssuePersonalIdentificationNumbersRequest
        ],
        context: grpc.ServicerContext,
    ) -> Iterator[citizen_service_pb2.StreamIssuePersonalIdentificationNumbersResponse]:
        """Issue for each item in turn; an item's failure is its own answer, not the stream's."""
        provenance = Provenance.of(context)
        for item in request_iterator:
            answer = citizen_service_pb2.StreamIssuePersonalIdentificationNumbersResponse(
                request_id=item.request_id
            )
            unary = citizen_service_pb2.IssuePersonalIdentificationNumberRequest(
                request_id=item.request_id, registered_birth=item.registered_birth
            )
            try:
                answer.issued.CopyFrom(self._register.issue(unary, provenance))
            except tuple(_STREAM_CODES) as error:
                answer.failure.code = next(
                    code for kind, code in _STREAM_CODES.items() if isinstance(error, kind)
                )
                answer.failure.message = error.message
                for violation in getattr(error, "violations", []):
                    answer.failure.field_violations.add(
                        field=violation.field, description=violation.description
                    )
            yield answer

    def GetCitizen(
        self,
        request: citizen_service_pb2.GetCitizenRequest,
        context: grpc.ServicerContext,  # noqa: ARG002 - the edge reads it
    ) -> citizen_service_pb2.GetCitizenResponse:
        """Return one citizen record."""
        return citizen_service_pb2.GetCitizenResponse(citizen=self._register.get(request.name))

    def VerifyCitizen(
        self,
        request: citizen_service_pb2.VerifyCitizenRequest,
        context: grpc.ServicerContext,  # noqa: ARG002 - the edge reads it
    ) -> citizen_service_pb2.VerifyCitizenResponse:
        """Check claimed data against a record without disclosing it."""
        return self._register.verify(request)

    def UpdateCitizen(
        self,
        request: citizen_service_pb2.UpdateCitizenRequest,
        context: grpc.ServicerContext,
    ) -> citizen_service_pb2.UpdateCitizenResponse:
        """Apply a civil-status correction, re-establishing the PIN when it must."""
        return self._register.update(request, Provenance.of(context))

    def ListCitizenDigests(
        self,
        request: citizen_service_pb2.ListCitizenDigestsRequest,
        context: grpc.ServicerContext,  # noqa: ARG002 - the edge reads it
    ) -> Iterator[citizen_service_pb2.ListCitizenDigestsResponse]:
        """Stream a province's records as salted digests, in batches in PIN order."""
        return self._digests.list(request)
