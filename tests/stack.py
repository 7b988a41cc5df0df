"""The whole stack in one process, on loopback ports, for end-to-end tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from compiled_gateway import CompiledGateway, start_compiled
from ports import free_port

from certs.pki import BOOTSTRAP_ADMINISTRATOR, DevPki, issue_officer_certificate
from justice_adapter.server import JusticeAdapter, create_adapter
from lienthong import metadata
from lienthong.civilregistry.v1 import officer_pb2, officer_service_pb2, officer_service_pb2_grpc
from lienthong.config import AuditConfig, GatewayConfig, JusticeConfig, PoliceConfig, Route
from lienthong.person.v1 import person_name_pb2
from lienthong.place.v1 import administrative_unit_pb2 as au
from lienthong.tls import TlsFiles, secure_channel
from police_adapter.server import PoliceAdapter
from police_adapter.server import create_server as create_police

GATEWAY_ID = "spiffe://lienthong.local/gateway"
POPULATION_ID = "spiffe://lienthong.local/mps/population"
REGISTRY_ID = "spiffe://lienthong.local/moj/civil-registry"
OFFICERS = "spiffe://lienthong.local/moj/officers/"
POLICY = Path(__file__).resolve().parent.parent / "config" / "policy.toml"


def tls_of(pki: DevPki, system: str) -> TlsFiles:
    paths = pki.paths(system)
    return TlsFiles(pki.ca_certificate, paths.certificate, paths.private_key)


def officer_tls(pki: DevPki, officer_id: str) -> TlsFiles:
    """The TLS files of an officer's own certificate, issued on first use."""
    paths = issue_officer_certificate(pki, officer_id)
    return TlsFiles(pki.ca_certificate, paths.certificate, paths.private_key)


ROLE_OF_LENGTH = {
    5: officer_pb2.OFFICER_ROLE_COMMUNE_OFFICER,
    3: officer_pb2.OFFICER_ROLE_DISTRICT_OFFICER,
    2: officer_pb2.OFFICER_ROLE_PROVINCIAL_SUPERVISOR,
}
LEVEL_OF_LENGTH = {
    5: au.ADMINISTRATIVE_LEVEL_COMMUNE,
    3: au.ADMINISTRATIVE_LEVEL_DISTRICT,
    2: au.ADMINISTRATIVE_LEVEL_PROVINCE,
}


def as_caller(officer_id: str) -> tuple[tuple[str, str], ...]:
    """The metadata the gateway adds for an officer, for calls straight to the adapter."""
    return ((metadata.CALLER, OFFICERS + officer_id),)


class AsCaller(grpc.UnaryUnaryClientInterceptor):
    """Adds the gateway's ``lienthong-caller`` to every call, for a channel that presents
    the gateway's own client certificate straight to the adapter."""

    def __init__(self, officer_id: str) -> None:
        self.officer_id = officer_id

    def intercept_unary_unary(self, continuation, client_call_details, request):
        sent = list(client_call_details.metadata or ()) + list(as_caller(self.officer_id))
        return continuation(client_call_details._replace(metadata=sent), request)


def create_officer(
    channel: grpc.Channel, officer_id: str, unit_code: str, *, direct: bool = False
) -> officer_pb2.Officer:
    """Create (idempotently) the account ``officer_id`` for ``unit_code``.

    As the administrator whose channel this is, or with ``direct`` as the gateway (its
    certificate) calling the adapter for the bootstrap administrator. The role is commune
    officer, district officer or provincial supervisor by the length of the code.
    """
    request = officer_service_pb2.CreateOfficerRequest(
        request_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"officer:{officer_id}:{unit_code}")),
        officer_id=officer_id,
        officer=officer_pb2.Officer(
            display_name=person_name_pb2.PersonName(family_name="LÊ", given_name="HÀ"),
            unit=au.AdministrativeUnit(level=LEVEL_OF_LENGTH[len(unit_code)], code=unit_code),
            role=ROLE_OF_LENGTH[len(unit_code)],
        ),
    )
    stub = officer_service_pb2_grpc.OfficerServiceStub(channel)
    sent = ((metadata.PURPOSE, "account-management"),)
    if direct:
        sent += as_caller(BOOTSTRAP_ADMINISTRATOR)
    return stub.CreateOfficer(request, timeout=10, metadata=sent).officer


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
    police: PoliceAdapter
    justice: JusticeAdapter
    gateway: CompiledGateway
    police_config: PoliceConfig
    justice_config: JusticeConfig

    def channel(self, system: str = "officer-portal", address: str | None = None) -> grpc.Channel:
        """A channel to the gateway (or ``address``) presenting ``system``'s certificate."""
        return secure_channel(address or self.gateway_address, tls_of(self.pki, system).read())

    def administrator(self) -> grpc.Channel:
        """A channel to the gateway as the bootstrap ministry administrator."""
        return secure_channel(
            self.gateway_address, officer_tls(self.pki, BOOTSTRAP_ADMINISTRATOR).read()
        )

    def as_officer(self, unit_code: str, officer_id: str | None = None) -> grpc.Channel:
        """A channel to the gateway as an officer of ``unit_code`` (created if missing)."""
        officer_id = officer_id or f"officer-{unit_code}"
        with self.administrator() as channel:
            create_officer(channel, officer_id, unit_code)
        return secure_channel(self.gateway_address, officer_tls(self.pki, officer_id).read())

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
            self.police = create_police(self.police_config)
            self.police.start()
        else:
            self.justice = create_adapter(self.justice_config)
            self.justice.start()

    def stop_all(self) -> None:
        self.gateway.stop()
        self.justice.stop(grace=None)
        self.police.stop(grace=None).wait()


def start_stack(
    pki: DevPki,
    directory: Path,
    *,
    policy: Path = POLICY,
    grace_window_hours: float = 24.0,
    databases: dict[str, str] | None = None,
) -> Stack:
    """The stack on loopback; ``databases`` (URLs by "justice", "police", "audit") or SQLite
    files in ``directory``; the adapters in this process, lienthong-gateway as a process."""
    urls = databases or {
        name: f"sqlite:///{directory / f'{name}.db'}" for name in ("justice", "police", "audit")
    }
    gateway_port, justice_port, police_port = free_port(), free_port(), free_port()
    gateway_address = f"127.0.0.1:{gateway_port}"
    justice_address = f"127.0.0.1:{justice_port}"
    police_address = f"127.0.0.1:{police_port}"
    trusted = frozenset({GATEWAY_ID})
    police_config = PoliceConfig(police_address, tls_of(pki, "police"), urls["police"], trusted)
    justice_config = JusticeConfig(
        justice_address, tls_of(pki, "justice"), urls["justice"],
        gateway_address, trusted, administrators=(BOOTSTRAP_ADMINISTRATOR,),
        grace_window_hours=grace_window_hours, reconcilers=frozenset({POPULATION_ID}),
    )  # fmt: skip
    police = create_police(police_config)
    justice = create_adapter(justice_config)
    registry, population = Route(justice_address, REGISTRY_ID), Route(police_address, POPULATION_ID)
    config = GatewayConfig(
        listen=gateway_address,
        tls=tls_of(pki, "gateway-server"),
        upstream_tls=tls_of(pki, "gateway-client"),
        policy=policy,
        routes={
            "lienthong.civilregistry.v1.BirthRegistrationService": registry,
            "lienthong.civilregistry.v1.OfficerService": registry,
            "lienthong.civilregistry.v1.ReconciliationService": registry,
            "lienthong.population.v1.CitizenService": population,
        },
        audit=AuditConfig(urls["audit"], pki.directory / "audit-log.key"),
        crls=(pki.directory / "crl.pem",),
        metrics_listen=f"127.0.0.1:{free_port()}",
    )
    police.start()
    justice.start()
    gateway = start_compiled(config, directory / "gateway")
    return Stack(
        pki, gateway_address, justice_address, police_address, police, justice, gateway,
        police_config, justice_config,
    )  # fmt: skip
