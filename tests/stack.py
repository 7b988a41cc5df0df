"""The whole stack in one process, on loopback ports, for end-to-end tests."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import grpc

from certs.pki import DevPki
from gateway.server import Gateway, create_gateway
from justice_adapter.server import JusticeAdapter, create_adapter
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
    """Three running servers and what a test needs to reach them.

    The Justice adapter runs with its PIN outbox worker, as it does when served. ``restart``
    builds a service again on its address and database, as after a process restart.
    """

    pki: DevPki
    gateway_address: str
    justice_address: str
    police_address: str
    police: grpc.Server
    justice: JusticeAdapter
    gateway: Gateway
    police_config: PoliceConfig
    justice_config: JusticeConfig

    def channel(self, system: str = "officer-portal", address: str | None = None) -> grpc.Channel:
        """A channel to the gateway (or ``address``) presenting ``system``'s certificate."""
        return secure_channel(address or self.gateway_address, tls_of(self.pki, system).read())

    def stop(self, name: str) -> None:
        """Stop "police" or "justice" (with its outbox worker) without draining calls."""
        if name == "police":
            self.police.stop(grace=None).wait()
        elif name == "justice":
            self.justice.stop(grace=None)
        else:
            raise ValueError(f"no service {name!r} to stop")

    def restart(self, name: str) -> None:
        """Stop "police" or "justice" if running, then serve it again on the same address and
        database."""
        self.stop(name)
        if name == "police":
            self.police, _ = create_police(self.police_config)
            self.police.start()
        else:
            self.justice = create_adapter(self.justice_config)
            self.justice.start()

    def stop_all(self) -> None:
        self.gateway.stop(grace=None)
        self.justice.stop(grace=None)
        self.police.stop(grace=None).wait()


def start_stack(pki: DevPki, directory: Path, *, policy: Path = POLICY) -> Stack:
    gateway_port, justice_port, police_port = free_port(), free_port(), free_port()
    gateway_address = f"127.0.0.1:{gateway_port}"
    justice_address = f"127.0.0.1:{justice_port}"
    police_address = f"127.0.0.1:{police_port}"
    trusted = frozenset({GATEWAY_ID})
    police_config = PoliceConfig(
        police_address, tls_of(pki, "police"), f"sqlite:///{directory / 'police.db'}", trusted
    )
    justice_config = JusticeConfig(
        justice_address, tls_of(pki, "justice"), f"sqlite:///{directory / 'justice.db'}",
        gateway_address, trusted,
    )  # fmt: skip
    police, _ = create_police(police_config)
    justice = create_adapter(justice_config)
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
    police.start()
    justice.start()
    gateway.start()
    return Stack(
        pki, gateway_address, justice_address, police_address, police, justice, gateway,
        police_config, justice_config,
    )  # fmt: skip
