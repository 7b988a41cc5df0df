"""A birth registration through the real path: officer (own certificate) -> gateway -> Justice
adapter -> gateway -> Police adapter, all over mutual TLS on loopback."""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from builders import issue_request
from cryptography.hazmat.primitives import serialization
from google.protobuf import field_mask_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from stack import Stack, officer_tls, start_stack

from certs.pki import BOOTSTRAP_ADMINISTRATOR, create_ca, issue_certificate
from lienthong import metadata
from lienthong.civilregistry.v1 import (
    birth_registration_pb2,
    birth_registration_service_pb2,
    birth_registration_service_pb2_grpc,
)
from lienthong.demo import SAMPLES, format_table, pin_matches, register_samples, sample_request
from lienthong.person.v1 import sex_pb2
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2, citizen_service_pb2_grpc
from lienthong.reference import code_lists
from lienthong.tls import TlsMaterial, secure_channel

REGISTER = "/lienthong.civilregistry.v1.BirthRegistrationService/RegisterBirth"
ISSUE = "/lienthong.population.v1.CitizenService/IssuePersonalIdentificationNumber"
PORTAL = "spiffe://lienthong.local/moj/officer-portal"
OFFICERS = "spiffe://lienthong.local/moj/officers/"
REGISTRY = "spiffe://lienthong.local/moj/civil-registry"


@pytest.fixture
def stack(pki, tmp_path: Path) -> Iterator[Stack]:
    running = start_stack(pki, tmp_path)
    yield running
    running.stop_all()


def _exchange_lines(stack: Stack) -> list[dict]:
    """The gateway's log lines of exchanges, as its log file holds them now."""
    return [event for event in stack.gateway.events() if event["event"] == "exchange"]


def _register_samples(stack: Stack) -> list[birth_registration_pb2.BirthRegistration]:
    """The demo's samples, each registered by an officer of its unit, as `lienthong run` does."""
    administrator = officer_tls(stack.pki, BOOTSTRAP_ADMINISTRATOR)
    return register_samples(stack.gateway_address, administrator, stack.pki.directory, code_lists())


def _register(channel: grpc.Channel, request) -> birth_registration_pb2.BirthRegistration:
    stub = birth_registration_service_pb2_grpc.BirthRegistrationServiceStub(channel)
    return stub.RegisterBirth(
        request,
        timeout=10,
        metadata=(
            (metadata.REQUEST_ID, request.request_id),
            (metadata.PURPOSE, "birth-registration"),
        ),
    ).birth_registration


def test_each_kind_of_birth_is_registered_and_only_eligible_ones_get_a_matching_pin(
    stack: Stack,
) -> None:
    codes = code_lists()
    registrations = _register_samples(stack)
    by_label = dict(zip((sample.label for sample in SAMPLES), registrations, strict=True))
    issued = [r for r in registrations if r.pin_status == birth_registration_pb2.PIN_STATUS_ISSUED]
    assert len(issued) == 4
    assert all(pin_matches(registration, codes) for registration in issued)
    assert (
        by_label[
            "late first registration, woman born 1999, Hải Phòng"
        ].personal_identification_number[:6]
        == "031199"
    )
    assert (
        by_label["foreign element, Vietnamese boy, Đà Nẵng"].personal_identification_number[:4]
        == "0482"
    )
    for label in (
        "foreign element, Korean girl, Đà Nẵng",
        "re-registration, man born 1998, Quế Phong",
    ):
        assert by_label[label].pin_status == birth_registration_pb2.PIN_STATUS_NOT_APPLICABLE
        assert by_label[label].personal_identification_number == ""
    assert "yes" in format_table(registrations, codes)


def test_the_gateway_logs_one_line_per_exchange_without_personal_data(stack: Stack) -> None:
    _register_samples(stack)
    lines = _exchange_lines(stack)
    registered = [line for line in lines if line["method"] == REGISTER]
    issued = [line for line in lines if line["method"] == ISSUE]
    assert len(registered) == len(SAMPLES)
    assert len(issued) == 4
    assert all(
        line["caller"].startswith(OFFICERS) and line["status"] == "OK" for line in registered
    )
    assert len({line["caller"] for line in registered}) == len({s.unit_code for s in SAMPLES})
    assert all(line["caller"] == REGISTRY and line["status"] == "OK" for line in issued)
    assert all(line["request_id"] and len(line["request_sha256"]) == 64 for line in lines)
    text = repr(stack.gateway.events())
    for personal in ("NGUYỄN", "TRẦN", "BÌNH", "CÚC", "2016-03-14"):
        assert personal not in text


def test_a_repeated_request_returns_the_first_answer(stack: Stack) -> None:
    request = sample_request(SAMPLES[0], code_lists())
    with stack.as_officer(SAMPLES[0].unit_code) as channel:
        first = _register(channel, request)
        again = _register(channel, request)
    assert again.name == first.name
    assert again.personal_identification_number == first.personal_identification_number != ""


def test_a_registration_succeeds_with_pin_pending_while_the_population_side_is_down(
    stack: Stack,
) -> None:
    stack.stop("police")
    with stack.as_officer(SAMPLES[1].unit_code) as channel:
        registration = _register(channel, sample_request(SAMPLES[1], code_lists()))
        assert registration.pin_status == birth_registration_pb2.PIN_STATUS_PENDING
        stub = birth_registration_service_pb2_grpc.BirthRegistrationServiceStub(channel)
        stored = stub.GetBirthRegistration(
            birth_registration_service_pb2.GetBirthRegistrationRequest(name=registration.name),
            timeout=10,
            metadata=((metadata.PURPOSE, "birth-registration"),),
        ).birth_registration
    assert stored.registration_number == registration.registration_number


def test_invalid_input_comes_back_through_the_gateway_with_field_violations(stack: Stack) -> None:
    request = sample_request(SAMPLES[0], code_lists())
    request.birth_registration.child.name.given_name = "AN3"
    request.birth_registration.registration_unit.code = "99999"
    with stack.as_officer(SAMPLES[0].unit_code) as channel, pytest.raises(grpc.RpcError) as raised:
        _register(channel, request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    fields = {violation.field for violation in bad_request.field_violations}
    assert {
        "birth_registration.child.name.given_name",
        "birth_registration.registration_unit.code",
    } <= fields


def test_a_method_the_policy_does_not_grant_is_denied_and_logged(stack: Stack) -> None:
    """The officers' portal, granted only the audit log, may not ask for a PIN."""
    with stack.channel("officer-portal") as channel, pytest.raises(grpc.RpcError) as raised:
        citizen_service_pb2_grpc.CitizenServiceStub(channel).IssuePersonalIdentificationNumber(
            issue_request(), timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_details_pb2.ErrorInfo()
    status = rpc_status.from_call(raised.value)
    assert status is not None
    assert any(detail.Unpack(info) for detail in status.details)
    assert info.reason == "NOT_GRANTED"
    (line,) = _exchange_lines(stack)
    assert (line["caller"], line["method"], line["status"]) == (PORTAL, ISSUE, "PERMISSION_DENIED")
    assert line["upstream"] is None


def test_an_unknown_method_is_unimplemented_and_logged(stack: Stack) -> None:
    with stack.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/lienthong.civilregistry.v1.BirthRegistrationService/Nope")(
            b"", timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert _exchange_lines(stack)[0]["status"] == "UNIMPLEMENTED"


def test_adapters_accept_calls_from_the_gateway_only(stack: Stack) -> None:
    """A certificate of the same CA does not let the portal bypass the gateway and its policy."""
    with (
        stack.channel("officer-portal", stack.police_address) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        citizen_service_pb2_grpc.CitizenServiceStub(channel).IssuePersonalIdentificationNumber(
            issue_request(), timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _call_register(channel: grpc.Channel) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        _register(channel, sample_request(SAMPLES[0], code_lists()))
    return raised.value


def _raw_tls_is_refused(stack: Stack, version: ssl.TLSVersion) -> bool:
    """Whether a plain TLS client without certificate gets no HTTP/2 byte from the gateway.

    With TLS 1.2 the server aborts the handshake itself; with TLS 1.3 the client's side of the
    handshake ends first, and the server closes the connection instead of answering.
    """
    host, port = stack.gateway_address.split(":")
    context = ssl.create_default_context(cafile=str(stack.pki.ca_certificate))
    context.check_hostname = False
    context.minimum_version = context.maximum_version = version
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                if version == ssl.TLSVersion.TLSv1_2:
                    return False  # the handshake should not have completed
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                return tls.recv(1) == b""
        except ssl.SSLError:
            return True


def test_a_client_without_certificate_fails_the_tls_handshake(stack: Stack) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=stack.pki.ca_certificate.read_bytes()
    )
    options = (("grpc.ssl_target_name_override", "localhost"),)
    with grpc.secure_channel(stack.gateway_address, credentials, options) as channel:
        assert _call_register(channel).code() == grpc.StatusCode.UNAVAILABLE
    assert _raw_tls_is_refused(stack, ssl.TLSVersion.TLSv1_2)
    assert _raw_tls_is_refused(stack, ssl.TLSVersion.TLSv1_3)
    assert _exchange_lines(stack) == []


def test_a_client_certificate_from_another_ca_fails_the_tls_handshake(stack: Stack) -> None:
    other_ca, other_key = create_ca("another CA")
    certificate, key = issue_certificate(
        other_ca, other_key, spiffe_id=PORTAL, server=False, client=True
    )
    material = TlsMaterial(
        stack.pki.ca_certificate.read_bytes(),
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    with secure_channel(stack.gateway_address, material) as channel:
        assert _call_register(channel).code() == grpc.StatusCode.UNAVAILABLE
    assert _exchange_lines(stack) == []


def test_a_bulk_import_streams_through_the_gateway_with_an_answer_per_item(stack: Stack) -> None:
    """Bidirectional streaming is forwarded as a stream: each item gets its own outcome."""
    items = [
        issue_request("birthRegistrations/00004-2016-101"),
        issue_request("birthRegistrations/00004-2016-102", nationality="KR"),
        issue_request("birthRegistrations/00004-2016-103"),
    ]
    requests = [
        citizen_service_pb2.StreamIssuePersonalIdentificationNumbersRequest(
            request_id=item.request_id, registered_birth=item.registered_birth
        )
        for item in items
    ]
    with stack.channel("justice") as channel:
        stub = citizen_service_pb2_grpc.CitizenServiceStub(channel)
        answers = list(
            stub.StreamIssuePersonalIdentificationNumbers(
                iter(requests), timeout=10, metadata=((metadata.PURPOSE, "birth-registration"),)
            )
        )
    assert [answer.request_id for answer in answers] == [item.request_id for item in items]
    assert [answer.WhichOneof("result") for answer in answers] == ["issued", "failure", "issued"]
    assert answers[1].failure.code == code_pb2.FAILED_PRECONDITION
    assert answers[0].issued.personal_identification_number[:6] == "001316"
    (line,) = _exchange_lines(stack)
    assert line["status"] == "OK"
    assert line["request_bytes"] == sum(request.ByteSize() for request in requests)


def test_a_correction_through_the_gateway_reestablishes_the_pin_with_its_provenance(
    stack: Stack,
) -> None:
    """The registry's correction reaches the population side with the gateway's exchange id."""
    with stack.as_officer(SAMPLES[0].unit_code) as officer:
        registration = _register(officer, sample_request(SAMPLES[0], code_lists()))
    old = registration.personal_identification_number
    correction = citizen_service_pb2.UpdateCitizenRequest(
        request_id=str(uuid.uuid4()),
        citizen=citizen_pb2.Citizen(name=f"citizens/{old}", sex=sex_pb2.SEX_MALE),
        update_mask=field_mask_pb2.FieldMask(paths=["sex"]),
        reason="Quyết định cải chính 3/QĐ",
    )
    with stack.channel("justice") as registry:
        stub = citizen_service_pb2_grpc.CitizenServiceStub(registry)
        answer, call = stub.UpdateCitizen.with_call(
            correction,
            timeout=10,
            metadata=(
                (metadata.PURPOSE, "civil-status-correction"),
                (metadata.ON_BEHALF_OF, "officers/12"),
            ),
        )
        verified = stub.VerifyCitizen(
            citizen_service_pb2.VerifyCitizenRequest(
                personal_identification_number=answer.citizen.personal_identification_number,
                claim=citizen_service_pb2.CitizenClaim(sex=sex_pb2.SEX_MALE),
            ),
            timeout=10,
            metadata=((metadata.PURPOSE, "identity-verification"),),
        )
    assert answer.pin_outcome == citizen_service_pb2.PIN_OUTCOME_REESTABLISHED
    assert answer.cancelled_personal_identification_number == old
    assert answer.citizen.personal_identification_number[3] == "2"
    assert [r.result for r in verified.results] == [citizen_service_pb2.VERIFICATION_RESULT_MATCH]
    receipt = dict(call.trailing_metadata())["lienthong-receipt-bin"]
    assert receipt.startswith(b"lienthong receipt v1\n")
