"""Composition root of the population database adapter."""

from __future__ import annotations

import grpc

from lienthong.config import PoliceConfig
from lienthong.db import ensure_database, make_engine, read_session_factory, session_factory
from lienthong.grpc_server import EdgeInterceptor, add_health_and_reflection, build_server
from lienthong.population.v1 import citizen_service_pb2, citizen_service_pb2_grpc
from lienthong.reference import code_lists
from lienthong.serving import serve_until_signalled
from police_adapter.digests import CitizenDigestLister
from police_adapter.models import create_schema
from police_adapter.population import PopulationRegister
from police_adapter.servicer import CitizenServicer

DOMAIN = "population.lienthong.gov.vn"
SERVICE_NAME = citizen_service_pb2.DESCRIPTOR.services_by_name["CitizenService"].full_name


def create_server(config: PoliceConfig) -> tuple[grpc.Server, int]:
    """Build the adapter's server, bound but not started, and return it with its port."""
    ensure_database(config.database_url)
    engine = make_engine(config.database_url)
    create_schema(engine)
    register = PopulationRegister(session_factory(engine), code_lists())
    # Reconciliation reads many batches: on SQLite they must not queue behind issuance.
    digests = CitizenDigestLister(read_session_factory(engine), code_lists())
    server, port = build_server(
        listen=config.listen,
        tls=config.tls.read(),
        interceptors=[EdgeInterceptor(DOMAIN, config.trusted_callers)],
    )
    citizen_service_pb2_grpc.add_CitizenServiceServicer_to_server(
        CitizenServicer(register, digests), server
    )
    add_health_and_reflection(server, [SERVICE_NAME])
    return server, port


def serve(config: PoliceConfig) -> None:
    """Run the adapter until SIGTERM or SIGINT, then drain."""
    server, port = create_server(config)
    serve_until_signalled(server, "police_adapter", port)
