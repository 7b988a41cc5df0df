"""The composition root of the Justice adapter: configuration in, a gRPC server out.

Nothing is built at import time; ``create_server`` builds the engine, the channel to the
gateway, the registry and the server, and ``serve`` runs them until SIGTERM or SIGINT
(lienthong.serving, shared with the other services).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from justice_adapter.models import create_schema
from justice_adapter.pin_requests import GatewayPinIssuer
from justice_adapter.registry import BirthRegistry
from justice_adapter.servicer import BirthRegistrationServicer, OfficerServicer
from lienthong.civilregistry.v1 import (
    birth_registration_service_pb2,
    birth_registration_service_pb2_grpc,
    officer_service_pb2,
    officer_service_pb2_grpc,
)
from lienthong.db import make_engine, session_factory
from lienthong.grpc_server import EdgeInterceptor, add_health_and_reflection, build_server
from lienthong.reference import code_lists
from lienthong.serving import serve_until_signalled
from lienthong.tls import secure_channel

if TYPE_CHECKING:
    import grpc
    from sqlalchemy import Engine

    from lienthong.config import JusticeConfig

DOMAIN = "civilregistry.lienthong.gov.vn"
SERVER_NAME = "justice_adapter"


@dataclass(frozen=True)
class _Assembly:
    """A built server and what must be released after it stops."""

    server: grpc.Server
    port: int
    engine: Engine
    gateway: grpc.Channel

    def close(self) -> None:
        self.gateway.close()
        self.engine.dispose()


def service_names() -> list[str]:
    """Full names of the services the adapter serves, for health and reflection."""
    return [
        birth_registration_service_pb2.DESCRIPTOR.services_by_name[
            "BirthRegistrationService"
        ].full_name,
        officer_service_pb2.DESCRIPTOR.services_by_name["OfficerService"].full_name,
    ]


def _assemble(config: JusticeConfig) -> _Assembly:
    engine = make_engine(config.database_url)
    tls = config.tls.read()
    # The adapter's certificate is also its client certificate towards the gateway.
    gateway = secure_channel(config.gateway, tls)
    try:
        create_schema(engine)
        registry = BirthRegistry(session_factory(engine), GatewayPinIssuer(gateway), code_lists())
        server, port = build_server(
            listen=config.listen,
            tls=tls,
            interceptors=[EdgeInterceptor(DOMAIN, config.trusted_callers)],
        )
    except BaseException:
        gateway.close()
        engine.dispose()
        raise
    birth_registration_service_pb2_grpc.add_BirthRegistrationServiceServicer_to_server(
        BirthRegistrationServicer(registry), server
    )
    officer_service_pb2_grpc.add_OfficerServiceServicer_to_server(OfficerServicer(), server)
    add_health_and_reflection(server, service_names())
    return _Assembly(server, port, engine, gateway)


def create_server(config: JusticeConfig) -> tuple[grpc.Server, int]:
    """Build the adapter's server, bound but not started, and the port it is bound to.

    The database schema is created if missing. The engine and the gateway channel live as
    long as the server; ``serve`` releases them on shutdown.
    """
    assembly = _assemble(config)
    return assembly.server, assembly.port


def serve(config: JusticeConfig) -> None:
    """Run the adapter until SIGTERM or SIGINT, drain calls, then release the database.

    Must be called from the main thread, which alone may install signal handlers.
    """
    assembly = _assemble(config)
    try:
        serve_until_signalled(assembly.server, SERVER_NAME, assembly.port)
    finally:
        assembly.close()
