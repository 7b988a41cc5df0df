"""The Justice adapter's client of the population database, against an in-process gRPC fake."""

from __future__ import annotations

import socket
import threading
import uuid
from concurrent import futures

import grpc
import pytest
from test_justice_registry import KIM_SON, TRUC_BACH, registration

from justice_adapter.pin_requests import GatewayPinIssuer, PinRejected, pin_fits
from lienthong import metadata
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.errors import Unavailable
from lienthong.person.v1 import sex_pb2
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2, citizen_service_pb2_grpc
from lienthong.reference import code_lists

PIN = "001316123456"


class FakeCitizenService(citizen_service_pb2_grpc.CitizenServiceServicer):
    """Answers IssuePersonalIdentificationNumber with a fixed PIN or a fixed failure."""

    def __init__(self) -> None:
        self.requests: list[citizen_service_pb2.IssuePersonalIdentificationNumberRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.failure: grpc.StatusCode | None = None
        self.release = threading.Event()
        self.hang = False

    def IssuePersonalIdentificationNumber(self, request, context):
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        if self.hang:
            self.release.wait(10)
        if self.failure is not None:
            context.abort(self.failure, "registered_birth.full_name: refused")
        return citizen_service_pb2.IssuePersonalIdentificationNumberResponse(
            personal_identification_number=PIN, newly_issued=True
        )


@pytest.fixture
def population():
    service = FakeCitizenService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    citizen_service_pb2_grpc.add_CitizenServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield service, GatewayPinIssuer(channel)
    service.release.set()
    channel.close()
    server.stop(grace=None)


def committed(**changes) -> br.BirthRegistration:
    entered = registration(**changes)
    entered.name = "birthRegistrations/00004-2016-17"
    return entered


def test_issue_sends_the_registered_birth_with_request_id_and_purpose(population):
    """Decree 137/2015 Art. 14: the registry sends exactly the listed data, with its headers."""
    service, issuer = population
    entered = committed()
    entered.mother.CopyFrom(br.Parent(undetermined=True))
    entered.father.personal_identification_number = "001088000001"
    request_id = str(uuid.uuid4())

    assert issuer.issue(entered, request_id) == PIN

    (sent,) = service.requests
    child = entered.child
    assert sent.request_id == request_id
    assert sent.registered_birth == citizen_pb2.RegisteredBirth(
        birth_registration="birthRegistrations/00004-2016-17",
        full_name=child.name,
        date_of_birth=child.date_of_birth,
        sex=child.sex,
        registration_place=entered.registration_unit,
        home_town=child.home_town,
        ethnicity=child.ethnicity,
        nationality=child.nationality,
        father=citizen_pb2.RelatedPerson(
            full_name=entered.father.name,
            nationality=entered.father.nationality,
            personal_identification_number="001088000001",
        ),
        mother=citizen_pb2.RelatedPerson(undetermined=True),
    )
    headers = service.metadata[0]
    assert headers[metadata.REQUEST_ID] == request_id
    assert headers[metadata.PURPOSE] == "birth-registration"


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.ALREADY_EXISTS,
    ],
)
def test_a_definitive_refusal_is_pin_rejected(population, code):
    """Asking again with the same data would get the same answer."""
    service, issuer = population
    service.failure = code

    with pytest.raises(PinRejected) as error:
        issuer.issue(committed(), str(uuid.uuid4()))

    assert error.value.code == code
    assert error.value.details == "registered_birth.full_name: refused"


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL],
)
def test_a_transient_failure_is_unavailable(population, code):
    """The PIN may still be obtained later."""
    service, issuer = population
    service.failure = code

    with pytest.raises(Unavailable):
        issuer.issue(committed(), str(uuid.uuid4()))


def test_a_slow_population_database_is_unavailable_after_the_timeout(population):
    """DEADLINE_EXCEEDED: the registry does not wait longer than it was told."""
    service, issuer = population
    service.hang = True

    with pytest.raises(Unavailable, match="DEADLINE_EXCEEDED"):
        issuer.issue(committed(), str(uuid.uuid4()), timeout=0.2)


def test_an_unreachable_gateway_is_unavailable():
    """Nothing listening is a transient failure, reported at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(Unavailable):
        GatewayPinIssuer(channel).issue(committed(), str(uuid.uuid4()), timeout=2.0)


@pytest.mark.parametrize(
    ("value", "fits"),
    [
        ("001316000000", True),  # Hà Nội, girl, 2016
        ("001216000000", False),  # a boy's digit
        ("001315000000", False),  # born 2015
        ("079316000000", False),  # Hồ Chí Minh
        ("00131600000", False),  # eleven digits
        ("00131600000a", False),
    ],
)
def test_pin_fits_checks_province_sex_and_year(value, fits):
    """Decree 137/2015 Art. 13, for a girl born 2016 and registered in Trúc Bạch, Hà Nội."""
    entered = committed(unit_code=TRUC_BACH, sex=sex_pb2.SEX_FEMALE, born=(2016, 3, 10))

    assert pin_fits(value, entered, code_lists()) is fits


def test_pin_fits_uses_the_pin_code_of_the_province_of_the_unit():
    """Nghệ An's statistics code is 40 and its PIN code 040."""
    entered = committed(unit_code=KIM_SON, sex=sex_pb2.SEX_MALE, born=(1999, 1, 1))

    assert pin_fits("040099000001", entered, code_lists())


def test_a_legal_representative_is_sent_when_neither_parent_is_determined(population):
    service, issuer = population
    entered = committed()
    guardian = br.Parent()
    guardian.CopyFrom(entered.father)
    entered.legal_representative.CopyFrom(guardian)
    entered.father.CopyFrom(br.Parent(undetermined=True))
    entered.mother.CopyFrom(br.Parent(undetermined=True))

    issuer.issue(entered, str(uuid.uuid4()))

    (sent,) = service.requests
    assert sent.registered_birth.legal_representative == citizen_pb2.RelatedPerson(
        full_name=guardian.name, nationality=guardian.nationality
    )
    assert sent.registered_birth.father == citizen_pb2.RelatedPerson(undetermined=True)
