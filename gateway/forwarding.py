"""Forwarding of admitted calls to their upstream, as raw bytes.

Each method's cardinality comes from the contracts, so a unary call is served and forwarded
by unary handlers. Messages are never decoded: the bytes the caller sent are the bytes the
upstream receives, and the upstream's status, details and trailing metadata (including
grpc-status-details-bin) come back to the caller unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from gateway.admission import Gatekeeper
from gateway.credentials import Upstreams
from gateway.exchange_log import Exchange
from gateway.metrics import GatewayMetrics
from lienthong import errors, metadata
from lienthong.contracts import Method
from lienthong.grpc_server import code_of, status_of
from lienthong.identity import peer_certificate, peer_identity

DOMAIN = "gateway.lienthong.gov.vn"
# grpcio reports "no deadline" as a huge time remaining; beyond this a call gets the default.
DEFAULT_UPSTREAM_TIMEOUT = 30.0
# Headers the transport owns; forwarding them would duplicate or corrupt the upstream call.
_TRANSPORT_KEYS = frozenset(
    {"user-agent", "te", "content-type", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"}
)


class ForwardingHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Admits, routes and forwards every call to a contract method."""

    def __init__(
        self,
        methods: dict[str, Method],
        gatekeeper: Gatekeeper,
        upstreams: Upstreams,
        metrics: GatewayMetrics,
        *,
        upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT,
    ) -> None:
        """Serve ``methods``, admitted by ``gatekeeper``, through ``upstreams``."""
        self._methods = methods
        self._forwarding = _Forwarding(gatekeeper, upstreams, metrics, upstream_timeout)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The handler of one call; health and reflection are left to their own handlers."""
        path: str = handler_call_details.method
        if path.startswith("/grpc."):
            return None
        method = self._methods.get(path)
        if method is None:
            return grpc.unary_unary_rpc_method_handler(self._unknown(path))
        forward = _Forward(method, self._forwarding)
        if method.client_streaming and method.server_streaming:
            return grpc.stream_stream_rpc_method_handler(forward.stream_stream)
        if method.client_streaming:
            return grpc.stream_unary_rpc_method_handler(forward.stream_unary)
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(forward.unary_stream)
        return grpc.unary_unary_rpc_method_handler(forward.unary_unary)

    @staticmethod
    def _unknown(path: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def unknown(request: bytes, context: grpc.ServicerContext) -> bytes:
            exchange = _exchange(path, context)
            exchange.saw_request(request)
            exchange.finish(grpc.StatusCode.UNIMPLEMENTED)
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"no method {path} in the contracts")
            raise AssertionError("unreachable")  # abort raises

        return unknown


def _exchange(path: str, context: grpc.ServicerContext) -> Exchange:
    invocation = context.invocation_metadata()
    return Exchange(
        method=path,
        caller=peer_identity(context),
        purpose=metadata.first(invocation, metadata.PURPOSE),
        request_id=metadata.first(invocation, metadata.REQUEST_ID),
        on_behalf_of=metadata.first(invocation, metadata.ON_BEHALF_OF),
    )


@dataclass(frozen=True)
class _Forwarding:
    """What every forwarded call needs, shared by all methods."""

    gatekeeper: Gatekeeper
    upstreams: Upstreams
    metrics: GatewayMetrics
    upstream_timeout: float


class _Forward:
    """The four cardinalities of forwarding one method."""

    def __init__(self, method: Method, forwarding: _Forwarding) -> None:
        self._method = method
        self._forwarding = forwarding

    def _admit(
        self, context: grpc.ServicerContext
    ) -> tuple[Exchange, grpc.Channel, dict[str, Any]]:
        """Identify, authorise, limit and route the call, or answer it with the refusal."""
        exchange = _exchange(self._method.path, context)
        forwarding = self._forwarding
        try:
            caller = forwarding.gatekeeper.admit(exchange, peer_certificate(context))
        except errors.LienthongError as refusal:
            code = code_of(refusal)
            forwarding.metrics.rejected(
                exchange.caller or "unknown", self._method.path, refusal.reason, code.name
            )
            exchange.finish(code)
            context.abort_with_status(status_of(refusal, DOMAIN))
            raise AssertionError("unreachable") from refusal  # abort raises
        forwarding.metrics.started(caller)
        exchange.when_finished(
            lambda code: forwarding.metrics.finished(
                caller, self._method.path, code.name, exchange.elapsed()
            )
        )
        route = forwarding.upstreams.for_service(self._method.service)
        if route is None:
            exchange.finish(grpc.StatusCode.UNIMPLEMENTED)
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{self._method.service} is not routed")
            raise AssertionError("unreachable")
        exchange.upstream, channel = route
        context.add_callback(lambda: exchange.finish(grpc.StatusCode.CANCELLED))
        call_options = {
            "timeout": _timeout(context, forwarding.upstream_timeout),
            "metadata": _upstream_metadata(context, exchange),
        }
        return exchange, channel, call_options

    def unary_unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Forward a unary call."""
        exchange, channel, options = self._admit(context)
        exchange.saw_request(request)
        future = channel.unary_unary(self._method.path, None, None).future(request, **options)
        return self._relay_response(future, context, exchange)

    def stream_unary(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        """Forward a client-streaming call."""
        exchange, channel, options = self._admit(context)
        future = channel.stream_unary(self._method.path, None, None).future(
            exchange.requests(requests), **options
        )
        return self._relay_response(future, context, exchange)

    @staticmethod
    def _relay_response(
        future: Any,  # noqa: ANN401 - grpc's call future has no public type
        context: grpc.ServicerContext,
        exchange: Exchange,
    ) -> bytes:
        context.add_callback(future.cancel)
        try:
            response: bytes = future.result()
        except grpc.RpcError as error:
            _relay_error(context, exchange, error)
        except grpc.FutureCancelledError:  # the caller went away and the call was cancelled
            exchange.finish(grpc.StatusCode.CANCELLED)
            context.abort(grpc.StatusCode.CANCELLED, "cancelled by the caller")
        context.set_trailing_metadata(future.trailing_metadata())
        exchange.saw_response(response)
        exchange.finish(grpc.StatusCode.OK)
        return response

    def unary_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """Forward a server-streaming call."""
        exchange, channel, options = self._admit(context)
        exchange.saw_request(request)
        call = channel.unary_stream(self._method.path, None, None)(request, **options)
        yield from self._relay_stream(call, context, exchange)

    def stream_stream(
        self, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        """Forward a bidirectional-streaming call."""
        exchange, channel, options = self._admit(context)
        call = channel.stream_stream(self._method.path, None, None)(
            exchange.requests(requests), **options
        )
        yield from self._relay_stream(call, context, exchange)

    @staticmethod
    def _relay_stream(
        call: Any,  # noqa: ANN401 - grpc's streaming call object has no public type
        context: grpc.ServicerContext,
        exchange: Exchange,
    ) -> Iterator[bytes]:
        context.add_callback(call.cancel)
        try:
            for message in call:
                yield exchange.saw_response(message)
        except grpc.RpcError as error:
            _relay_error(context, exchange, error)
        context.set_trailing_metadata(call.trailing_metadata())
        exchange.finish(grpc.StatusCode.OK)


def _timeout(context: grpc.ServicerContext, limit: float) -> float:
    """The caller's deadline, clamped to the upstream timeout (and "no deadline" with it)."""
    remaining = context.time_remaining()
    if remaining is None or remaining > limit:
        return limit
    return max(remaining, 0.0)


def _upstream_metadata(
    context: grpc.ServicerContext, exchange: Exchange
) -> list[tuple[str, str | bytes]]:
    """The metadata sent upstream: the caller's own, the identity the gateway verified.

    Transport headers and any lienthong- key a caller may not set are dropped, so an upstream
    can trust lienthong-caller on the gateway's mTLS leg.
    """
    forwarded = [
        (key, value)
        for key, value in context.invocation_metadata()
        if key not in _TRANSPORT_KEYS
        and not key.startswith(":")
        and (not key.startswith(metadata.PREFIX) or key in metadata.CALLER_SUPPLIED)
    ]
    forwarded.append((metadata.CALLER, exchange.caller or ""))
    forwarded.append((metadata.EXCHANGE_ID, exchange.exchange_id))
    return forwarded


def _relay_error(context: grpc.ServicerContext, exchange: Exchange, error: grpc.RpcError) -> None:
    """Answer the caller with the upstream's status, details and trailing metadata."""
    code = error.code()
    exchange.finish(code)
    trailing = error.trailing_metadata()
    if trailing:
        context.set_trailing_metadata(tuple((item.key, item.value) for item in trailing))
    context.abort(code, error.details() or "")
