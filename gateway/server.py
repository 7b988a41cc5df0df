"""Composition root of the gateway."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.admission import Gatekeeper
from gateway.audit.service import AuditApi
from gateway.audit.store import AuditLog
from gateway.credentials import Upstreams, rotating_server_credentials
from gateway.exchange_log import Auditor
from gateway.forwarding import Forwarding, ForwardingHandler
from gateway.handshake_audit import HandshakeAudit
from gateway.limits import CallerLimits, LimitSettings
from gateway.local import LocalService
from gateway.metrics import GatewayMetrics, MetricsServer, start_metrics_server
from gateway.policy import PolicyStore
from gateway.revocation import CrlSet
from gateway.upstream_health import UpstreamHealth
from lienthong.config import GatewayConfig
from lienthong.contracts import Method, methods
from lienthong.db import ensure_database, make_engine
from lienthong.gateway.v1 import audit_service_pb2
from lienthong.serving import serve_until_signalled
from lienthong.signed_note import load_signer
from lienthong.tls import reconnect_options


@dataclass
class Gateway:
    """A built gateway: its server and the parts that live and stop with it."""

    server: grpc.Server
    port: int
    metrics: GatewayMetrics
    health: UpstreamHealth
    upstreams: Upstreams
    audit: AuditLog
    metrics_address: str | None
    _metrics_server: MetricsServer | None = field(default=None, init=False)

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on, once started."""
        return self._metrics_server.port if self._metrics_server else None

    def start_companions(self) -> None:
        """Start what runs beside the server: the audit log, health polling and /metrics."""
        self.audit.start()
        if self.metrics_address:
            self._metrics_server = start_metrics_server(self.metrics, self.metrics_address)
        self.health.start()

    def start(self) -> None:
        """Serve calls, health polling and metrics."""
        self.start_companions()
        self.server.start()

    def drain(self) -> None:
        """Report NOT_SERVING, so that load balancers stop sending new calls."""
        self.health.stop()

    def close(self) -> None:
        """Release the channels, the audit log and /metrics, after the server stopped."""
        self.upstreams.close()
        self.audit.close()
        if self._metrics_server is not None:
            self._metrics_server.close()

    def stop(self, grace: float | None = None) -> None:
        """Drain, let in-flight calls finish for ``grace`` seconds, then release everything."""
        self.drain()
        self.server.stop(grace).wait()
        self.close()


def message_size_options(max_message_bytes: int) -> list[tuple[str, str | int]]:
    """Channel and server options that bound a message to ``max_message_bytes``."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def upstream_channel_options(max_message_bytes: int) -> list[tuple[str, str | int]]:
    """Options of the channels to the adapters.

    An upstream that restarts is reached again within a second, not after grpc's default
    backoff of up to two minutes during which every call fails fast.
    """
    return [*message_size_options(max_message_bytes), *reconnect_options(100, 1000)]


def create_gateway(
    config: GatewayConfig, *, contract_methods: dict[str, Method] | None = None
) -> Gateway:
    """Build the gateway, bound but not started.

    ``contract_methods`` defaults to every method of the contracts; tests may route others.
    """
    known = methods() if contract_methods is None else contract_methods
    limits = config.limits
    size_options = message_size_options(limits.max_message_bytes)
    upstreams = Upstreams(
        config.routes,
        config.upstream_tls,
        options=upstream_channel_options(limits.max_message_bytes),
    )
    metrics = GatewayMetrics()
    signer = load_signer(config.audit.origin, config.audit.signing_key.read_bytes())
    ensure_database(config.audit.database_url)
    audit = AuditLog(make_engine(config.audit.database_url), signer)
    audit_service = audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"]
    gatekeeper = Gatekeeper(
        PolicyStore(config.policy, known),
        CrlSet(list(config.crls), config.tls.ca_certificate) if config.crls else None,
        CallerLimits(LimitSettings(limits.rate_per_second, limits.burst, limits.max_concurrent)),
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max(32, 2 * limits.max_concurrent)),
        options=size_options,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = sorted({method.service for method in known.values()})
    reflection.enable_server_reflection(
        [*services, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    forwarding = Forwarding(
        gatekeeper,
        upstreams,
        metrics,
        Auditor(audit, signer),
        local={audit_service.full_name: LocalService(audit_service, AuditApi(audit))},
        upstream_timeout=limits.upstream_timeout,
        stream_timeout=limits.stream_timeout,
    )
    server.add_generic_rpc_handlers([ForwardingHandler(known, forwarding)])
    port = server.add_secure_port(config.listen, rotating_server_credentials(config.tls))
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    upstream_health = UpstreamHealth(health_servicer, upstreams, metrics)
    return Gateway(server, port, metrics, upstream_health, upstreams, audit, config.metrics_listen)


def serve(config: GatewayConfig) -> None:
    """Run the gateway until SIGTERM or SIGINT, then drain.

    The process's stderr goes through a HandshakeAudit once the audit log is open, so that
    the TLS handshakes grpc refuses are audited too (gateway/handshake_audit.py). Only here,
    in the gateway's own process: create_gateway's servers may share a process, and its
    stderr, with others (in tests, with their clients).
    """
    gateway = create_gateway(config)
    gateway.start_companions()
    handshakes = HandshakeAudit(gateway.audit, gateway.metrics)
    try:
        handshakes.start()
        serve_until_signalled(gateway.server, "gateway", gateway.port, on_drain=gateway.drain)
    finally:
        # Stopped before the audit log closes, so that the last refusals are recorded.
        handshakes.stop()
        gateway.close()
