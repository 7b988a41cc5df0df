"""Running a built server in the foreground until the process is told to stop."""

from __future__ import annotations

import signal
import threading

import grpc
import structlog

log = structlog.get_logger(__name__)

DRAIN_SECONDS = 5.0


def serve_until_signalled(server: grpc.Server, name: str, port: int) -> None:
    """Start ``server``, wait for SIGTERM or SIGINT, then drain in-flight calls and stop."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    log.info("server_started", server=name, port=port)
    stop.wait()
    log.info("server_draining", server=name, grace_seconds=DRAIN_SECONDS)
    server.stop(grace=DRAIN_SECONDS).wait()
    log.info("server_stopped", server=name)
