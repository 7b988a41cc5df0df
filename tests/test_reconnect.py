"""A client reaches a peer whose TLS handshake is slow, as a peer just restarted on a busy
machine is (issue 22: the crash soak's "tcp handshaker shutdown").

gRPC core gives each connection attempt at least "grpc.min_reconnect_backoff_ms"; set to a
short backoff, it abandoned every handshake slower than that, and the call failed UNAVAILABLE
while the peer was up. The channels of lienthong.tls keep a short reconnect backoff and give
the handshake its time; the gateway's leg to the adapters must give it its time too.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from compiled_gateway import start_compiled
from echo_upstream import METHODS, UNARY, start_echo
from gateway_fixtures import PURPOSE, gateway_config
from stack import tls_of

from certs.pki import DevPki
from lienthong.tls import secure_channel

# Longer than the 250 ms that clients' attempts got.
HANDSHAKE_DELAY = 0.8


class SlowHandshakeProxy:
    """Forwards loopback connections to ``port``, holding the server's first bytes (its TLS
    ServerHello) for ``delay`` seconds on each connection."""

    def __init__(self, port: int, delay: float) -> None:
        self._target = ("127.0.0.1", port)
        self._delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(server, client, self._delay), daemon=True
            ).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, first_delay: float) -> None:
        delay = first_delay
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                time.sleep(delay)
                delay = 0.0
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        for connection in self._sockets:
            connection.close()


@pytest.fixture
def slow_upstream(pki: DevPki) -> Iterator[SlowHandshakeProxy]:
    server, port, _ = start_echo(tls_of(pki, "police").read())
    proxy = SlowHandshakeProxy(port, HANDSHAKE_DELAY)
    yield proxy
    proxy.close()
    server.stop(grace=None)


def test_a_client_channel_waits_for_a_slow_handshake(
    pki: DevPki, slow_upstream: SlowHandshakeProxy
) -> None:
    with secure_channel(slow_upstream.address, tls_of(pki, "gateway-client").read()) as channel:
        call = channel.unary_unary(UNARY)
        assert call(b"ping", timeout=10) == b"ping"


def test_the_gateway_upstream_leg_waits_for_a_slow_handshake(
    pki: DevPki, slow_upstream: SlowHandshakeProxy, tmp_path: Path
) -> None:
    """lienthong-gateway's connection to an adapter whose handshake is slow."""
    config = gateway_config(pki, tmp_path, slow_upstream.address)
    gateway = start_compiled(config, tmp_path, METHODS)
    try:
        with secure_channel(config.listen, tls_of(pki, "officer-portal").read()) as channel:
            call = channel.unary_unary(UNARY)
            assert call(b"ping", timeout=10, metadata=PURPOSE) == b"ping"
    finally:
        gateway.stop()
