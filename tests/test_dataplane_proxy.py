"""The compiled data plane (gateway/dataplane, issue 15) between real grpcio peers.

lienthong-gateway is started as it will be in production, from the configuration the control
plane writes (gateway/dataplane_config.py), and called by grpcio clients in front of the echo
upstream, a grpcio server: every cardinality, rich errors relayed, refusals on the headers,
and an upstream that is not the one the route names. Every exchange is in the audit log,
with its receipt.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from dataplane_build import built_binary
from echo_upstream import (
    BIDI,
    CLIENT_STREAM,
    FAIL,
    METHODS,
    SERVER_STREAM,
    SERVICE,
    STREAM_COPIES,
    UNARY,
    Echo,
    start_echo,
)
from gateway_fixtures import POLICY, PURPOSE
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from openssl_certs import Made, OpenSsl
from ports import free_port
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from sqlalchemy import text
from stack import tls_of
from waiting import eventually

from certs.pki import DevPki, init_dev_pki
from gateway.audit import merkle
from gateway.audit.entry import AuditEntry
from gateway.audit.tools import verify_log
from gateway.dataplane_config import write_dataplane_config
from lienthong import metadata
from lienthong.config import AuditConfig, GatewayConfig, GatewayLimits, Route
from lienthong.contracts import methods
from lienthong.db import make_engine
from lienthong.gateway.v1 import audit_service_pb2, audit_service_pb2_grpc
from lienthong.signed_note import NoteVerifier, parse_checkpoint, parse_receipt
from lienthong.tls import secure_channel

POPULATION = "spiffe://lienthong.local/mps/population"  # the echo upstream's certificate


@pytest.fixture(scope="module")
def binary() -> Path:
    return built_binary()


@dataclass
class Proxy:
    pki: DevPki
    address: str
    echo: Echo
    process: subprocess.Popen[bytes]
    audit_url: str
    metrics_address: str
    echo_server: grpc.Server
    echo_port: int

    def channel(self, system: str = "officer-portal") -> grpc.Channel:
        return secure_channel(self.address, tls_of(self.pki, system).read())


def _start(
    binary: Path,
    directory: Path,
    upstream_identity: str,
    limits: GatewayLimits = GatewayLimits(),  # noqa: B008 - frozen
) -> Iterator[Proxy]:
    pki = init_dev_pki(directory / "pki")
    echo_server, echo_port, echo = start_echo(tls_of(pki, "police").read())
    policy = directory / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    address = f"127.0.0.1:{free_port()}"
    audit_url = f"sqlite:///{directory / 'audit.db'}"
    upstream = f"127.0.0.1:{echo_port}"
    metrics_address = f"127.0.0.1:{free_port()}"
    config = GatewayConfig(
        listen=address,
        tls=tls_of(pki, "gateway-server"),
        upstream_tls=tls_of(pki, "gateway-client"),
        policy=policy,
        routes={SERVICE: Route(upstream, upstream_identity)},
        audit=AuditConfig(audit_url, pki.directory / "audit-log.key"),
        crls=(pki.directory / "crl.pem",),
        limits=limits,
        metrics_listen=metrics_address,
    )
    files = write_dataplane_config(config, {**methods(), **METHODS}, directory / "dataplane")
    log = (directory / "dataplane.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "--config", str(files.config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_for_listener(address, process)
        yield Proxy(pki, address, echo, process, audit_url, metrics_address, echo_server, echo_port)
    finally:
        process.send_signal(signal.SIGTERM)
        stopped = process.wait(timeout=10)
        log.close()
        echo_server.stop(grace=None)
    assert stopped == 0, "lienthong-gateway did not stop cleanly on SIGTERM"


def _wait_for_listener(address: str, process: subprocess.Popen[bytes]) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "lienthong-gateway exited at start"
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"lienthong-gateway never listened on {address}")


@pytest.fixture(scope="module")
def proxy(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    yield from _start(binary, tmp_path_factory.mktemp("dataplane"), POPULATION)


def test_a_unary_call_comes_back_unchanged_and_the_upstream_learns_the_caller(
    proxy: Proxy,
) -> None:
    sent = b"\x00\x01 bytes \xff as sent"
    with proxy.channel() as channel:
        answer, call = channel.unary_unary(UNARY).with_call(
            sent,
            timeout=10,
            metadata=(*PURPOSE, (metadata.CALLER, "spiffe://lienthong.local/forged")),
        )
    assert answer == sent
    assert call.code() == grpc.StatusCode.OK
    seen = proxy.echo.metadata[-1]
    assert seen[metadata.CALLER] == "spiffe://lienthong.local/moj/officer-portal"
    assert seen[metadata.PURPOSE] == "testing"


def test_streams_pass_through_in_every_direction(proxy: Proxy) -> None:
    with proxy.channel() as channel:
        copies = list(channel.unary_stream(SERVER_STREAM)(b"s", timeout=10, metadata=PURPOSE))
        joined = channel.stream_unary(CLIENT_STREAM)(
            iter([b"a", b"b", b"c"]), timeout=10, metadata=PURPOSE
        )
        echoed = list(
            channel.stream_stream(BIDI)(iter([b"1", b"22", b"333"]), timeout=10, metadata=PURPOSE)
        )
    assert copies == [bytes([index]) + b"s" for index in range(STREAM_COPIES)]
    assert joined == b"a|b|c"
    assert echoed == [b"1", b"22", b"333"]


def test_the_upstream_status_details_and_trailers_are_relayed(proxy: Proxy) -> None:
    with proxy.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(FAIL)(b"", timeout=10, metadata=PURPOSE)
    error = raised.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "echo says no"
    status = rpc_status.from_call(error)
    assert status is not None
    assert status.details[0].type_url.endswith("google.rpc.ErrorInfo")
    assert ("echo-trailer", "kept") in [
        (item.key, item.value) for item in error.trailing_metadata()
    ]


def test_a_caller_without_a_grant_is_refused_before_the_upstream_sees_it(proxy: Proxy) -> None:
    calls_before = len(proxy.echo.metadata)
    with proxy.channel("police") as channel, pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(UNARY)(b"x", timeout=10, metadata=PURPOSE)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with proxy.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(UNARY)(b"x", timeout=10)  # no purpose
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(proxy.echo.metadata) == calls_before


def test_an_upstream_with_another_identity_is_refused_and_its_address_never_shown(
    binary: Path, tmp_path: Path
) -> None:
    for wrong in _start(binary, tmp_path, "spiffe://lienthong.local/moj/civil-registry"):
        with wrong.channel() as channel, pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(UNARY)(b"x", timeout=10, metadata=PURPOSE)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "127.0.0.1" not in (raised.value.details() or "")
        assert wrong.echo.metadata == []


def test_every_answer_carries_the_receipt_of_its_completion_in_the_audit_log(
    proxy: Proxy,
) -> None:
    """Forwarded calls (OK, streamed, failed upstream) and a refused one each get one receipt,
    the gateway's, never the one the upstream forged; it opens with the log's key and names
    the completion at its leaf, with the status the caller saw. A forwarded call's request
    entry comes first, and the digests are of the messages as sent."""
    answers = _answers_of_every_kind(proxy)
    verifier = NoteVerifier((proxy.pki.directory / "audit-log.vkey").read_text().strip())
    engine = make_engine(proxy.audit_url)
    try:
        completions, leaves = [], []
        with engine.connect() as connection:
            for status, trailers in answers:
                receipts = [value for key, value in trailers if key == metadata.RECEIPT]
                assert len(receipts) == 1, (status, trailers)
                assert isinstance(receipts[0], bytes)
                receipt = parse_receipt(verifier.open(receipts[0].decode("utf-8")))
                data = connection.execute(
                    text("SELECT entry FROM audit_entry WHERE leaf_index = :i"),
                    {"i": receipt.leaf_index},
                ).scalar_one()
                assert merkle.leaf_hash(bytes(data)) == receipt.leaf_hash
                entry = AuditEntry.decode(bytes(data))
                assert (entry.kind, entry.status) == ("completion", status)
                assert entry.exchange_id == receipt.exchange_id
                completions.append(entry)
                leaves.append(receipt.leaf_index)
        unary, streamed_entry, failed_entry, refused_entry = completions
        assert unary.request_leaf is not None
        assert unary.request_leaf < leaves[0]
        assert unary.request_sha256 == unary.response_sha256 == hashlib.sha256(b"u").hexdigest()
        assert (unary.request_bytes, unary.response_bytes) == (1, 1)
        assert unary.upstream == POPULATION
        assert unary.caller == "spiffe://lienthong.local/moj/officer-portal"
        assert streamed_entry.response_bytes == STREAM_COPIES * 2
        assert failed_entry.request_leaf is not None
        assert refused_entry.request_leaf is None  # refused on its headers: a completion only
        verified = verify_log(engine, verifier)
        assert verified.ok, verified.problems
    finally:
        engine.dispose()


Trailers = tuple[tuple[str, str | bytes], ...]


def _answers_of_every_kind(proxy: Proxy) -> list[tuple[str, Trailers]]:
    """An OK unary call, a server stream, an upstream's error and a refused call, each with
    its status and trailers; the upstream forges a receipt on every answer it gives."""
    proxy.echo.on_call = lambda context: context.set_trailing_metadata(
        ((metadata.RECEIPT, b"forged by the upstream"),)
    )
    answers: list[tuple[str, Trailers]] = []
    try:
        with proxy.channel() as channel:
            _, call = channel.unary_unary(UNARY).with_call(b"u", timeout=10, metadata=PURPOSE)
            answers.append(("OK", call.trailing_metadata()))
            streamed = channel.unary_stream(SERVER_STREAM)(b"s", timeout=10, metadata=PURPOSE)
            list(streamed)
            answers.append(("OK", streamed.trailing_metadata()))
            with pytest.raises(grpc.RpcError) as failed:
                channel.unary_unary(FAIL)(b"", timeout=10, metadata=PURPOSE)
            answers.append(("FAILED_PRECONDITION", failed.value.trailing_metadata()))
        with proxy.channel("police") as channel, pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(UNARY)(b"x", timeout=10, metadata=PURPOSE)
        answers.append(("PERMISSION_DENIED", refused.value.trailing_metadata()))
    finally:
        proxy.echo.on_call = None
    return answers


PORTAL = "spiffe://lienthong.local/moj/officer-portal"


def test_weak_and_foreign_certificates_fail_the_handshake_audited_with_peer_and_reason(
    proxy: Proxy, tmp_path: Path
) -> None:
    """RSA-1024, a SHA-1 signature (both made by openssl, signed by our own CA) and a
    certificate of another CA are refused at the TLS handshake; each refusal is a completion
    `tls-handshake` in the audit log with its reason and the caller's address, and no call
    reaches the upstream."""
    openssl = OpenSsl(tmp_path / "openssl")
    ours = Made(proxy.pki.ca_certificate, proxy.pki.ca_private_key)
    cases = {
        "WEAK_RSA_KEY": openssl.issue("rsa1024", ours, spiffe_id=PORTAL, key=("rsa:1024",)),
        "WEAK_SIGNATURE": openssl.issue("sha1", ours, spiffe_id=PORTAL, digest="sha1"),
        # A CA named like ours: webpki finds it by name and its signature does not verify;
        # an issuer that is not ours, as a certificate of an unknown CA is.
        "UNTRUSTED_ISSUER": openssl.issue("stranger", openssl.ca("other-ca"), spiffe_id=PORTAL),
    }
    calls_before = len(proxy.echo.metadata)
    for made in cases.values():
        material = made.material(proxy.pki.ca_certificate)
        channel = secure_channel(proxy.address, material)
        with channel, pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(UNARY)(b"x", timeout=5, metadata=PURPOSE)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(proxy.echo.metadata) == calls_before

    refusals = _handshake_refusals(proxy, until=set(cases))
    assert {entry.purpose for entry in refusals} >= set(cases)
    for entry in refusals:
        assert (entry.kind, entry.status, entry.caller, entry.upstream) == (
            "completion", "UNAUTHENTICATED", None, None,
        )  # fmt: skip
        assert (entry.request_id or "").startswith("127.0.0.1:")


def _handshake_refusals(proxy: Proxy, until: set[str]) -> list[AuditEntry]:
    """The log's refused-handshake entries, once their reasons include ``until`` (they are
    written without the accept loop waiting) or after 10 s."""
    engine = make_engine(proxy.audit_url)
    deadline = time.monotonic() + 10
    try:
        while True:
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT entry FROM audit_entry")).scalars()
                entries = [AuditEntry.decode(bytes(data)) for data in rows]
            refusals = [entry for entry in entries if entry.method == "tls-handshake"]
            if {entry.purpose for entry in refusals} >= until or time.monotonic() > deadline:
                return refusals
            time.sleep(0.1)
    finally:
        engine.dispose()


def _unary_calls(channel: grpc.Channel, count: int) -> list[tuple[grpc.StatusCode, str]]:
    """``count`` unary calls one after the other: each one's code and ErrorInfo reason."""
    unary = channel.unary_unary(UNARY)
    outcomes = []
    for _ in range(count):
        try:
            unary(b"x", timeout=10, metadata=PURPOSE)
        except grpc.RpcError as error:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
            info = error_details_pb2.ErrorInfo()
            if status is not None:
                status.details[0].Unpack(info)
            outcomes.append((error.code(), info.reason))  # type: ignore[attr-defined]
        else:
            outcomes.append((grpc.StatusCode.OK, ""))
    return outcomes


def test_calls_past_a_callers_limits_and_refusals_past_its_rate_are_resource_exhausted(
    binary: Path, tmp_path: Path
) -> None:
    """A caller's burst is admitted and the next calls are RATE_LIMITED with a retry delay;
    a caller refused again and again is answered REFUSALS_LIMITED past its burst, and only
    the refusals within it are in the audit log."""
    limits = GatewayLimits(rate_per_second=0.001, burst=3, max_concurrent=64)
    for limited in _start(binary, tmp_path, POPULATION, limits):
        with limited.channel() as channel:
            admitted = _unary_calls(channel, 5)
        assert (
            admitted
            == [(grpc.StatusCode.OK, "")] * 3
            + [(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")] * 2
        )
        with limited.channel("police") as channel:  # granted nothing
            refused = _unary_calls(channel, 6)
        assert (
            refused
            == [(grpc.StatusCode.PERMISSION_DENIED, "NOT_GRANTED")] * 3
            + [(grpc.StatusCode.RESOURCE_EXHAUSTED, "REFUSALS_LIMITED")] * 3
        )
        engine = make_engine(limited.audit_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT entry FROM audit_entry")).scalars()
                statuses = Counter(
                    entry.status
                    for entry in (AuditEntry.decode(bytes(data)) for data in rows)
                    if entry.kind == "completion"
                )
        finally:
            engine.dispose()
        assert statuses == {"OK": 3, "RESOURCE_EXHAUSTED": 2, "PERMISSION_DENIED": 3}


def test_the_health_check_answers_for_the_gateway_and_its_routed_services(proxy: Proxy) -> None:
    """grpc.health.v1 Check, from any certificate of the CA: SERVING for the gateway ("") and
    a routed service, NOT_FOUND for a service it does not serve; nothing reaches the upstream
    or the audit log."""

    def entries() -> int:
        engine = make_engine(proxy.audit_url)
        try:
            with engine.connect() as connection:
                return connection.execute(text("SELECT count(*) FROM audit_entry")).scalar_one()
        finally:
            engine.dispose()

    calls_before, entries_before = len(proxy.echo.metadata), entries()
    with proxy.channel("police") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == serving
        # SERVING once the gateway's first health check of the upstream came back.
        assert eventually(lambda: _health(proxy, SERVICE) == serving)
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="lienthong.no.v1.Such"), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(proxy.echo.metadata) == calls_before
    assert entries() == entries_before


def _health(proxy: Proxy, service: str) -> int:
    with proxy.channel("police") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(reply.status)


def _samples(proxy: Proxy) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of one scrape of the gateway's /metrics, by name and labels."""
    url = f"http://{proxy.metrics_address}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        scrape = response.read().decode("utf-8")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
    }


def test_metrics_count_answered_refused_and_unknown_calls_without_the_callers_text(
    proxy: Proxy,
) -> None:
    """The gateway's metric names and labels (docs/operations.md); a path that is no contract
    method is labelled `unknown`, and its text is in no series."""
    portal = "spiffe://lienthong.local/moj/officer-portal"
    police = "spiffe://lienthong.local/mps/population"
    before = _samples(proxy)
    with proxy.channel() as channel:
        assert _unary_calls(channel, 2) == [(grpc.StatusCode.OK, "")] * 2
        with pytest.raises(grpc.RpcError) as unknown:
            channel.unary_unary(f"/{SERVICE}/NoSuchMethodXyz")(b"", timeout=10)
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with proxy.channel("police") as channel:
        assert _unary_calls(channel, 1) == [(grpc.StatusCode.PERMISSION_DENIED, "NOT_GRANTED")]
    after = _samples(proxy)

    def grew(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    answered = "lienthong_gateway_requests_total"
    assert grew(answered, caller=portal, method=UNARY, code="OK") == 2
    assert grew(answered, caller=police, method=UNARY, code="PERMISSION_DENIED") == 1
    assert grew(answered, caller=portal, method="unknown", code="UNIMPLEMENTED") == 1
    rejected = "lienthong_gateway_rejections_total"
    assert grew(rejected, caller=police, method=UNARY, reason="NOT_GRANTED") == 1
    assert grew("lienthong_gateway_request_duration_seconds_count", method=UNARY) == 2
    assert after[("lienthong_gateway_in_flight_requests", frozenset({("caller", portal)}))] == 0
    assert not any("NoSuchMethodXyz" in str(labels) for _, labels in after)


def test_health_and_the_upstream_gauge_follow_the_upstream_as_it_goes_and_comes_back(
    binary: Path, tmp_path: Path
) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    up = ("lienthong_gateway_upstream_up", frozenset({("service", SERVICE)}))
    with contextmanager(_start)(binary, tmp_path, POPULATION) as proxy:
        assert _health(proxy, "") == serving
        assert eventually(lambda: _health(proxy, SERVICE) == serving)
        assert _samples(proxy)[up] == 1
        proxy.echo_server.stop(grace=None).wait()
        assert eventually(lambda: _health(proxy, SERVICE) == not_serving)
        assert _samples(proxy)[up] == 0
        assert _health(proxy, "") == serving
        back, _, _ = start_echo(tls_of(proxy.pki, "police").read(), f"127.0.0.1:{proxy.echo_port}")
        try:
            assert eventually(lambda: _health(proxy, SERVICE) == serving, timeout=20)
            assert _samples(proxy)[up] == 1
        finally:
            back.stop(grace=None)


def test_sigterm_lets_the_calls_in_flight_finish_then_stops(binary: Path, tmp_path: Path) -> None:
    """Told to stop, the gateway takes no new connection, but a call already forwarded
    finishes (its last messages sent after the signal) within the drain, and is recorded."""
    signalled = threading.Event()
    with contextmanager(_start)(binary, tmp_path, POPULATION) as proxy:

        def messages() -> Iterator[bytes]:
            yield b"before"
            proxy.process.send_signal(signal.SIGTERM)
            signalled.set()
            time.sleep(1)
            yield b"after"

        with proxy.channel() as channel:
            joined, call = channel.stream_unary(CLIENT_STREAM).with_call(
                messages(), timeout=10, metadata=PURPOSE
            )
        assert signalled.is_set()
        assert (joined, call.code()) == (b"before|after", grpc.StatusCode.OK)
        assert proxy.process.wait(timeout=10) == 0
        host, port = proxy.address.rsplit(":", 1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=1).close()
        engine = make_engine(proxy.audit_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT entry FROM audit_entry")).scalars()
                entries = [AuditEntry.decode(bytes(row)) for row in rows]
            verifier = NoteVerifier((proxy.pki.directory / "audit-log.vkey").read_text().strip())
            verified = verify_log(engine, verifier)
        finally:
            engine.dispose()
        assert verified.ok, verified.problems
        assert [entry.status for entry in entries if entry.method == CLIENT_STREAM] == [None, "OK"]


def test_the_audit_service_proves_the_callers_receipts_against_signed_checkpoints(
    proxy: Proxy,
) -> None:
    """GetLatestCheckpoint, GetInclusionProof and GetConsistencyProof answered by the binary
    and checked by Python's own RFC 9162 verifier and note reader; out-of-range requests
    answer INVALID_ARGUMENT with the field, or OUT_OF_RANGE; each call is recorded."""
    audit = (("lienthong-purpose", "audit"),)
    verifier = NoteVerifier((proxy.pki.directory / "audit-log.vkey").read_text().strip())
    with proxy.channel() as channel:
        _, call = channel.unary_unary(UNARY).with_call(b"proven", timeout=10, metadata=PURPOSE)
        receipt_note = dict(call.trailing_metadata() or ())[metadata.RECEIPT]
        receipt = parse_receipt(verifier.open(bytes(receipt_note).decode("utf-8")))
        stub = audit_service_pb2_grpc.AuditServiceStub(channel)
        first = stub.GetLatestCheckpoint(
            audit_service_pb2.GetLatestCheckpointRequest(), timeout=10, metadata=audit
        ).checkpoint
        signed = parse_checkpoint(verifier.open(first.signed_note))
        assert (signed.tree_size, signed.root_hash) == (first.tree_size, first.root_hash)
        assert first.tree_size > receipt.leaf_index
        proof = stub.GetInclusionProof(
            audit_service_pb2.GetInclusionProofRequest(
                leaf_index=receipt.leaf_index, tree_size=first.tree_size
            ),
            timeout=10,
            metadata=audit,
        )
        assert proof.leaf_hash == receipt.leaf_hash
        assert merkle.verify_inclusion(
            receipt.leaf_hash, receipt.leaf_index, first.tree_size, proof.hashes, first.root_hash
        )
        later = stub.GetLatestCheckpoint(
            audit_service_pb2.GetLatestCheckpointRequest(), timeout=10, metadata=audit
        ).checkpoint
        assert later.tree_size > first.tree_size  # the first call to the service is in it
        consistency = stub.GetConsistencyProof(
            audit_service_pb2.GetConsistencyProofRequest(
                first_tree_size=first.tree_size, second_tree_size=later.tree_size
            ),
            timeout=10,
            metadata=audit,
        )
        assert merkle.verify_consistency(
            first.tree_size,
            later.tree_size,
            first.root_hash,
            later.root_hash,
            consistency.hashes,
        )
        with pytest.raises(grpc.RpcError) as invalid:
            stub.GetInclusionProof(
                audit_service_pb2.GetInclusionProofRequest(leaf_index=5, tree_size=5),
                timeout=10,
                metadata=audit,
            )
        with pytest.raises(grpc.RpcError) as beyond:
            stub.GetConsistencyProof(
                audit_service_pb2.GetConsistencyProofRequest(
                    first_tree_size=1, second_tree_size=later.tree_size + 1000
                ),
                timeout=10,
                metadata=audit,
            )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(invalid.value)  # type: ignore[arg-type]
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    assert [violation.field for violation in bad_request.field_violations] == ["leaf_index"]
    assert beyond.value.code() == grpc.StatusCode.OUT_OF_RANGE
    engine = make_engine(proxy.audit_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT entry FROM audit_entry WHERE method LIKE :m"),
                {"m": "/lienthong.gateway.v1.AuditService/%"},
            ).scalars()
            entries = [AuditEntry.decode(bytes(row)) for row in rows]
    finally:
        engine.dispose()
    completions = [entry for entry in entries if entry.status is not None]
    assert [entry.status for entry in completions] == [
        "OK",
        "OK",
        "OK",
        "OK",
        "INVALID_ARGUMENT",
        "OUT_OF_RANGE",
    ]
    assert {entry.upstream for entry in entries} == {"local"}


def test_server_reflection_lists_the_services_and_gives_each_file_with_its_imports(
    proxy: Proxy,
) -> None:
    """grpcio's own reflection client, as an integrator's tools use it."""
    with proxy.channel("police") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        found = database.FindFileContainingSymbol(
            "lienthong.population.v1.CitizenService.IssuePersonalIdentificationNumber"
        )
        message = database.FindFileContainingSymbol("lienthong.calendar.v1.Date")
        with pytest.raises(KeyError):
            database.FindFileContainingSymbol("lienthong.population.v1.NoSuchThing")
    assert {
        "lienthong.civilregistry.v1.BirthRegistrationService",
        "lienthong.population.v1.CitizenService",
        "lienthong.gateway.v1.AuditService",
        "grpc.health.v1.Health",
    } <= services
    assert found.name == "lienthong/population/v1/citizen_service.proto"
    assert message.name == "lienthong/calendar/v1/date.proto"
