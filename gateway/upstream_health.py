"""The gateway's health, per upstream service, from the upstreams' own health checks."""

from __future__ import annotations

import threading

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.credentials import Upstreams
from gateway.metrics import GatewayMetrics

log = structlog.get_logger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class UpstreamHealth:
    """Polls each routed service's health on its upstream and reports it as the gateway's.

    The gateway's overall status ("") is SERVING while it runs; each routed service name is
    SERVING only while its upstream says so.
    """

    def __init__(
        self,
        servicer: health.HealthServicer,
        upstreams: Upstreams,
        metrics: GatewayMetrics,
        *,
        interval: float = 1.0,
    ) -> None:
        """Report into ``servicer``; poll every ``interval`` seconds once started."""
        self._servicer = servicer
        self._upstreams = upstreams
        self._metrics = metrics
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upstream-health", daemon=True)
        servicer.set("", SERVING)
        for service in upstreams.services():
            servicer.set(service, NOT_SERVING)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and report NOT_SERVING for everything (the gateway is draining)."""
        self._stop.set()
        self._servicer.enter_graceful_shutdown()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def poll_once(self) -> None:
        """Ask every upstream once and report what they said."""
        for service in self._upstreams.services():
            route = self._upstreams.for_service(service)
            up = False
            if route is not None:
                try:
                    reply = health_pb2_grpc.HealthStub(route[1]).Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=self._interval
                    )
                    up = reply.status == SERVING
                except grpc.RpcError:
                    up = False
            if self._stop.is_set():
                return
            self._servicer.set(service, SERVING if up else NOT_SERVING)
            self._metrics.upstream_up(service, up)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self._interval)
