"""The gateway's Prometheus metrics, and an HTTP endpoint that serves them.

Every label value is an identifier: a caller's SPIFFE ID, a contract method's full path, a
gRPC status code name, a rejection reason, a refused TLS handshake's reason category, an
upstream service's name. Never put anything read from a message (or grpc's own text) in a
label: it could be personal data, and it would make the series unbounded.

Metrics live in the ``CollectorRegistry`` a ``GatewayMetrics`` is given (a new one by
default), never in prometheus_client's global registry, so several gateways, or tests, in one
process keep separate counts.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Forwarded calls take from well under a millisecond (a refusal) to the upstream deadline;
# these buckets cover 0.5 ms to 10 s at roughly 2-2.5x steps.
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
UNKNOWN_CALLER = "unknown"


def _caller_label(caller: str | None) -> str:
    return UNKNOWN_CALLER if caller is None else caller


class GatewayMetrics:
    """The gateway's request, rejection and upstream metrics.

    A call is either ``rejected`` before it starts, or ``started`` and later ``finished``
    (whatever its outcome); never both, or the in-flight gauge drifts.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Register the metrics in ``registry``, or in a new registry of their own."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self._requests = Counter(
            "lienthong_gateway_requests_total",
            "Calls answered by the gateway, by caller, method and gRPC status code.",
            ("caller", "method", "code"),
            registry=self.registry,
        )
        self._duration = Histogram(
            "lienthong_gateway_request_duration_seconds",
            "Time from admitting a call to answering it, by method.",
            ("method",),
            registry=self.registry,
            buckets=DURATION_BUCKETS,
        )
        self._in_flight = Gauge(
            "lienthong_gateway_in_flight_requests",
            "Calls admitted and not yet answered, by caller.",
            ("caller",),
            registry=self.registry,
        )
        self._rejections = Counter(
            "lienthong_gateway_rejections_total",
            "Calls refused before forwarding, by caller, method and reason.",
            ("caller", "method", "reason"),
            registry=self.registry,
        )
        self._handshake_failures = Counter(
            "lienthong_gateway_tls_handshake_failures_total",
            "TLS handshakes refused by grpc (a caller's with the gateway, or the gateway's own"
            " with an upstream: grpc does not say which), by reason category.",
            ("reason",),
            registry=self.registry,
        )
        self._handshake_unrecorded = Counter(
            "lienthong_gateway_tls_handshake_failures_unrecorded_total",
            "Refused TLS handshakes that could not be recorded in the audit log.",
            registry=self.registry,
        )
        self._upstream_up = Gauge(
            "lienthong_gateway_upstream_up",
            "1 when the service's upstream is reachable, 0 when not.",
            ("service",),
            registry=self.registry,
        )

    def started(self, caller: str | None) -> None:
        """A call of ``caller`` (a SPIFFE ID, None if unidentified) was admitted."""
        self._in_flight.labels(_caller_label(caller)).inc()

    def finished(self, caller: str | None, method: str, code: str, seconds: float) -> None:
        """A started call ended with the gRPC status ``code`` (e.g. "OK") after ``seconds``."""
        label = _caller_label(caller)
        self._in_flight.labels(label).dec()
        self._requests.labels(label, method, code).inc()
        self._duration.labels(method).observe(seconds)

    def rejected(self, caller: str | None, method: str, reason: str, code: str) -> None:
        """A call was refused for ``reason`` (e.g. "RATE_LIMITED") and answered with ``code``.

        ``code`` is the gRPC status the caller saw: RESOURCE_EXHAUSTED for RATE_LIMITED and
        CONCURRENCY_LIMITED, PERMISSION_DENIED or UNAUTHENTICATED for those reasons.
        """
        label = _caller_label(caller)
        self._rejections.labels(label, method, reason).inc()
        # Counted in requests_total as well, so that series alone gives the error ratio.
        self._requests.labels(label, method, code).inc()

    def handshake_failed(self, reason: str) -> None:
        """A TLS handshake was refused (by grpc) for ``reason``, a category of a fixed set.

        The set is gateway.handshake_audit.REASONS (e.g. "EXPIRED"), never grpc's text.
        """
        self._handshake_failures.labels(reason).inc()

    def handshake_not_recorded(self) -> None:
        """A refused TLS handshake could not be recorded in the audit log."""
        self._handshake_unrecorded.inc()

    def upstream_up(self, service: str, up: bool) -> None:  # noqa: FBT001 - the flag is the recorded value
        """Record whether ``service``'s upstream is reachable."""
        self._upstream_up.labels(service).set(1 if up else 0)


class MetricsServer:
    """A running ``/metrics`` HTTP endpoint; ``close`` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        """The server prometheus_client started, and the thread serving it."""
        self._server = server
        self._thread = thread

    @property
    def host(self) -> str:
        """The address the endpoint is bound to."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port the endpoint listens on (the one chosen when 0 was asked for)."""
        return self._server.server_port

    def close(self) -> None:
        """Stop serving, free the port and wait for the serving thread to end."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a host and a port number."""
    host, separator, port_text = address.rpartition(":")
    if not separator or not host or not port_text.isdigit():
        raise ValueError(f"metrics address must be host:port, not {address!r}")
    port = int(port_text)
    if port > 65535:  # noqa: PLR2004 - the largest TCP port
        raise ValueError(f"metrics port must be at most 65535, not {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def start_metrics_server(metrics: GatewayMetrics, address: str) -> MetricsServer:
    """Serve ``metrics`` over plain HTTP on ``address`` (``host:port``; port 0 picks one).

    prometheus_client answers GET on any path, ``/metrics`` included. The endpoint has no TLS
    and no authentication: bind it to loopback or to the monitoring network only.
    """
    host, port = _split_address(address)
    # Since prometheus_client 0.20 this returns the server and its daemon thread, which is
    # what lets the endpoint be stopped (shutdown alone keeps the port: close() also closes).
    server, thread = start_http_server(port, host, registry=metrics.registry)
    return MetricsServer(server, thread)
