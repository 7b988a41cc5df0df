"""A raw-bytes upstream for gateway tests: every cardinality, a slow method, rich errors.

It serves the test-only service ``lienthong.test.v1.EchoService`` over mutual TLS with the
Police adapter's certificate, and records what reached it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from lienthong.contracts import Method
from lienthong.identity import peer_certificate
from lienthong.tls import TlsMaterial, server_credentials

SERVICE = "lienthong.test.v1.EchoService"
UNARY = f"/{SERVICE}/Unary"
SERVER_STREAM = f"/{SERVICE}/ServerStream"
CLIENT_STREAM = f"/{SERVICE}/ClientStream"
BIDI = f"/{SERVICE}/Bidi"
SLEEP = f"/{SERVICE}/Sleep"
SLOW_STREAM = f"/{SERVICE}/SlowStream"
FAIL = f"/{SERVICE}/Fail"
METHODS = {
    UNARY: Method(UNARY, SERVICE, client_streaming=False, server_streaming=False),
    SERVER_STREAM: Method(SERVER_STREAM, SERVICE, client_streaming=False, server_streaming=True),
    CLIENT_STREAM: Method(CLIENT_STREAM, SERVICE, client_streaming=True, server_streaming=False),
    BIDI: Method(BIDI, SERVICE, client_streaming=True, server_streaming=True),
    SLEEP: Method(SLEEP, SERVICE, client_streaming=False, server_streaming=False),
    SLOW_STREAM: Method(SLOW_STREAM, SERVICE, client_streaming=False, server_streaming=True),
    FAIL: Method(FAIL, SERVICE, client_streaming=False, server_streaming=False),
}
STREAM_COPIES = 3


@dataclass
class Echo:
    """The upstream's record of what reached it."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    peer_certificates: list[bytes] = field(default_factory=list)
    # Called with each call's context on arrival, for tests that look around at that moment.
    on_call: Callable[[grpc.ServicerContext], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def record(self, context: grpc.ServicerContext) -> None:
        self.peer_certificates.append(peer_certificate(context) or b"")
        if self.on_call is not None:
            self.on_call(context)
        self.metadata.append({
            key: value for key, value in context.invocation_metadata() if isinstance(value, str)
        })  # fmt: skip

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.record(context)
        return request

    def server_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self.record(context)
        for index in range(STREAM_COPIES):
            yield bytes([index]) + request

    def client_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self.record(context)
        return b"|".join(requests)

    def bidi(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self.record(context)
        yield from requests

    def sleep(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.record(context)
        context.add_callback(self.cancelled.set)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and context.is_active():
            time.sleep(0.01)
        return request

    def slow_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """Three copies 0.4 s apart: a stream that outlasts a short unary timeout."""
        self.record(context)
        for index in range(STREAM_COPIES):
            time.sleep(0.4)
            yield bytes([index]) + request

    def fail(self, _request: bytes, context: grpc.ServicerContext) -> bytes:
        self.record(context)
        status = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message="echo says no")
        status.details.add().Pack(
            error_details_pb2.ErrorInfo(reason="ECHO_REFUSED", domain="echo.test")
        )
        rich = rpc_status.to_status(status)
        context.set_trailing_metadata((*rich.trailing_metadata, ("echo-trailer", "kept")))
        context.set_code(rich.code)
        context.set_details(rich.details)
        return b""


class _Handler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, echo: Echo) -> None:
        self._handlers = {
            UNARY: grpc.unary_unary_rpc_method_handler(echo.unary),
            SERVER_STREAM: grpc.unary_stream_rpc_method_handler(echo.server_stream),
            CLIENT_STREAM: grpc.stream_unary_rpc_method_handler(echo.client_stream),
            BIDI: grpc.stream_stream_rpc_method_handler(echo.bidi),
            SLEEP: grpc.unary_unary_rpc_method_handler(echo.sleep),
            SLOW_STREAM: grpc.unary_stream_rpc_method_handler(echo.slow_stream),
            FAIL: grpc.unary_unary_rpc_method_handler(echo.fail),
        }

    def service(self, handler_call_details):
        return self._handlers.get(handler_call_details.method)


def start_echo(tls: TlsMaterial, address: str = "127.0.0.1:0") -> tuple[grpc.Server, int, Echo]:
    """Start the echo upstream; returns the server, its port and its record."""
    echo = Echo()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    servicer = health.HealthServicer()
    servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers([_Handler(echo)])
    port = server.add_secure_port(address, server_credentials(tls))
    server.start()
    return server, port, echo
