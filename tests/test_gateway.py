"""The gateway against an echo upstream, through real mutual TLS on loopback: identity,
revocation, rotation, policy and purposes, routing of every cardinality, deadlines, limits,
health, reflection and metrics."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from echo_upstream import (
    BIDI,
    CLIENT_STREAM,
    FAIL,
    SERVER_STREAM,
    SERVICE,
    SLEEP,
    SLOW_STREAM,
    STREAM_COPIES,
    UNARY,
    start_echo,
)  # fmt: skip
from gateway_fixtures import DEV_POLICY, POLICY, PORTAL, PURPOSE, Setup
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from prometheus_client.openmetrics import parser as openmetrics_parser
from stack import tls_of

from certs.pki import (
    CertificatePaths,
    create_ca,
    issue_certificate,
    revoke,
    write_certificate,
)  # fmt: skip
from lienthong import metadata
from lienthong.config import GatewayLimits
from lienthong.tls import TlsMaterial, secure_channel


def _unary(channel: grpc.Channel, payload: bytes = b"hello", **options) -> bytes:
    options.setdefault("metadata", PURPOSE)
    return channel.unary_unary(UNARY)(payload, timeout=10, **options)


def _error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def _reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    return info.reason


# Routing ----------------------------------------------------------------------------------


def test_every_cardinality_passes_every_message_intact(setup: Setup) -> None:
    payloads = [b"", b"\x00\xff" * 10, bytes(range(256)) * 4096]  # up to 1 MiB
    with setup.channel() as channel:
        assert _unary(channel, payloads[2]) == payloads[2]
        streamed = list(
            channel.unary_stream(SERVER_STREAM)(payloads[1], timeout=10, metadata=PURPOSE)
        )
        assert streamed == [bytes([index]) + payloads[1] for index in range(STREAM_COPIES)]
        joined = channel.stream_unary(CLIENT_STREAM)(iter(payloads), timeout=10, metadata=PURPOSE)
        assert joined == b"|".join(payloads)
        echoed = list(channel.stream_stream(BIDI)(iter(payloads), timeout=10, metadata=PURPOSE))
        assert echoed == payloads


def test_a_deadline_reaches_the_upstream_which_sees_the_cancellation(setup: Setup) -> None:
    with setup.channel() as channel:
        started = time.monotonic()
        error = _error(lambda: channel.unary_unary(SLEEP)(b"", timeout=0.2, metadata=PURPOSE))
        elapsed = time.monotonic() - started
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.0  # the upstream sleeps 2 s unless cancelled
    assert setup.echo.cancelled.wait(timeout=2.0)


def test_a_stream_may_outlast_the_unary_upstream_timeout(make_setup) -> None:
    """upstream_timeout bounds unary calls; a streaming call has stream_timeout instead."""
    setup = make_setup(GatewayLimits(upstream_timeout=0.5, stream_timeout=10.0))
    with setup.channel() as channel:
        streamed = list(
            channel.unary_stream(SLOW_STREAM)(b"x", timeout=10, metadata=PURPOSE)
        )  # three messages over 1.2 s
        error = _error(lambda: channel.unary_unary(SLEEP)(b"", timeout=10, metadata=PURPOSE))
    assert streamed == [bytes([index]) + b"x" for index in range(STREAM_COPIES)]
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_upstream_status_details_and_trailers_come_back_unchanged(setup: Setup) -> None:
    with setup.channel() as channel:
        error = _error(lambda: channel.unary_unary(FAIL)(b"", timeout=10, metadata=PURPOSE))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "echo says no"
    assert _reason(error) == "ECHO_REFUSED"
    assert ("echo-trailer", "kept") in [
        (item.key, item.value) for item in error.trailing_metadata()
    ]


def test_an_unknown_method_is_unimplemented(setup: Setup) -> None:
    with setup.channel() as channel:
        error = _error(lambda: channel.unary_unary(f"/{SERVICE}/Missing")(b"", timeout=10))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_identity_metadata_spoofed_by_a_caller_never_reaches_the_upstream(setup: Setup) -> None:
    spoofed = (
        (metadata.PURPOSE, "testing"),
        (metadata.REQUEST_ID, "7c1a3a52-8f1e-4c6e-9a57-2f1f6f5c3c11"),
        (metadata.ON_BEHALF_OF, "officers/42"),
        (metadata.CALLER, "spiffe://lienthong.local/gateway"),
        (metadata.EXCHANGE_ID, "forged"),
        ("lienthong-anything", "forged"),
    )
    with setup.channel() as channel:
        _unary(channel, metadata=spoofed)
    (seen,) = setup.echo.metadata
    assert seen[metadata.CALLER] == PORTAL
    assert seen[metadata.EXCHANGE_ID] != "forged"
    assert "lienthong-anything" not in seen
    assert seen[metadata.PURPOSE] == "testing"
    assert seen[metadata.REQUEST_ID] == "7c1a3a52-8f1e-4c6e-9a57-2f1f6f5c3c11"
    assert seen[metadata.ON_BEHALF_OF] == "officers/42"


# Policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "reason"),
    [((), "MISSING_PURPOSE"), (((metadata.PURPOSE, "marketing"),), "PURPOSE_NOT_GRANTED")],
)
def test_a_missing_or_ungranted_purpose_is_denied(setup: Setup, sent, reason: str) -> None:
    with setup.channel() as channel:
        error = _error(lambda: _unary(channel, metadata=sent))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(error) == reason
    assert setup.echo.metadata == []


def test_a_method_not_granted_to_this_caller_is_denied(setup: Setup) -> None:
    with setup.channel("justice") as channel:
        assert _unary(channel) == b"hello"
        error = _error(lambda: channel.unary_unary(FAIL)(b"", timeout=10, metadata=PURPOSE))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(error) == "NOT_GRANTED"


def test_the_policy_reloads_without_restart(setup: Setup) -> None:
    with setup.channel() as channel:
        assert _unary(channel) == b"hello"
        setup.policy.write_text(POLICY.replace('"testing"]', '"auditing"]', 1), encoding="utf-8")
        assert _eventually(
            lambda: _code_of(lambda: _unary(channel)) == grpc.StatusCode.PERMISSION_DENIED
        )


def test_a_broken_policy_file_keeps_the_last_good_policy(setup: Setup) -> None:
    setup.policy.write_text("[[grant]]\ncaller = 'nobody'\n", encoding="utf-8")
    time.sleep(0.6)
    with setup.channel() as channel:
        assert _unary(channel) == b"hello"


# Identity ---------------------------------------------------------------------------------


def test_a_certificate_revoked_while_the_gateway_runs_is_refused_within_a_second(
    setup: Setup,
) -> None:
    portal = x509.load_pem_x509_certificate(
        setup.pki.paths("officer-portal").certificate.read_bytes()
    )
    with setup.channel() as channel:
        assert _unary(channel) == b"hello"
        revoke(setup.pki, portal)
        revoked_at = time.monotonic()
        assert _eventually(
            lambda: _code_of(lambda: _unary(channel)) == grpc.StatusCode.UNAUTHENTICATED
        )
        assert time.monotonic() - revoked_at < 1.0
    with setup.channel("justice") as other:
        assert _unary(other) == b"hello"


@pytest.mark.parametrize(
    "dates",
    [
        (dt.timedelta(days=-30), dt.timedelta(days=-1)),  # expired
        (dt.timedelta(days=1), dt.timedelta(days=30)),  # not yet valid
    ],
)
def test_a_certificate_outside_its_validity_fails_the_handshake(setup: Setup, dates) -> None:
    ca = x509.load_pem_x509_certificate(setup.pki.ca_certificate.read_bytes())
    ca_key = serialization.load_pem_private_key(setup.pki.ca_private_key.read_bytes(), None)
    now = dt.datetime.now(dt.UTC)
    certificate, key = issue_certificate(
        ca, ca_key, spiffe_id=PORTAL, server=False, client=True,
        not_before=now + dates[0], not_after=now + dates[1],
    )  # fmt: skip
    with secure_channel(setup.address, setup.material(certificate, key)) as channel:
        assert _code_of(lambda: _unary(channel)) == grpc.StatusCode.UNAVAILABLE
    assert setup.echo.metadata == []


def test_a_certificate_not_for_client_use_is_refused(setup: Setup) -> None:
    ca = x509.load_pem_x509_certificate(setup.pki.ca_certificate.read_bytes())
    ca_key = serialization.load_pem_private_key(setup.pki.ca_private_key.read_bytes(), None)
    for options in (
        {"server": True, "client": False},
        {"server": False, "client": True, "key_usage_digital_signature": False},
    ):
        certificate, key = issue_certificate(ca, ca_key, spiffe_id=PORTAL, **options)
        with secure_channel(setup.address, setup.material(certificate, key)) as channel:
            assert _code_of(lambda: _unary(channel)) in {
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.UNAUTHENTICATED,
            }
    assert setup.echo.metadata == []


def test_a_certificate_from_another_ca_fails_the_handshake(setup: Setup) -> None:
    other, other_key = create_ca("hostile CA")
    certificate, key = issue_certificate(
        other, other_key, spiffe_id=PORTAL, server=False, client=True
    )
    with secure_channel(setup.address, setup.material(certificate, key)) as channel:
        assert _code_of(lambda: _unary(channel)) == grpc.StatusCode.UNAVAILABLE


def test_the_server_certificate_and_ca_bundle_rotate_without_restart(setup: Setup) -> None:
    """New connections get the new certificate; clients of the old CA keep working."""
    new_ca, new_ca_key = create_ca("lienthong development CA 2")
    certificate, key = issue_certificate(
        new_ca, new_ca_key, spiffe_id="spiffe://lienthong.local/gateway", server=True, client=False
    )
    old_bundle = setup.pki.ca_certificate.read_bytes()
    # The gateway reads the dev PKI's files: swap them as an operator would (new files renamed in).
    staging = setup.pki.directory / "staging"
    staging.mkdir()
    write_certificate(certificate, key, CertificatePaths(staging / "gw.pem", staging / "gw.key"))
    bundle = staging / "ca.pem"
    bundle.write_bytes(old_bundle + new_ca.public_bytes(serialization.Encoding.PEM))
    server = setup.pki.paths("gateway-server")
    shutil.move(staging / "gw.key", server.private_key)
    shutil.move(staging / "gw.pem", server.certificate)
    shutil.move(bundle, setup.pki.ca_certificate)
    time.sleep(0.3)  # past the file watch interval
    portal = tls_of(setup.pki, "officer-portal").read()
    trusting_only_new = TlsMaterial(
        new_ca.public_bytes(serialization.Encoding.PEM), portal.certificate, portal.private_key
    )
    with secure_channel(setup.address, trusting_only_new) as channel:
        assert _unary(channel) == b"hello"


def test_the_upstream_client_certificate_rotates_without_restart(setup: Setup) -> None:
    with setup.channel() as channel:
        assert _unary(channel) == b"hello"
        ca = x509.load_pem_x509_certificate(setup.pki.ca_certificate.read_bytes())
        ca_key = serialization.load_pem_private_key(setup.pki.ca_private_key.read_bytes(), None)
        renewed, key = issue_certificate(
            ca, ca_key, spiffe_id="spiffe://lienthong.local/gateway", server=False, client=True
        )
        write_certificate(renewed, key, setup.pki.paths("gateway-client"))
        time.sleep(0.3)  # past the file watch interval
        assert _unary(channel) == b"hello"
    first, second = setup.echo.peer_certificates
    assert first != second
    assert second == renewed.public_bytes(serialization.Encoding.PEM)


# Limits -----------------------------------------------------------------------------------


def test_a_burst_beyond_a_callers_rate_limit_is_refused_for_the_excess_only(make_setup) -> None:
    setup = make_setup(GatewayLimits(rate_per_second=0.001, burst=5, max_concurrent=64))
    with setup.channel() as portal, setup.channel("justice") as registry:
        codes = [_code_of(lambda: _unary(portal)) for _ in range(8)]
        assert codes == [grpc.StatusCode.OK] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
        error = _error(lambda: _unary(portal))
        assert _reason(error) == "RATE_LIMITED"
        assert _unary(registry) == b"hello"  # another caller is unaffected
    assert len(setup.echo.metadata) == 6


def test_a_message_over_the_size_limit_is_refused(make_setup) -> None:
    setup = make_setup(GatewayLimits(max_message_bytes=64 * 1024))
    with setup.channel() as channel:
        assert (
            _code_of(lambda: _unary(channel, b"x" * 100_000)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert _unary(channel, b"x" * 1000) == b"x" * 1000


# Operations -------------------------------------------------------------------------------


def _health(setup: Setup, service: str) -> int:
    with setup.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_follows_each_upstream_as_it_comes_and_goes(setup: Setup) -> None:
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert _health(setup, "") == serving
    assert _eventually(lambda: _health(setup, SERVICE) == serving, timeout=5)
    setup.echo_server.stop(grace=None).wait()
    assert _eventually(lambda: _health(setup, SERVICE) == not_serving, timeout=5)
    setup.echo_server, _, setup.echo = start_echo(
        tls_of(setup.pki, "police").read(), f"127.0.0.1:{setup.echo_port}"
    )
    assert _eventually(lambda: _health(setup, SERVICE) == serving, timeout=10)


def test_reflection_lists_the_contract_services(setup: Setup) -> None:
    with setup.channel() as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {
        "lienthong.civilregistry.v1.BirthRegistrationService",
        "lienthong.population.v1.CitizenService",
        "lienthong.gateway.v1.AuditService",
    } <= services


def test_metrics_count_requests_rejections_and_latency(make_setup) -> None:
    setup = make_setup(GatewayLimits(rate_per_second=0.001, burst=2))
    with setup.channel() as channel:
        for _ in range(3):
            _code_of(lambda: _unary(channel))
    samples = _scrape(setup.gateway.metrics_port)
    assert samples[("lienthong_gateway_requests_total", PORTAL, "OK", UNARY)] == 2
    rejected = ("lienthong_gateway_rejections_total", PORTAL, UNARY, "RATE_LIMITED")
    assert samples[rejected] == 1
    assert samples[("lienthong_gateway_request_duration_seconds_count", UNARY)] == 2
    assert samples[("lienthong_gateway_in_flight_requests", PORTAL)] == 0


def _scrape(port: int) -> dict[tuple[str, ...], float]:
    """Every sample of /metrics (OpenMetrics), by name and label values in label-name order."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = response.read().decode()
    return {
        (sample.name, *(value for _, value in sorted(sample.labels.items()))): sample.value
        for family in openmetrics_parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


# Helpers ----------------------------------------------------------------------------------


def _code_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _eventually(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_policy_check_accepts_the_development_policy_and_names_what_is_wrong(
    tmp_path: Path,
) -> None:
    """`lienthong policy check` validates a policy against the contracts."""
    command = [sys.executable, "-m", "lienthong.cli", "policy", "check"]
    good = subprocess.run([*command, str(DEV_POLICY)], capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stderr
    assert "valid" in good.stdout
    cases = {
        "no method": ("lienthong.population.v1.CitizenService/IssuePin", "no method"),
        "no service": ("lienthong.population.v1.Nothing/*", "no service"),
    }
    for method, message in cases.values():
        bad = tmp_path / "bad.toml"
        bad.write_text(
            f'[[grant]]\ncaller = "{PORTAL}"\nmethods = ["{method}"]\npurposes = ["testing"]\n',
            encoding="utf-8",
        )
        refused = subprocess.run([*command, str(bad)], capture_output=True, text=True, check=False)
        assert refused.returncode == 1
        assert message in refused.stderr
    bad.write_text(
        '[[grant]]\ncaller = "spiffe://elsewhere/x"\n'
        'methods = ["lienthong.population.v1.CitizenService/*"]\npurposes = ["testing"]\n',
        encoding="utf-8",
    )
    refused = subprocess.run([*command, str(bad)], capture_output=True, text=True, check=False)
    assert refused.returncode == 1
    assert "not a SPIFFE ID" in refused.stderr
