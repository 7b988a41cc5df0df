"""Fixtures shared by the Justice adapter's tests: a fresh registry database of each kind,
and a fake gateway serving CitizenService over mTLS."""

from __future__ import annotations

import grpc
import pytest
from stack import tls_of

from justice_adapter.models import create_schema
from lienthong.db import make_engine, session_factory
from lienthong.grpc_server import build_server
from lienthong.identity import peer_identity
from lienthong.population.v1 import citizen_service_pb2, citizen_service_pb2_grpc


@pytest.fixture
def engine(database_url):
    """A fresh database of each supported kind (conftest: SQLite file, PostgreSQL)."""
    engine = make_engine(database_url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine):
    return session_factory(engine)


class FakeGateway(citizen_service_pb2_grpc.CitizenServiceServicer):
    """Issues a lawful PIN for a girl born 2016 in Hà Nội, or fails with ``failure``."""

    def __init__(self) -> None:
        self.callers: list[str | None] = []
        self.failure: grpc.StatusCode | None = None

    def IssuePersonalIdentificationNumber(self, request, context):
        del request
        self.callers.append(peer_identity(context))
        if self.failure is not None:
            context.abort(self.failure, "down")
        return citizen_service_pb2.IssuePersonalIdentificationNumberResponse(
            personal_identification_number="001316000042", newly_issued=True
        )


@pytest.fixture
def gateway(pki):
    fake = FakeGateway()
    server, port = build_server(listen="127.0.0.1:0", tls=tls_of(pki, "gateway-server").read())
    citizen_service_pb2_grpc.add_CitizenServiceServicer_to_server(fake, server)
    server.start()
    yield fake, f"127.0.0.1:{port}"
    server.stop(grace=None)
