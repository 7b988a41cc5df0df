"""Hostile certificates made with openssl: all refused, and all audited (security issue).

One real `lienthong serve gateway` process, on its own development PKI and a SQLite audit
log, meets clients presenting certificates the `openssl` command made: self-signed, from
another CA, expired, not yet valid, for server use only, with a keyUsage that forbids
signing, revoked while the gateway runs, and a valid one whose caller claims another system's
identity in metadata. The first kinds are refused at the TLS handshake, each recorded with
its reason and the caller's address, and logged once. The others reach the gateway's
admission and are answered and audited as exchanges. A client channel may try a handshake
more than once per call, so each attempt must leave at least one entry.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from dataplane_build import built_binary
from dev_config import wait_serving, write_dev_config
from openssl_certs import Made, OpenSsl
from prometheus_client.openmetrics import parser as openmetrics_parser
from stack import tls_of

from certs.pki import DevPki, init_dev_pki
from gateway.audit.entry import AuditEntry
from gateway.audit.store import AuditLog, CompletionQuery
from gateway.compiled import BINARY_VARIABLE
from lienthong import metadata
from lienthong.config import load_config
from lienthong.db import make_engine
from lienthong.gateway.v1 import audit_service_pb2, audit_service_pb2_grpc
from lienthong.person.v1 import sex_pb2
from lienthong.population.v1 import citizen_service_pb2, citizen_service_pb2_grpc
from lienthong.signed_note import load_signer
from lienthong.tls import TlsMaterial, secure_channel

pytestmark = pytest.mark.timeout(120)

REPOSITORY = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
RECORD_TIMEOUT = 10.0
ATTEMPTS = 2  # calls per hostile certificate, each on a channel of its own
PORTAL = "spiffe://lienthong.local/moj/officer-portal"
REGISTRY = "spiffe://lienthong.local/moj/civil-registry"
OFFICER = "spiffe://lienthong.local/moj/officers/hostile-officer"
AUDIT = ((metadata.PURPOSE, "audit"),)
GET_LATEST_CHECKPOINT = "/lienthong.gateway.v1.AuditService/GetLatestCheckpoint"
LIST_EXCHANGES = "/lienthong.gateway.v1.AuditService/ListExchanges"
VERIFY_CITIZEN = "/lienthong.population.v1.CitizenService/VerifyCitizen"
# A refused handshake's entry (docs/audit.md): this method, its reason category in `purpose`.
HANDSHAKE_METHOD = "tls-handshake"
REASONS = frozenset({
    "CA_CERTIFICATE", "EXPIRED", "KEY_USAGE", "NO_CERTIFICATE", "NO_IDENTITY", "NOT_YET_VALID",
    "OTHER", "PEER_REFUSED", "REVOKED", "TIMEOUT", "UNPARSABLE", "UNTRUSTED_ISSUER", "UNVERIFIED",
    "WEAK_RSA_KEY", "WEAK_SIGNATURE", "WRONG_IDENTITY", "WRONG_PURPOSE",
})  # fmt: skip


def _lienthong(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the `lienthong` command line, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "lienthong.cli", *arguments],
        cwd=REPOSITORY, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


# The gateway process ----------------------------------------------------------------------


@dataclass
class GatewayProcess:
    """A running `lienthong serve gateway`: its files, address and process."""

    pki: DevPki
    config: Path
    address: str
    metrics_url: str
    stdout: Path
    stderr: Path
    database_url: str
    process: subprocess.Popen[bytes]

    @property
    def our_ca(self) -> Made:
        return Made(self.pki.ca_certificate, self.pki.ca_private_key)

    def material(self, made: Made) -> TlsMaterial:
        return made.material(self.pki.ca_certificate)

    def audit_log(self) -> AuditLog:
        """The gateway's audit log, opened for reading (its writer is the gateway's)."""
        signer = load_signer(
            "lienthong.local/audit", (self.pki.directory / "audit-log.key").read_bytes()
        )
        return AuditLog(make_engine(self.database_url), signer)

    def completions(
        self, after_leaf: int, *, caller: str | None = None, method: str | None = None
    ) -> list[tuple[int, AuditEntry]]:
        """Completion entries after ``after_leaf``, of ``caller`` and ``method`` if given."""
        query = CompletionQuery(caller=caller, method=method, after_leaf=after_leaf, limit=10_000)
        log = self.audit_log()
        try:
            return log.completions(query)
        finally:
            log._engine.dispose()  # a reader's engine, released at once

    def tree_size(self) -> int:
        log = self.audit_log()
        try:
            return log.tree_size()
        finally:
            log._engine.dispose()

    def handshake_metrics(self) -> dict[str, float]:
        """lienthong_gateway_tls_handshake_failures_total by reason, from /metrics."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:  # noqa: S310
            text = response.read().decode()
        return {
            sample.labels["reason"]: sample.value
            for family in openmetrics_parser.text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "lienthong_gateway_tls_handshake_failures_total"
        }

    def refusal_lines(self) -> list[dict[str, object]]:
        """The gateway's log lines about refused handshakes."""
        lines = self.stdout.read_text(encoding="utf-8").splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [event for event in events if event["event"] == "tls_handshake_refused"]


def _wait_healthy(gateway: GatewayProcess) -> None:
    material = tls_of(gateway.pki, "justice").read()
    if problem := wait_serving(gateway.address, material, gateway.process, START_TIMEOUT):
        output = gateway.stdout.read_text() + gateway.stderr.read_text()
        pytest.fail(f"the gateway {problem}:\n{output}")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway process for the module, on a PKI of its own; stopped with SIGTERM after.

    Stopping must be clean: exit status 0, and `lienthong audit verify` passes afterwards.
    """
    directory = tmp_path_factory.mktemp("hostile")
    pki = init_dev_pki(directory / "pki")
    database_url = f"sqlite:///{directory / 'audit.db'}"
    # The development configuration; its adapters are never started: every refusal here
    # happens before routing.
    config = write_dev_config(directory, pki.directory, {"audit": database_url})
    settings = load_config(config).gateway
    stdout, stderr = directory / "gateway.jsonl", directory / "gateway.stderr"
    environment = {**os.environ, BINARY_VARIABLE: str(built_binary())}
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "lienthong.cli", "serve", "gateway", "--config", str(config)],
            cwd=REPOSITORY, stdout=out, stderr=err, env=environment, start_new_session=True,
        )  # fmt: skip
    running = GatewayProcess(
        pki, config, settings.listen, f"http://{settings.metrics_listen}/metrics",
        stdout, stderr, database_url, process,
    )  # fmt: skip
    try:
        _wait_healthy(running)
        yield running
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, stderr.read_text()
        verified = _lienthong("audit", "verify", "--config", str(config))
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def openssl(tmp_path_factory: pytest.TempPathFactory) -> OpenSsl:
    """The openssl command, working in a directory of its own."""
    return OpenSsl(tmp_path_factory.mktemp("openssl"))


# Clients ----------------------------------------------------------------------------------


def _call_status(channel: grpc.Channel) -> grpc.StatusCode:
    """The status of one GetLatestCheckpoint call (granted to every identity used here)."""
    stub = audit_service_pb2_grpc.AuditServiceStub(channel)
    try:
        stub.GetLatestCheckpoint(
            audit_service_pb2.GetLatestCheckpointRequest(), timeout=10, metadata=AUDIT
        )
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _attempt(gateway: GatewayProcess, material: TlsMaterial) -> grpc.StatusCode:
    """One call on a channel of its own, closed at once (so that it tries no more)."""
    with secure_channel(gateway.address, material) as channel:
        return _call_status(channel)


def _attempt_without_certificate(gateway: GatewayProcess) -> grpc.StatusCode:
    credentials = grpc.ssl_channel_credentials(gateway.pki.ca_certificate.read_bytes())
    with grpc.secure_channel(
        gateway.address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    ) as channel:
        return _call_status(channel)


def _attempt_through_openssl(gateway: GatewayProcess, made: Made) -> grpc.StatusCode:
    """One call whose TLS client is Python's ssl module (OpenSSL), not grpc's.

    grpc's own client refuses to present an EC certificate whose keyUsage forbids signing
    (it never connects), so such a certificate is presented by OpenSSL: a relay takes the
    call's plain HTTP/2 and carries it over TLS, with that certificate, to the gateway.
    """
    context = ssl.create_default_context(cafile=str(gateway.pki.ca_certificate))
    context.load_cert_chain(made.certificate, made.private_key)
    context.set_alpn_protocols(["h2"])
    host, port = gateway.address.rsplit(":", 1)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        stop = threading.Event()

        def relay() -> None:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    plain, _ = listener.accept()
                except TimeoutError:
                    continue
                with plain:
                    try:
                        raw = socket.create_connection((host, int(port)), timeout=10)
                    except OSError:
                        continue
                    try:
                        tls = context.wrap_socket(raw, server_hostname="localhost")
                    except OSError:
                        raw.close()
                        continue
                    with tls:
                        _pipe_both_ways(plain, tls)

        thread = threading.Thread(target=relay, daemon=True)
        thread.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{listener.getsockname()[1]}") as channel:
                return _call_status(channel)
        finally:
            stop.set()
            thread.join(timeout=10)


def _pipe_both_ways(plain: socket.socket, tls: ssl.SSLSocket) -> None:
    def copy(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for closing in (source, target):
                with contextlib.suppress(OSError):
                    closing.shutdown(socket.SHUT_RDWR)

    back = threading.Thread(target=copy, args=(tls, plain), daemon=True)
    back.start()
    copy(plain, tls)
    back.join(timeout=10)


def _eventually(condition: Callable[[], bool], timeout: float = RECORD_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _handshake_refusals(gateway: GatewayProcess, after_leaf: int) -> collections.Counter[str]:
    """The reason categories of refused handshakes recorded after ``after_leaf``, counted."""
    found = gateway.completions(after_leaf, method=HANDSHAKE_METHOD)
    return collections.Counter(entry.purpose or "" for _, entry in found)


# Refused at the TLS handshake -------------------------------------------------------------

HandshakeCase = Callable[[GatewayProcess, OpenSsl], Callable[[], grpc.StatusCode]]


def _self_signed(gateway: GatewayProcess, openssl: OpenSsl) -> Callable[[], grpc.StatusCode]:
    made = openssl.self_signed("self-signed", PORTAL)
    return lambda: _attempt(gateway, gateway.material(made))


def _another_ca(gateway: GatewayProcess, openssl: OpenSsl) -> Callable[[], grpc.StatusCode]:
    made = openssl.issue("another-ca", openssl.ca("hostile-ca"), spiffe_id=PORTAL)
    return lambda: _attempt(gateway, gateway.material(made))


def _expired(gateway: GatewayProcess, openssl: OpenSsl) -> Callable[[], grpc.StatusCode]:
    made = openssl.issue(
        "expired", gateway.our_ca, spiffe_id=PORTAL,
        valid_from=dt.timedelta(days=-30), valid_until=dt.timedelta(days=-1),
    )  # fmt: skip
    return lambda: _attempt(gateway, gateway.material(made))


def _not_yet_valid(gateway: GatewayProcess, openssl: OpenSsl) -> Callable[[], grpc.StatusCode]:
    made = openssl.issue(
        "not-yet-valid", gateway.our_ca, spiffe_id=PORTAL,
        valid_from=dt.timedelta(days=1), valid_until=dt.timedelta(days=30),
    )  # fmt: skip
    return lambda: _attempt(gateway, gateway.material(made))


def _server_only(gateway: GatewayProcess, openssl: OpenSsl) -> Callable[[], grpc.StatusCode]:
    made = openssl.issue(
        "server-only", gateway.our_ca, spiffe_id=PORTAL, extended_key_usage="serverAuth"
    )
    return lambda: _attempt(gateway, gateway.material(made))


def _no_signing(gateway: GatewayProcess, openssl: OpenSsl) -> Callable[[], grpc.StatusCode]:
    made = openssl.issue("no-signing", gateway.our_ca, spiffe_id=PORTAL, key_usage="keyAgreement")
    return lambda: _attempt_through_openssl(gateway, made)


def _no_certificate(gateway: GatewayProcess, _openssl: OpenSsl) -> Callable[[], grpc.StatusCode]:
    return lambda: _attempt_without_certificate(gateway)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param(_self_signed, "UNTRUSTED_ISSUER", id="self-signed"),
        pytest.param(_another_ca, "UNTRUSTED_ISSUER", id="another-ca"),
        pytest.param(_expired, "EXPIRED", id="expired"),
        pytest.param(_not_yet_valid, "NOT_YET_VALID", id="not-yet-valid"),
        pytest.param(_server_only, "WRONG_PURPOSE", id="server-auth-only"),
        pytest.param(_no_signing, "KEY_USAGE", id="key-usage-without-digital-signature"),
        pytest.param(_no_certificate, "NO_CERTIFICATE", id="no-certificate"),
    ],
)
def test_a_certificate_refused_at_the_handshake_is_audited_per_attempt(
    gateway: GatewayProcess, openssl: OpenSsl, case: HandshakeCase, reason: str
) -> None:
    """Each call with the hostile certificate fails (UNAVAILABLE: the handshake was refused)
    and leaves, in the gateway's audit log, at least one `tls-handshake` completion with no
    caller, status UNAUTHENTICATED (16), this reason category in `purpose` and the caller's
    address, and no other category; the metric counts the category, and each refusal is
    logged with the same exchange id, peer and reason."""
    attempt = case(gateway, openssl)
    mark = gateway.tree_size() - 1
    counted_before = gateway.handshake_metrics().get(reason, 0.0)

    codes = [attempt() for _ in range(ATTEMPTS)]

    assert codes == [grpc.StatusCode.UNAVAILABLE] * ATTEMPTS
    assert _eventually(lambda: _handshake_refusals(gateway, mark)[reason] >= ATTEMPTS)
    time.sleep(0.2)  # any further try of these calls would be recorded by now
    assert set(_handshake_refusals(gateway, mark)) == {reason}
    for _, entry in gateway.completions(mark, method=HANDSHAKE_METHOD):
        assert (entry.kind, entry.caller, entry.upstream) == ("completion", None, None)
        assert (entry.status, entry.status_code, entry.request_leaf) == (
            "UNAUTHENTICATED",
            16,
            None,
        )
        # The peer, in place of a request id: the caller's address.
        assert re.fullmatch(r"127\.0\.0\.1:\d+", entry.request_id or ""), entry.request_id
        assert entry.on_behalf_of is None
    assert gateway.handshake_metrics()[reason] >= counted_before + ATTEMPTS
    # Each refusal it logged has exactly one entry, of the same exchange and peer.
    logged = {
        (line["exchange_id"], line["peer"], line["reason"]) for line in gateway.refusal_lines()
    }
    recorded = {
        (entry.exchange_id, entry.request_id, entry.purpose)
        for _, entry in gateway.completions(mark, method=HANDSHAKE_METHOD)
    }
    assert recorded <= logged
    # No exchange reached admission: nothing else was recorded meanwhile.
    assert all(entry.method == HANDSHAKE_METHOD for _, entry in gateway.completions(mark))


# Refused by the gateway itself ------------------------------------------------------------


def test_a_certificate_revoked_while_the_gateway_runs_is_refused_and_audited(
    gateway: GatewayProcess, openssl: OpenSsl
) -> None:
    """A certificate openssl issued from our CA works until `lienthong certs revoke` lists
    it; within a second its calls are answered UNAUTHENTICATED, each recorded as a
    completion naming the certificate's own identity, without a request entry."""
    made = openssl.issue("revoked", gateway.our_ca, spiffe_id=OFFICER)
    # `lienthong certs revoke NAME` revokes {pki}/{NAME}.pem.
    (gateway.pki.directory / "hostile-officer.pem").write_bytes(made.certificate.read_bytes())
    material = gateway.material(made)
    assert _attempt(gateway, material) == grpc.StatusCode.OK

    revoked = _lienthong("certs", "revoke", "hostile-officer", "--dir", str(gateway.pki.directory))
    assert revoked.returncode == 0, revoked.stderr
    revoked_at = time.monotonic()
    mark = gateway.tree_size() - 1
    with secure_channel(gateway.address, material) as channel:
        assert _eventually(lambda: _call_status(channel) == grpc.StatusCode.UNAUTHENTICATED, 5)
        assert time.monotonic() - revoked_at < 1.0  # the CRL is re-read within 0.25 s
        attempts = 1 + sum(
            _call_status(channel) == grpc.StatusCode.UNAUTHENTICATED for _ in range(ATTEMPTS)
        )
    refused = [
        entry
        for _, entry in gateway.completions(mark, caller=OFFICER)
        if entry.status == "UNAUTHENTICATED"
    ]
    assert attempts == 1 + ATTEMPTS
    assert len(refused) >= attempts
    for entry in refused:
        assert (entry.method, entry.status_code) == (GET_LATEST_CHECKPOINT, 16)
        assert entry.request_leaf is None  # refused before anything was forwarded


def test_a_caller_claiming_another_systems_identity_in_metadata_is_audited_as_itself(
    gateway: GatewayProcess, openssl: OpenSsl
) -> None:
    """A valid certificate (openssl, our CA) of the officer portal calling, with
    `lienthong-caller` set to the civil registry, a method granted to the registry only is
    refused PERMISSION_DENIED; the claim is ignored everywhere: the refusal, the portal's
    allowed calls and its listing of exchanges are all recorded under the portal's identity,
    and nothing under the registry's."""
    made = openssl.issue("valid-portal", gateway.our_ca, spiffe_id=PORTAL)
    claim = (
        (metadata.CALLER, REGISTRY),
        (metadata.EXCHANGE_ID, "forged"),
        ("lienthong-anything", "forged"),
    )
    mark = gateway.tree_size() - 1
    with secure_channel(gateway.address, gateway.material(made)) as channel:
        citizens = citizen_service_pb2_grpc.CitizenServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            citizens.VerifyCitizen(
                citizen_service_pb2.VerifyCitizenRequest(
                    personal_identification_number="001316000001",
                    claim=citizen_service_pb2.CitizenClaim(sex=sex_pb2.SEX_FEMALE),
                ),
                timeout=10,
                metadata=((metadata.PURPOSE, "identity-verification"), *claim),
            )
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        audit.GetLatestCheckpoint(
            audit_service_pb2.GetLatestCheckpointRequest(), timeout=10, metadata=(*AUDIT, *claim)
        )
        # The registry's exchanges are not the portal's to list, whatever it claims.
        with pytest.raises(grpc.RpcError) as listing:
            audit.ListExchanges(
                audit_service_pb2.ListExchangesRequest(caller=REGISTRY),
                timeout=10,
                metadata=(*AUDIT, *claim),
            )
        own = audit.ListExchanges(
            audit_service_pb2.ListExchangesRequest(method=VERIFY_CITIZEN),
            timeout=10,
            metadata=(*AUDIT, *claim),
        )

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert listing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    recorded = gateway.completions(mark)
    assert [(entry.caller, entry.method, entry.status) for _, entry in recorded] == [
        (PORTAL, VERIFY_CITIZEN, "PERMISSION_DENIED"),
        (PORTAL, GET_LATEST_CHECKPOINT, "OK"),
        (PORTAL, LIST_EXCHANGES, "INVALID_ARGUMENT"),
        (PORTAL, LIST_EXCHANGES, "OK"),
    ]
    assert recorded[0][1].request_leaf is None
    assert recorded[0][1].status_code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert all(entry.exchange_id != "forged" for _, entry in recorded)
    assert gateway.completions(-1, caller=REGISTRY) == []
    # The portal's listing holds its own refused exchange, under its own identity.
    assert [(exchange.caller, exchange.status_code) for exchange in own.exchanges][-1] == (
        PORTAL,
        grpc.StatusCode.PERMISSION_DENIED.value[0],
    )


# The audit tools over refused handshakes --------------------------------------------------


def test_the_audit_tools_list_and_verify_refused_handshakes(
    gateway: GatewayProcess, openssl: OpenSsl
) -> None:
    """With refused handshakes in the log, `lienthong audit search --method tls-handshake`
    and `tail` print them (the operator's unfiltered view), AuditService.ListExchanges never
    lists them to a caller, `lienthong audit verify` passes, and every refusal the gateway
    logged has exactly one entry."""
    made = openssl.self_signed("tools-self-signed", PORTAL)
    mark = gateway.tree_size() - 1
    assert _attempt(gateway, gateway.material(made)) == grpc.StatusCode.UNAVAILABLE
    assert _eventually(lambda: _handshake_refusals(gateway, mark)["UNTRUSTED_ISSUER"] >= 1)

    config = str(gateway.config)
    searched = _lienthong("audit", "search", "--config", config, "--method", HANDSHAKE_METHOD)
    assert searched.returncode == 0, searched.stderr
    found = [json.loads(line) for line in searched.stdout.splitlines()]
    assert found
    assert {(item["status"], item["status_code"]) for item in found} == {("UNAUTHENTICATED", 16)}
    assert {item["caller"] for item in found} == {None}
    assert {item["purpose"] for item in found} <= REASONS
    tailed = _lienthong("audit", "tail", "--config", config, "-n", "5")
    assert tailed.returncode == 0, tailed.stderr
    assert json.loads(tailed.stdout.splitlines()[-1])["method"] == HANDSHAKE_METHOD

    with secure_channel(gateway.address, tls_of(gateway.pki, "officer-portal").read()) as channel:
        mine = audit_service_pb2_grpc.AuditServiceStub(channel).ListExchanges(
            audit_service_pb2.ListExchangesRequest(method=HANDSHAKE_METHOD),
            timeout=10,
            metadata=AUDIT,
        )
    assert list(mine.exchanges) == []

    verified = _lienthong("audit", "verify", "--config", config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK: ")

    # Each refusal it logged is recorded once, under the exchange id of its log line.
    logged = [line["exchange_id"] for line in gateway.refusal_lines()]
    entries = [entry.exchange_id for _, entry in gateway.completions(-1, method=HANDSHAKE_METHOD)]
    assert sorted(entries) == sorted(logged)
