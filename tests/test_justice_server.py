"""The Justice adapter as a real gRPC server on loopback with mutual TLS.

The gateway is played by a small CitizenService fake that presents the gateway's server
certificate, so these tests see what the adapter sends upstream and with which identity.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from stack import AsCaller, create_officer
from stack import tls_of as tls_files
from test_justice_registry import TRUC_BACH, registration, request

from justice_adapter.server import DOMAIN, create_adapter, service_names
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import birth_registration_service_pb2 as service
from lienthong.civilregistry.v1 import birth_registration_service_pb2_grpc as service_grpc
from lienthong.civilregistry.v1 import officer_service_pb2, officer_service_pb2_grpc
from lienthong.config import JusticeConfig
from lienthong.tls import secure_channel

GATEWAY = "spiffe://lienthong.local/gateway"
JUSTICE = "spiffe://lienthong.local/moj/civil-registry"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def config(pki, tmp_path, gateway):
    return JusticeConfig(
        listen="127.0.0.1:0",
        tls=tls_files(pki, "justice"),
        database_url=f"sqlite:///{tmp_path / 'justice.db'}",
        gateway=gateway[1],
        trusted_callers=frozenset({GATEWAY}),
        administrators=("admin",),
    )


@pytest.fixture
def address(config):
    adapter = create_adapter(config)
    adapter.start()
    yield f"127.0.0.1:{adapter.port}"
    adapter.stop(grace=None)


@pytest.fixture
def channel(pki, address):
    """A channel as the gateway, calling for an officer of Trúc Bạch (the requests' unit)."""
    with secure_channel(address, tls_files(pki, "gateway-client").read()) as channel:
        create_officer(channel, "registrar", TRUC_BACH, direct=True)
        yield grpc.intercept_channel(channel, AsCaller("registrar"))


def rich_status(error: grpc.RpcError):
    status = rpc_status.from_call(error)
    details = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                details[kind] = message
    return details


def test_register_get_and_list_through_mutual_tls(channel, gateway):
    """A registration gets its PIN from the gateway, which sees the adapter's own identity."""
    fake, _ = gateway
    stub = service_grpc.BirthRegistrationServiceStub(channel)

    entered = stub.RegisterBirth(request(), timeout=10).birth_registration
    got = stub.GetBirthRegistration(
        service.GetBirthRegistrationRequest(name=entered.name), timeout=10
    ).birth_registration
    listed = stub.ListBirthRegistrations(
        service.ListBirthRegistrationsRequest(unit_code=TRUC_BACH), timeout=10
    )

    assert entered.pin_status == br.PIN_STATUS_ISSUED
    assert entered.personal_identification_number == "001316000042"
    assert fake.callers == [JUSTICE]
    assert got == entered
    assert list(listed.birth_registrations) == [entered]
    assert listed.next_page_token == ""


def test_gateway_down_answers_with_a_pending_registration(channel, gateway):
    """RegisterBirth succeeds while the population database cannot be reached."""
    fake, _ = gateway
    fake.failure = grpc.StatusCode.UNAVAILABLE
    stub = service_grpc.BirthRegistrationServiceStub(channel)

    entered = stub.RegisterBirth(request(), timeout=10).birth_registration

    assert entered.pin_status == br.PIN_STATUS_PENDING
    assert entered.registration_number == 1


def test_invalid_request_is_invalid_argument_with_field_violations(channel):
    """AIP-193: a BadRequest lists the fields and an ErrorInfo names the domain."""
    bad = registration()
    bad.child.name.given_name = "An2"
    stub = service_grpc.BirthRegistrationServiceStub(channel)

    with pytest.raises(grpc.RpcError) as error:
        stub.RegisterBirth(request(bad), timeout=10)

    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = rich_status(error.value)
    assert details[error_details_pb2.ErrorInfo].domain == DOMAIN
    assert [v.field for v in details[error_details_pb2.BadRequest].field_violations] == [
        "birth_registration.child.name.given_name"
    ]


def test_wrong_unit_level_is_failed_precondition(channel):
    """A registration with a foreign element at a commune: UNIT_LEVEL_MISMATCH."""
    at_commune = registration(procedure=br.REGISTRATION_PROCEDURE_FOREIGN_ELEMENT)
    stub = service_grpc.BirthRegistrationServiceStub(channel)

    with pytest.raises(grpc.RpcError) as error:
        stub.RegisterBirth(request(at_commune), timeout=10)

    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_status(error.value)[error_details_pb2.ErrorInfo].reason == "UNIT_LEVEL_MISMATCH"


def test_unknown_registration_is_not_found(channel):
    """A well-formed name with no registration."""
    stub = service_grpc.BirthRegistrationServiceStub(channel)

    with pytest.raises(grpc.RpcError) as error:
        stub.GetBirthRegistration(
            service.GetBirthRegistrationRequest(name="birthRegistrations/00004-2016-9"),
            timeout=10,
        )

    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("stub_class", "method", "message"),
    [
        (
            service_grpc.BirthRegistrationServiceStub,
            "AmendBirthRegistration",
            service.AmendBirthRegistrationRequest(),
        ),
        (
            service_grpc.BirthRegistrationServiceStub,
            "CorrectBirthRegistration",
            service.CorrectBirthRegistrationRequest(),
        ),
        (
            service_grpc.BirthRegistrationServiceStub,
            "GetRegistrationStatistics",
            service.GetRegistrationStatisticsRequest(),
        ),
        (
            officer_service_pb2_grpc.OfficerServiceStub,
            "GetOfficer",
            officer_service_pb2.GetOfficerRequest(),
        ),
    ],
)
def test_an_empty_request_is_invalid_argument_with_field_violations(
    channel, stub_class, method, message
):
    """Every method checks its input: an empty request names what is missing."""
    with pytest.raises(grpc.RpcError) as error:
        getattr(stub_class(channel), method)(message, timeout=10)

    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich_status(error.value)[error_details_pb2.BadRequest].field_violations


def test_health_reports_every_service_serving(channel):
    """The stack waits on grpc.health.v1 before it starts the gateway."""
    health = health_pb2_grpc.HealthStub(channel)

    statuses = {
        name: health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
        for name in ["", *service_names()]
    }

    assert statuses == dict.fromkeys(["", *service_names()], health_pb2.HealthCheckResponse.SERVING)
    assert service_names() == [
        "lienthong.civilregistry.v1.BirthRegistrationService",
        "lienthong.civilregistry.v1.OfficerService",
        "lienthong.civilregistry.v1.ReconciliationService",
    ]


def test_a_caller_other_than_the_gateway_is_refused(pki, address):
    """Only the gateway may call the registry; the officer portal goes through it."""
    with secure_channel(address, tls_files(pki, "officer-portal").read()) as portal:
        stub = service_grpc.BirthRegistrationServiceStub(portal)
        with pytest.raises(grpc.RpcError) as error:
            stub.RegisterBirth(request(), timeout=10)

    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


SERVE = """
import sys
from pathlib import Path
from justice_adapter.server import serve
from lienthong.config import JusticeConfig
from lienthong.logs import configure_logging
from lienthong.tls import TlsFiles

pki = Path(sys.argv[1])
configure_logging("justice")
serve(
    JusticeConfig(
        listen="127.0.0.1:0",
        tls=TlsFiles(pki / "ca.pem", pki / "justice.pem", pki / "justice.key"),
        database_url="sqlite:///" + sys.argv[2],
        gateway="127.0.0.1:9",
        trusted_callers=frozenset({"spiffe://lienthong.local/gateway"}),
    )
)
"""


def test_serve_runs_until_sigterm_and_then_exits_cleanly(pki, tmp_path):
    """SIGTERM drains and stops the server: exit status 0 and a final log line."""
    database = tmp_path / "served.db"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(pki.directory), str(database)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        rest, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert '"server_started"' in started
    assert '"server": "justice_adapter"' in started
    assert process.returncode == 0, errors
    assert '"server_stopped"' in rest
    assert database.exists()


def test_nothing_is_built_at_import_time(tmp_path):
    """Importing the adapter opens no database, channel or server."""
    probe = (
        "import grpc, sqlalchemy\n"
        "grpc.server = grpc.secure_channel = sqlalchemy.create_engine = None\n"
        "import justice_adapter.server, justice_adapter.registry, justice_adapter.servicer\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.stdout == "ok\n", result.stderr
