"""A TCP forwarder on loopback that a test can take down and bring back up.

Services reach a database through it (its port in their database URL). ``down()`` closes
every connection it carries and then, until ``up()``, either resets each new connection at
once ("refuse": the server is gone) or accepts it and never answers ("blackhole": packets
are lost, as behind a dead route), so that clients see both ways a database disappears.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from typing import Literal

Mode = Literal["refuse", "blackhole"]
_POLL = 0.1  # seconds between looks at the state, for the accept loop and the pumps
_CHUNK = 65536


def _reset(connection: socket.socket) -> None:
    """Close ``connection`` with a reset (SO_LINGER 0): the peer learns at once.

    The shutdown first wakes a pump thread waiting on it in select.
    """
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` until told to fail."""

    def __init__(self, target_host: str, target_port: int) -> None:
        """Listen on a free loopback port; ``start()`` begins accepting."""
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._mode: Mode | None = None  # None: up
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._held: list[socket.socket] = []  # blackholed connections, closed on up()
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self.attempts = 0  # connections clients made, whatever became of them
        self.accepted = 0  # of which forwarded

    def start(self) -> FaultProxy:
        """Begin accepting; returns self."""
        self._acceptor.start()
        return self

    @property
    def is_down(self) -> bool:
        """Whether new connections are refused or blackholed now."""
        return self._mode is not None

    @property
    def held(self) -> int:
        """Blackholed connections held unanswered since ``down("blackhole")``."""
        with self._lock:
            return len(self._held)

    def down(self, mode: Mode = "refuse") -> None:
        """Cut every carried connection, and fail new ones in ``mode`` until ``up()``."""
        with self._lock:
            self._mode = mode
            pairs, self._pairs = self._pairs, set()
        for client, server in pairs:
            _reset(client)
            _reset(server)

    def up(self) -> None:
        """Forward new connections again (blackholed ones are dropped: their clients gave up)."""
        with self._lock:
            self._mode = None
            held, self._held = self._held, []
        for connection in held:
            _reset(connection)

    def close(self) -> None:
        """Stop accepting, cut everything, and wait for the threads."""
        self._closing.set()
        self._acceptor.join()
        self.down()
        self.up()
        self._listener.close()
        for thread in self._threads:
            thread.join()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        with self._lock:
            self.attempts += 1
            mode = self._mode
            if mode == "blackhole":
                self._held.append(client)
                return
        if mode == "refuse":
            _reset(client)
            return
        try:
            server = socket.create_connection(self._target, timeout=5)
        except OSError:
            _reset(client)
            return
        for end in (client, server):
            end.setblocking(True)  # noqa: FBT003 - socket's own API
        with self._lock:
            if self._mode is not None:  # went down meanwhile
                _reset(client)
                _reset(server)
                return
            self._pairs.add((client, server))
            self.accepted += 1
        thread = threading.Thread(
            target=self._pump, args=(client, server), name="fault-proxy-pump", daemon=True
        )
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        """Copy both ways until either end closes or the proxy cuts the pair."""
        peer = {client: server, server: client}
        try:
            while not self._closing.is_set():
                readable, _, _ = select.select([client, server], [], [], _POLL)
                for end in readable:
                    data = end.recv(_CHUNK)
                    if not data:
                        return
                    peer[end].sendall(data)
        except (OSError, ValueError):  # cut by down(): closed under us
            return
        finally:
            with self._lock:
                carried = (client, server) in self._pairs
                self._pairs.discard((client, server))
            if carried:
                client.close()
                server.close()
