"""Fixtures shared by the Justice adapter's tests: a fresh registry database of each kind,
and a fake gateway serving CitizenService over mTLS."""

from __future__ import annotations

import grpc
import pytest
from stack import tls_of

from justice_adapter.models import create_schema
from justice_adapter.registry import BirthRegistry
from justice_adapter.scope import (
    COMMUNE_OFFICER,
    DISTRICT_OFFICER,
    MINISTRY_ADMINISTRATOR,
    Locality,
    Officer,
)
from lienthong.db import make_engine, session_factory
from lienthong.grpc_server import build_server
from lienthong.identity import peer_identity
from lienthong.population.v1 import citizen_service_pb2, citizen_service_pb2_grpc
from lienthong.reference import Level, code_lists


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


def unit_officer(unit_code: str) -> Officer:
    """An officer of the registering unit ``unit_code`` (commune: 5 digits, district: 3)."""
    codes = code_lists()
    level = Level.COMMUNE if len(unit_code) == 5 else Level.DISTRICT
    unit = codes.unit(level, unit_code)
    role = COMMUNE_OFFICER if level == Level.COMMUNE else DISTRICT_OFFICER
    if unit is None:  # a request with a bad unit: refused before any unit is looked at
        return Officer(f"officer-{unit_code}", role, Locality(unit_code, "", None))
    return Officer(
        f"officer-{unit_code}", role, Locality(unit.code, unit.province_code, unit.district_code)
    )


class AsUnitOfficers:
    """A BirthRegistry used by the officers of each registration's own unit.

    For the tests of registration rules: who may do what has tests of its own.
    """

    def __init__(self, registry: BirthRegistry) -> None:
        self.registry = registry

    def register_birth(self, request):
        return self.registry.register_birth(
            request, unit_officer(request.birth_registration.registration_unit.code)
        )

    def get(self, name: str):
        unit_code = name.removeprefix("birthRegistrations/").split("-")[0]
        return self.registry.get(name, unit_officer(unit_code))

    def list(self, request):
        return self.registry.list(request, MINISTRY)

    def __getattr__(self, name: str):
        return getattr(self.registry, name)


# The ministry's administrator: every locality in reach.
MINISTRY = Officer("ministry", MINISTRY_ADMINISTRATOR, None)
