"""The services of the contracts, read from the generated descriptors.

The gateway takes each method's cardinality from here, and the policy check uses it to know
which methods exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import FileDescriptor

from lienthong.civilregistry.v1 import (
    birth_registration_service_pb2,
    officer_service_pb2,
    reconciliation_service_pb2,
)
from lienthong.gateway.v1 import audit_service_pb2
from lienthong.population.v1 import citizen_service_pb2

SERVICE_FILES: tuple[FileDescriptor, ...] = (
    birth_registration_service_pb2.DESCRIPTOR,
    officer_service_pb2.DESCRIPTOR,
    reconciliation_service_pb2.DESCRIPTOR,
    citizen_service_pb2.DESCRIPTOR,
    audit_service_pb2.DESCRIPTOR,
)


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC: its wire path and cardinality."""

    path: str  # "/lienthong.population.v1.CitizenService/IssuePersonalIdentificationNumber"
    service: str  # "lienthong.population.v1.CitizenService"
    client_streaming: bool
    server_streaming: bool


def methods() -> dict[str, Method]:
    """Every method of every contract service, by wire path."""
    table: dict[str, Method] = {}
    for file in SERVICE_FILES:
        for service in file.services_by_name.values():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                table[path] = Method(
                    path, service.full_name, method.client_streaming, method.server_streaming
                )
    return table
