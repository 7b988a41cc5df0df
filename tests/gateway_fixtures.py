"""The gateway against the echo upstream, as fixtures shared by the gateway and audit tests.

Each test runs against both data planes (issue 15): grpcio's gateway in process, and
lienthong-gateway as a process, started from the same GatewayConfig. What a test reads of
the gateway itself (its audit log, its metrics port) it reads the same way of either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from compiled_gateway import CompiledGateway, start_compiled
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from echo_upstream import METHODS, SERVICE, Echo, start_echo
from stack import free_port, tls_of

from certs.pki import DevPki, init_dev_pki
from gateway.server import Gateway, create_gateway
from lienthong import metadata
from lienthong.config import AuditConfig, GatewayConfig, GatewayLimits
from lienthong.contracts import methods
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
            gateway = start_compiled(config, tmp_path, METHODS)
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
