"""Forwarding of admitted calls to their upstream, as raw bytes, with every exchange audited.

Each method's cardinality comes from the contracts, so a unary call is served and forwarded
by unary handlers. Messages are never decoded: the bytes the caller sent are the bytes the
upstream receives, and the upstream's status, details and trailing metadata (including
grpc-status-details-bin) come back to the caller unchanged, with the gateway's signed
receipt added. Services the gateway implements itself (its AuditService) are called in
process after the same admission and auditing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import structlog

from gateway.admission import MAX_METADATA_VALUE, Gatekeeper
from gateway.audit.entry import TEXT_LIMITS, bounded
from gateway.audit.store import AuditUnavailableError
from gateway.credentials import Upstreams
from gateway.exchange_log import RECEIPT_KEY, Auditor, Exchange
from gateway.local import LocalService
from gateway.metrics import GatewayMetrics
from lienthong import errors, metadata
from lienthong.contracts import Method
from lienthong.grpc_server import code_of, status_of
from lienthong.identity import peer_certificate, peer_identity

log = structlog.get_logger(__name__)

DOMAIN = "gateway.lienthong.gov.vn"
# grpcio reports "no deadline" as a huge time remaining; beyond this a call gets the default.
DEFAULT_UPSTREAM_TIMEOUT = 30.0
DEFAULT_STREAM_TIMEOUT = 600.0
# Headers the transport owns; forwarding them would duplicate or corrupt the upstream call.
_TRANSPORT_KEYS = frozenset(
    {"user-agent", "te", "content-type", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"}
)
Trailers = Sequence[tuple[str, str | bytes]]


@dataclass(frozen=True)
class Forwarding:
    """What every forwarded call needs, shared by all methods."""

    gatekeeper: Gatekeeper
    upstreams: Upstreams
    metrics: GatewayMetrics
    auditor: Auditor
    local: dict[str, LocalService]
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    # A streaming call may carry far more than one message's work: it gets longer.
    stream_timeout: float = DEFAULT_STREAM_TIMEOUT


class ForwardingHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Admits, routes, forwards and audits every call to a contract method."""

    def __init__(self, methods: dict[str, Method], forwarding: Forwarding) -> None:
        """Serve ``methods`` with ``forwarding``."""
        self._methods = methods
        self._forwarding = forwarding

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

    def _unknown(self, path: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def unknown(request: bytes, context: grpc.ServicerContext) -> bytes:
            # The path is the caller's text: it is recorded, but never a metric label.
            exchange = _exchange(path, context, self._forwarding.auditor)
            exchange.saw_request(request)
            _answer(
                context,
                exchange,
                grpc.StatusCode.UNIMPLEMENTED,
                f"no method {path} in the contracts",
            )

        return unknown


def _exchange(path: str, context: grpc.ServicerContext, auditor: Auditor) -> Exchange:
    invocation = context.invocation_metadata()
    purpose = metadata.first(invocation, metadata.PURPOSE)
    request_id = metadata.first(invocation, metadata.REQUEST_ID)
    on_behalf_of = metadata.first(invocation, metadata.ON_BEHALF_OF)
    sent = (purpose, request_id, on_behalf_of)
    # The caller's text is bounded here, before any entry, log line or metric sees it.
    return Exchange(
        method=bounded(path, TEXT_LIMITS["method"]) or "",
        caller=peer_identity(context),
        purpose=bounded(purpose, TEXT_LIMITS["purpose"]),
        request_id=bounded(request_id, TEXT_LIMITS["request_id"]),
        on_behalf_of=bounded(on_behalf_of, TEXT_LIMITS["on_behalf_of"]),
        auditor=auditor,
        metadata_too_long=any(len(value or "") > MAX_METADATA_VALUE for value in sent),
    )


def _answer(
    context: grpc.ServicerContext,
    exchange: Exchange,
    code: grpc.StatusCode,
    details: str,
    trailers: Trailers = (),
) -> NoReturn:
    """End the call with ``code`` after recording it, the receipt in its trailers."""
    receipt = exchange.finish(code)
    extra = [(RECEIPT_KEY, receipt)] if receipt is not None else []
    context.set_trailing_metadata((*trailers, *extra))
    context.abort(code, details)
    raise AssertionError("unreachable")  # abort raises


def _release(context: grpc.ServicerContext, exchange: Exchange, trailers: Trailers) -> None:
    """Record the successful completion; the answer is released only if that is durable."""
    receipt = exchange.finish(grpc.StatusCode.OK)
    if receipt is None:
        context.abort(grpc.StatusCode.UNAVAILABLE, "the audit log could not record the exchange")
    context.set_trailing_metadata((*trailers, (RECEIPT_KEY, receipt)))


class _Forward:
    """The four cardinalities of forwarding one method."""

    def __init__(self, method: Method, forwarding: Forwarding) -> None:
        self._method = method
        self._forwarding = forwarding

    def _admit(self, context: grpc.ServicerContext, request: bytes | None) -> Exchange:
        """Identify, authorise and limit the call, and record its request entry.

        ``request`` is the unary request, whose digest then goes into the request entry.
        """
        forwarding = self._forwarding
        exchange = _exchange(self._method.path, context, forwarding.auditor)
        if request is not None:
            exchange.saw_request(request)
        try:
            caller = forwarding.gatekeeper.admit(exchange, peer_certificate(context))
        except errors.LienthongError as refusal:
            code = code_of(refusal)
            forwarding.metrics.rejected(
                exchange.caller or "unknown", self._method.path, refusal.reason, code.name
            )
            status = status_of(refusal, DOMAIN)
            _answer(context, exchange, code, status.details, status.trailing_metadata)
        forwarding.metrics.started(caller)
        exchange.when_finished(
            lambda code: forwarding.metrics.finished(
                caller, self._method.path, code.name, exchange.elapsed()
            )
        )
        context.add_callback(lambda: _finish_cancelled(exchange))
        return exchange

    def _route(self, context: grpc.ServicerContext, exchange: Exchange) -> grpc.Channel:
        route = self._forwarding.upstreams.for_service(self._method.service)
        if route is None:
            _answer(
                context,
                exchange,
                grpc.StatusCode.UNIMPLEMENTED,
                f"{self._method.service} is not routed",
            )
        exchange.upstream, channel = route
        return channel

    def _record_request(
        self, context: grpc.ServicerContext, exchange: Exchange, *, digest_known: bool
    ) -> None:
        try:
            exchange.record_request(digest_known=digest_known)
        except AuditUnavailableError:
            _answer(
                context,
                exchange,
                grpc.StatusCode.UNAVAILABLE,
                "the audit log is unavailable; the call was not forwarded",
            )

    def _options(self, context: grpc.ServicerContext, exchange: Exchange) -> dict[str, Any]:
        streaming = self._method.client_streaming or self._method.server_streaming
        forwarding = self._forwarding
        return {
            "timeout": _timeout(
                context, forwarding.stream_timeout if streaming else forwarding.upstream_timeout
            ),
            "metadata": _upstream_metadata(context, exchange),
        }

    def unary_unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Forward a unary call (or serve it in process, for the gateway's own services)."""
        exchange = self._admit(context, request)
        local = self._forwarding.local.get(self._method.service)
        if local is not None:
            exchange.upstream = "local"
            self._record_request(context, exchange, digest_known=True)
            try:
                response = local.call(self._method.path, request, exchange.caller or "")
            except errors.LienthongError as error:
                status = status_of(error, DOMAIN)
                _answer(context, exchange, code_of(error), status.details, status.trailing_metadata)
            except Exception:
                # The stack trace stays in the log; the caller learns only that it failed.
                log.exception("local_call_failed", method=self._method.path)
                _answer(context, exchange, grpc.StatusCode.INTERNAL, "internal error")
            exchange.saw_response(response)
            _release(context, exchange, ())
            return response
        channel = self._route(context, exchange)
        self._record_request(context, exchange, digest_known=True)
        future = channel.unary_unary(self._method.path, None, None).future(
            request, **self._options(context, exchange)
        )
        return self._relay_response(future, context, exchange)

    def stream_unary(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        """Forward a client-streaming call."""
        exchange = self._admit(context, None)
        channel = self._route(context, exchange)
        self._record_request(context, exchange, digest_known=False)
        future = channel.stream_unary(self._method.path, None, None).future(
            exchange.requests(requests), **self._options(context, exchange)
        )
        return self._relay_response(future, context, exchange)

    def unary_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """Forward a server-streaming call."""
        exchange = self._admit(context, request)
        channel = self._route(context, exchange)
        self._record_request(context, exchange, digest_known=True)
        call = channel.unary_stream(self._method.path, None, None)(
            request, **self._options(context, exchange)
        )
        yield from self._relay_stream(call, context, exchange)

    def stream_stream(
        self, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        """Forward a bidirectional-streaming call."""
        exchange = self._admit(context, None)
        channel = self._route(context, exchange)
        self._record_request(context, exchange, digest_known=False)
        call = channel.stream_stream(self._method.path, None, None)(
            exchange.requests(requests), **self._options(context, exchange)
        )
        yield from self._relay_stream(call, context, exchange)

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
            _answer(context, exchange, grpc.StatusCode.CANCELLED, "cancelled by the caller")
        exchange.saw_response(response)
        _release(context, exchange, _pairs(future.trailing_metadata()))
        return response

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
        _release(context, exchange, _pairs(call.trailing_metadata()))


def _finish_cancelled(exchange: Exchange) -> None:
    """On termination: a call not finished by then was cancelled (a no-op otherwise)."""
    exchange.finish(grpc.StatusCode.CANCELLED)


def _pairs(trailing: Any) -> Trailers:  # noqa: ANN401 - grpc's metadata tuples
    return tuple((item[0], item[1]) for item in trailing or ())


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
    if exchange.request_leaf is not None:
        forwarded.append((metadata.EXCHANGE_LEAF, str(exchange.request_leaf)))
    return forwarded


def _relay_error(
    context: grpc.ServicerContext, exchange: Exchange, error: grpc.RpcError
) -> NoReturn:
    """Answer the caller with the upstream's status, details and trailing metadata."""
    call: Any = error  # an RpcError from a call is also a grpc.Call
    _answer(context, exchange, call.code(), call.details() or "", _pairs(call.trailing_metadata()))
