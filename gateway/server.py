"""Composition root of the gateway."""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.forwarding import ForwardingHandler, Upstreams
from gateway.policy import load_policy
from lienthong.config import GatewayConfig
from lienthong.contracts import methods
from lienthong.serving import serve_until_signalled
from lienthong.tls import secure_channel, server_credentials


def create_server(config: GatewayConfig, *, max_workers: int = 32) -> tuple[grpc.Server, int]:
    """Build the gateway, bound but not started, and return it with its port."""
    contract_methods = methods()
    policy = load_policy(config.policy, contract_methods)
    upstream_tls = config.upstream_tls.read()
    channels = {
        address: secure_channel(address, upstream_tls) for address in set(config.routes.values())
    }
    upstreams = Upstreams(channels, dict(config.routes))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_generic_rpc_handlers([ForwardingHandler(contract_methods, policy, upstreams)])
    port = server.add_secure_port(config.listen, server_credentials(config.tls.read()))
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    return server, port


def serve(config: GatewayConfig) -> None:
    """Run the gateway until SIGTERM or SIGINT, then drain."""
    server, port = create_server(config)
    serve_until_signalled(server, "gateway", port)
