"""The upstream of bench/proxy_bench.py: a raw-bytes echo of one contract method, over mTLS.

Usage: .venv/bin/python bench/proxy_upstream.py --port PORT --pki DIR

It answers ``/lienthong.population.v1.CitizenService/VerifyCitizen`` with the request bytes
it received, without decoding them, and serves the standard health service (the gateway polls
it). It runs as its own process with the Police adapter's certificate and requires a client
certificate of the development CA (the gateway's client leg, nginx's, or the load generator
calling it directly); it checks no per-call identity, so that the three setups it is measured
behind pay the same upstream cost. One asyncio event loop (grpc.aio), so that one Python
process serves as many calls a second as it can.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # not in grpc-stubs

SERVICE = "lienthong.population.v1.CitizenService"
METHOD = f"/{SERVICE}/VerifyCitizen"


async def _echo(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


class _Handler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self._echo = grpc.unary_unary_rpc_method_handler(_echo)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        return self._echo if handler_call_details.method == METHOD else None


async def serve(port: int, pki: Path) -> None:
    """Serve on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    credentials = grpc.ssl_server_credentials(
        [((pki / "police.key").read_bytes(), (pki / "police.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    server = grpc.aio.server()
    servicer = health_aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers([_Handler()])
    if server.add_secure_port(f"127.0.0.1:{port}", credentials) == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"upstream listening on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await server.stop(grace=None)


def main() -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pki", type=Path, required=True, help="the development PKI directory")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.pki))


if __name__ == "__main__":
    main()
