"""The gateway against the echo upstream, as fixtures shared by the gateway and audit tests.

lienthong-gateway runs as a process, started from a GatewayConfig as `lienthong serve
gateway` starts it (tests/compiled_gateway.py); tests read its audit log and its metrics.
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
from lienthong import metadata
from lienthong.config import AuditConfig, GatewayConfig, GatewayLimits, Route
from lienthong.tls import TlsMaterial, secure_channel

PORTAL = "spiffe://lienthong.local/moj/officer-portal"
POPULATION = "spiffe://lienthong.local/mps/population"  # the echo upstream's certificate
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


def gateway_config(
    pki: DevPki,
    directory: Path,
    upstream: str,
    *,
    limits: GatewayLimits | None = None,
    audit_url: str | None = None,
    crls: tuple[Path, ...] | None = None,
) -> GatewayConfig:
    """The gateway on a free port of loopback, routing the echo service to ``upstream``, with
    POLICY, the audit log (SQLite in ``directory`` by default), the PKI's CRL and metrics."""
    policy = directory / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    return GatewayConfig(
        listen=f"127.0.0.1:{free_port()}",
        tls=tls_of(pki, "gateway-server"),
        upstream_tls=tls_of(pki, "gateway-client"),
        policy=policy,
        routes={SERVICE: Route(upstream, POPULATION)},
        audit=AuditConfig(
            audit_url or f"sqlite:///{directory / 'audit.db'}", pki.directory / "audit-log.key"
        ),
        crls=(pki.directory / "crl.pem",) if crls is None else crls,
        metrics_listen=f"127.0.0.1:{free_port()}",
        limits=limits or GatewayLimits(),
    )


@dataclass
class Setup:
    pki: DevPki
    gateway: CompiledGateway
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


@pytest.fixture
def make_setup(tmp_path: Path) -> Iterator[Callable[..., Setup]]:
    started: list[Setup] = []

    def make(
        limits: GatewayLimits | None = None,
        audit_url: str | None = None,
        crls: tuple[Path, ...] | None = None,
    ) -> Setup:
        pki = init_dev_pki(tmp_path / "pki")
        echo_server, echo_port, echo = start_echo(tls_of(pki, "police").read())
        config = gateway_config(
            pki, tmp_path, f"127.0.0.1:{echo_port}", limits=limits, audit_url=audit_url, crls=crls
        )
        gateway = start_compiled(config, tmp_path, METHODS)
        setup = Setup(pki, gateway, config.listen, echo, echo_server, echo_port, config.policy)
        started.append(setup)
        return setup

    yield make
    for setup in started:
        setup.gateway.stop()
        setup.echo_server.stop(grace=None).wait()


@pytest.fixture
def setup(make_setup: Callable[..., Setup]) -> Setup:
    return make_setup()
