"""The gateway against the echo upstream, as fixtures shared by the gateway and audit tests.

Each test runs against both data planes (issue 15): grpcio's gateway in process, and
lienthong-gateway as a process, started from the same GatewayConfig. What a test reads of
the gateway itself (its audit log, its metrics port) it reads the same way of either.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dataplane_build import built_binary
from echo_upstream import METHODS, SERVICE, Echo, start_echo
from sqlalchemy import Engine
from stack import free_port, tls_of

from certs.pki import DevPki, init_dev_pki
from gateway.audit.store import AuditLog
from gateway.dataplane_config import write_dataplane_config
from gateway.policy_compiler import PolicyCompiler
from gateway.server import Gateway, create_gateway
from lienthong import metadata
from lienthong.config import AuditConfig, GatewayConfig, GatewayLimits
from lienthong.contracts import methods
from lienthong.db import make_engine
from lienthong.signed_note import load_signer
from lienthong.tls import TlsMaterial, secure_channel

PORTAL = "spiffe://lienthong.local/moj/officer-portal"
POPULATION = "spiffe://lienthong.local/mps/population"  # the echo upstream's certificate
DATA_PLANES = ("python", "compiled")
DEV_POLICY = Path(__file__).resolve().parent.parent / "config" / "policy.toml"
REGISTRY = "spiffe://lienthong.local/moj/civil-registry"
PURPOSE = ((metadata.PURPOSE, "testing"),)
POLICY = f"""
[[grant]]
caller = "{PORTAL}"
methods = ["{SERVICE}/*"]
purposes = ["testing"]

[[grant]]
caller = "{REGISTRY}"
methods = ["{SERVICE}/Unary"]
purposes = ["testing"]

[[grant]]
caller = "{PORTAL}"
methods = ["lienthong.gateway.v1.AuditService/*"]
purposes = ["audit"]
"""


@dataclass
class CompiledGateway:
    """lienthong-gateway as a process, and what the tests read of a gateway: its audit log
    (the Python store over the same database, read only) and its metrics port."""

    process: subprocess.Popen[bytes]
    audit: AuditLog
    metrics_port: int
    log: IO[bytes]
    engine: Engine
    compiler: PolicyCompiler

    def stop(self, grace: float | None = None) -> None:  # noqa: ARG002 - it drains itself
        """SIGTERM: it drains and exits 0."""
        self.process.send_signal(signal.SIGTERM)
        try:
            stopped = self.process.wait(timeout=15)
        finally:
            self.compiler.stop()
            self.log.close()
            self.engine.dispose()
        assert stopped == 0, "lienthong-gateway did not stop cleanly on SIGTERM"


def start_compiled(config: GatewayConfig, directory: Path) -> CompiledGateway:
    """Start lienthong-gateway on ``config`` and wait until it listens."""
    known = {**methods(), **METHODS}
    files = write_dataplane_config(config, known, directory / "dataplane")
    # As `lienthong serve gateway` does in a child process: the policy recompiled on change.
    compiler = PolicyCompiler(config.policy, known, files.policy)
    compiler.start()
    log = (directory / "dataplane.log").open("wb")
    process = subprocess.Popen(
        [str(built_binary()), "--config", str(files.config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    host, port = config.listen.rsplit(":", 1)
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"lienthong-gateway exited: see {directory}/dataplane.log"
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, f"lienthong-gateway never listened on {port}"
            time.sleep(0.05)
    signer = load_signer(config.audit.origin, config.audit.signing_key.read_bytes())
    engine = make_engine(config.audit.database_url)
    assert config.metrics_listen is not None
    metrics_port = int(config.metrics_listen.rsplit(":", 1)[1])
    return CompiledGateway(process, AuditLog(engine, signer), metrics_port, log, engine, compiler)


@dataclass
class Setup:
    pki: DevPki
    gateway: Gateway | CompiledGateway
    address: str
    echo: Echo
    echo_server: grpc.Server
    echo_port: int
    policy: Path

    def channel(self, system: str = "officer-portal") -> grpc.Channel:
        return secure_channel(self.address, tls_of(self.pki, system).read())

    def material(self, certificate: x509.Certificate, key) -> TlsMaterial:
        return TlsMaterial(
            self.pki.ca_certificate.read_bytes(),
            certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


@pytest.fixture(params=DATA_PLANES)
def data_plane(request: pytest.FixtureRequest) -> str:
    """Which gateway the test runs against."""
    return str(request.param)


@pytest.fixture
def make_setup(tmp_path: Path, data_plane: str) -> Iterator[Callable[..., Setup]]:
    started: list[Setup] = []

    def make(limits: GatewayLimits | None = None, audit_url: str | None = None) -> Setup:
        pki = init_dev_pki(tmp_path / "pki")
        echo_server, echo_port, echo = start_echo(tls_of(pki, "police").read())
        policy = tmp_path / "policy.toml"
        policy.write_text(POLICY, encoding="utf-8")
        address = f"127.0.0.1:{free_port()}"
        config = GatewayConfig(
            listen=address,
            tls=tls_of(pki, "gateway-server"),
            upstream_tls=tls_of(pki, "gateway-client"),
            policy=policy,
            routes={SERVICE: f"127.0.0.1:{echo_port}"},
            route_identities={SERVICE: POPULATION},
            audit=AuditConfig(
                audit_url or f"sqlite:///{tmp_path / 'audit.db'}",
                pki.directory / "audit-log.key",
            ),
            crls=(pki.directory / "crl.pem",),
            metrics_listen="127.0.0.1:0" if data_plane == "python" else f"127.0.0.1:{free_port()}",
            limits=limits or GatewayLimits(),
        )
        gateway: Gateway | CompiledGateway
        if data_plane == "compiled":
            gateway = start_compiled(config, tmp_path)
        else:
            gateway = create_gateway(config, contract_methods={**methods(), **METHODS})
            gateway.start()
        setup = Setup(pki, gateway, address, echo, echo_server, echo_port, policy)
        started.append(setup)
        return setup

    yield make
    for setup in started:
        setup.gateway.stop(grace=None)
        setup.echo_server.stop(grace=None).wait()


@pytest.fixture
def setup(make_setup: Callable[..., Setup]) -> Setup:
    return make_setup()
