"""The whole stack in one process, on loopback ports, for end-to-end tests."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import grpc

from certs.pki import DevPki
from gateway.server import Gateway, create_gateway
from justice_adapter.server import create_server as create_justice
from lienthong.config import AuditConfig, GatewayConfig, JusticeConfig, PoliceConfig
from lienthong.tls import TlsFiles, secure_channel
from police_adapter.server import create_server as create_police

GATEWAY_ID = "spiffe://lienthong.local/gateway"
POLICY = Path(__file__).resolve().parent.parent / "config" / "policy.toml"


def free_port() -> int:
    """A loopback port nobody listens on now (the justice adapter and the gateway each need
    the other's address before either is built)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tls_of(pki: DevPki, system: str) -> TlsFiles:
    paths = pki.paths(system)
    return TlsFiles(pki.ca_certificate, paths.certificate, paths.private_key)


@dataclass
class Stack:
    """Three running servers and what a test needs to reach them."""

    pki: DevPki
    gateway_address: str
    justice_address: str
    police_address: str
    servers: dict[str, grpc.Server]
    gateway: Gateway

    def channel(self, system: str = "officer-portal", address: str | None = None) -> grpc.Channel:
        """A channel to the gateway (or ``address``) presenting ``system``'s certificate."""
        return secure_channel(address or self.gateway_address, tls_of(self.pki, system).read())

    def stop(self, name: str) -> None:
        self.servers[name].stop(grace=None).wait()

    def stop_all(self) -> None:
        self.gateway.stop(grace=None)
        for server in self.servers.values():
            server.stop(grace=None).wait()


def start_stack(pki: DevPki, directory: Path, *, policy: Path = POLICY) -> Stack:
    gateway_port, justice_port, police_port = free_port(), free_port(), free_port()
    gateway_address = f"127.0.0.1:{gateway_port}"
    justice_address = f"127.0.0.1:{justice_port}"
    police_address = f"127.0.0.1:{police_port}"
    trusted = frozenset({GATEWAY_ID})
    police, _ = create_police(
        PoliceConfig(
            police_address, tls_of(pki, "police"), f"sqlite:///{directory / 'police.db'}", trusted
        )
    )
    justice, _ = create_justice(
        JusticeConfig(
            justice_address, tls_of(pki, "justice"), f"sqlite:///{directory / 'justice.db'}",
            gateway_address, trusted,
        )
    )  # fmt: skip
    gateway = create_gateway(
        GatewayConfig(
            listen=gateway_address,
            tls=tls_of(pki, "gateway-server"),
            upstream_tls=tls_of(pki, "gateway-client"),
            policy=policy,
            routes={
                "lienthong.civilregistry.v1.BirthRegistrationService": justice_address,
                "lienthong.civilregistry.v1.OfficerService": justice_address,
                "lienthong.population.v1.CitizenService": police_address,
            },
            audit=AuditConfig(
                f"sqlite:///{directory / 'audit.db'}", pki.directory / "audit-log.key"
            ),
            crls=(pki.directory / "crl.pem",),
            metrics_listen="127.0.0.1:0",
        )
    )
    servers = {"police": police, "justice": justice}
    for server in servers.values():
        server.start()
    gateway.start()
    return Stack(pki, gateway_address, justice_address, police_address, servers, gateway)
