"""The composition root of the Justice adapter: configuration in, a running adapter out.

Nothing is built at import time; ``create_adapter`` builds the engine, the channel to the
gateway, the officer directory (with the configured administrators), the registry, the
changes, the statistics, the two outboxes (PIN requests, changes) with their worker, and the
server; ``serve`` runs them
until SIGTERM or SIGINT (lienthong.serving, shared with the other services). The worker runs
whenever the adapter serves, so a registration left PIN_STATUS_PENDING is delivered later
without anyone asking.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from justice_adapter.change_delivery import ChangeOutbox
from justice_adapter.changes import RegistrationChanges
from justice_adapter.models import create_schema
from justice_adapter.officers import OfficerDirectory
from justice_adapter.outbox import OutboxWorker, PinOutbox, utc_now
from justice_adapter.pin_requests import GatewayCitizenUpdater, GatewayPinIssuer
from justice_adapter.population_digests import GatewayCitizenDigests
from justice_adapter.reconciliation import Reconciliation
from justice_adapter.registry import BirthRegistry
from justice_adapter.repairs import Repairs
from justice_adapter.servicer import (
    Authenticator,
    BirthRegistrationServicer,
    OfficerServicer,
    ReconciliationServicer,
)
from justice_adapter.statistics import RegistrationStatistics
from lienthong.civilregistry.v1 import (
    birth_registration_service_pb2,
    birth_registration_service_pb2_grpc,
    officer_service_pb2,
    officer_service_pb2_grpc,
    reconciliation_service_pb2,
    reconciliation_service_pb2_grpc,
)
from lienthong.db import ensure_database, make_engine, read_session_factory, session_factory
from lienthong.grpc_server import EdgeInterceptor, add_health_and_reflection, build_server
from lienthong.reference import code_lists
from lienthong.serving import serve_until_signalled
from lienthong.tls import secure_channel

if TYPE_CHECKING:
    import grpc
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from lienthong.config import JusticeConfig

DOMAIN = "civilregistry.lienthong.gov.vn"
SERVER_NAME = "justice_adapter"


@dataclass(frozen=True)
class JusticeAdapter:
    """A built adapter: its server, the outbox worker beside it, and what both hold."""

    server: grpc.Server
    port: int
    worker: OutboxWorker
    engine: Engine
    channel: grpc.Channel

    def start(self) -> None:
        """Serve calls and deliver pending PIN requests in the background."""
        self.server.start()
        self.worker.start()

    def stop(self, grace: float | None = None) -> None:
        """Let in-flight calls finish for ``grace`` seconds, then stop the worker and release."""
        self.server.stop(grace).wait()
        self.close()

    def close(self) -> None:
        """Stop the worker, then release the gateway channel and the database it used."""
        self.worker.stop()
        self.channel.close()
        self.engine.dispose()


def service_names() -> list[str]:
    """Full names of the services the adapter serves, for health and reflection."""
    return [
        birth_registration_service_pb2.DESCRIPTOR.services_by_name[
            "BirthRegistrationService"
        ].full_name,
        officer_service_pb2.DESCRIPTOR.services_by_name["OfficerService"].full_name,
        reconciliation_service_pb2.DESCRIPTOR.services_by_name["ReconciliationService"].full_name,
    ]


def create_adapter(config: JusticeConfig) -> JusticeAdapter:
    """Build the adapter, its server bound but nothing started.

    The database schema is created if missing. ``JusticeAdapter.stop`` (or ``close``, once
    the server has stopped) releases the engine and the gateway channel.
    """
    ensure_database(config.database_url)
    engine = make_engine(config.database_url)
    tls = config.tls.read()
    # The adapter's certificate is also its client certificate towards the gateway.
    channel = secure_channel(config.gateway, tls)
    try:
        create_schema(engine)
        sessions, reads = session_factory(engine), read_session_factory(engine)
        directory = OfficerDirectory(
            sessions, code_lists(), identity_prefix=config.officer_identity_prefix, reads=reads
        )
        directory.ensure_administrators(config.administrators)
        servicers, worker = _services(config, (sessions, reads), directory, channel)
        server, port = build_server(
            listen=config.listen,
            tls=tls,
            interceptors=[EdgeInterceptor(DOMAIN, config.trusted_callers)],
        )
    except BaseException:
        channel.close()
        engine.dispose()
        raise
    registrations, officers, reconciliations = servicers
    birth_registration_service_pb2_grpc.add_BirthRegistrationServiceServicer_to_server(
        registrations, server
    )
    officer_service_pb2_grpc.add_OfficerServiceServicer_to_server(officers, server)
    reconciliation_service_pb2_grpc.add_ReconciliationServiceServicer_to_server(
        reconciliations, server
    )
    add_health_and_reflection(server, service_names())
    return JusticeAdapter(server, port, worker, engine, channel)


def _services(
    config: JusticeConfig,
    databases: tuple[sessionmaker[Session], sessionmaker[Session]],
    directory: OfficerDirectory,
    channel: grpc.Channel,
) -> tuple[tuple[BirthRegistrationServicer, OfficerServicer, ReconciliationServicer], OutboxWorker]:
    """The servicers over the domain services, and the worker of their outboxes.

    ``databases`` are the sessions for writing and those for reading only.
    """
    sessions, reads = databases
    codes = code_lists()
    pins = PinOutbox(sessions, GatewayPinIssuer(channel), codes)
    changes = ChangeOutbox(sessions, GatewayCitizenUpdater(channel), codes)
    authenticator = Authenticator(directory, config.trusted_callers)
    registrations = BirthRegistrationServicer(
        authenticator,
        BirthRegistry(sessions, pins, codes, reads=reads),
        RegistrationChanges(
            sessions,
            changes,
            codes,
            grace_window=dt.timedelta(hours=config.grace_window_hours),
            clock=utc_now,
        ),
        RegistrationStatistics(sessions, codes, reads=reads),
    )
    reconciliations = ReconciliationServicer(
        authenticator,
        Reconciliation(
            reads, GatewayCitizenDigests(channel), Repairs(sessions, utc_now), codes, utc_now
        ),
        config.reconcilers,
    )
    servicers = (registrations, OfficerServicer(authenticator, directory), reconciliations)
    return servicers, OutboxWorker(pins, changes)


def serve(config: JusticeConfig) -> None:
    """Run the adapter until SIGTERM or SIGINT, drain calls, stop the worker, release.

    Must be called from the main thread, which alone may install signal handlers.
    """
    adapter = create_adapter(config)
    adapter.worker.start()
    try:
        serve_until_signalled(adapter.server, SERVER_NAME, adapter.port)
    finally:
        # After the drain: a registration still in flight may leave work for the worker.
        adapter.close()
