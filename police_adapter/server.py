"""Composition root of the population database adapter."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import grpc
from sqlalchemy import Engine

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


@dataclass(frozen=True)
class PoliceAdapter:
    """A built adapter: its server, bound to ``port``, and the database engine it uses."""

    server: grpc.Server
    port: int
    engine: Engine

    def start(self) -> None:
        """Serve calls."""
        self.server.start()

    def stop(self, grace: float | None = None) -> threading.Event:
        """Stop serving (in-flight calls get ``grace`` seconds), then release the database."""
        stopped = self.server.stop(grace)
        stopped.wait()
        self.engine.dispose()
        return stopped


def create_server(config: PoliceConfig) -> PoliceAdapter:
    """Build the adapter, its server bound but not started."""
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
    return PoliceAdapter(server, port, engine)


def serve(config: PoliceConfig) -> None:
    """Run the adapter until SIGTERM or SIGINT, then drain and release the database."""
    adapter = create_server(config)
    try:
        serve_until_signalled(adapter.server, "police_adapter", adapter.port)
    finally:
        adapter.engine.dispose()
