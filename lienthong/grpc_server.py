"""The gRPC edge shared by the adapters.

One mapping from domain errors to status codes, the check that only trusted peers call, and
server construction with health and reflection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any, cast

import grpc
import structlog
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from sqlalchemy import exc as sql_errors

from lienthong import errors
from lienthong.identity import peer_identity
from lienthong.tls import TlsMaterial, server_credentials

log = structlog.get_logger(__name__)

_CODES: dict[type[errors.LienthongError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.PermissionDenied: code_pb2.PERMISSION_DENIED,
    errors.OutOfRange: code_pb2.OUT_OF_RANGE,
    errors.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    errors.Unavailable: code_pb2.UNAVAILABLE,
}


def code_of(error: errors.LienthongError) -> grpc.StatusCode:
    """The gRPC status code of a domain error."""
    number = next((code for kind, code in _CODES.items() if isinstance(error, kind)), None)
    return next(
        (code for code in grpc.StatusCode if code.value[0] == number), grpc.StatusCode.UNKNOWN
    )


def status_of(error: errors.LienthongError, domain: str) -> grpc.Status:
    """The google.rpc.Status for a domain error: code, message, ErrorInfo, field violations."""
    code = next(
        (code for kind, code in _CODES.items() if isinstance(error, kind)), code_pb2.UNKNOWN
    )
    status = status_pb2.Status(code=code, message=error.message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    )
    if isinstance(error, errors.InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=violation.field, description=violation.description
                )
                for violation in error.violations
            ]
        )
        status.details.add().Pack(bad_request)
    return rpc_status.to_status(status)


Behavior = Callable[[Any, grpc.ServicerContext], Any]


class EdgeInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Admits only trusted peers and turns domain errors into rich gRPC statuses.

    Any other exception becomes INTERNAL with a fixed message: the stack trace goes to the
    log, never on the wire.
    """

    def __init__(self, domain: str, trusted_callers: frozenset[str] | None) -> None:
        """``trusted_callers`` None admits any authenticated peer."""
        self._domain = domain
        self._trusted = trusted_callers

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the handler's behaviour; health and reflection pass through unchanged."""
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith("/grpc."):
            return handler
        kind = _kind(handler)
        behavior = getattr(handler, kind)
        decode = _decoder(handler.request_deserializer, streaming=handler.request_streaming)
        wrapped = (
            self._wrap_streaming(behavior, method, decode)
            if handler.response_streaming
            else self._wrap_unary(behavior, method, decode)
        )
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        # grpcio gets the raw bytes: a request that does not parse would otherwise end
        # INTERNAL ("Exception deserializing request!") before any code of ours runs.
        rebuilt: grpc.RpcMethodHandler[Any, Any] = make(
            wrapped,
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )
        return rebuilt

    def _admit(self, context: grpc.ServicerContext) -> None:
        if self._trusted is not None and peer_identity(context) not in self._trusted:
            raise errors.PermissionDenied("this service accepts calls from the gateway only")

    def _fail(self, context: grpc.ServicerContext, method: str, error: Exception) -> None:
        if isinstance(error, errors.LienthongError):
            context.abort_with_status(status_of(error, self._domain))
        if _database_unreachable(error):
            # Nothing was committed (each write is one transaction), so a retry is safe.
            log.warning("database_unavailable", method=method, error=type(error).__name__)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unavailable; retry")
        if isinstance(error, NotImplementedError):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
        log.error("unhandled_exception", method=method, exc_info=error)
        context.abort(grpc.StatusCode.INTERNAL, "internal error")

    def _wrap_unary(self, behavior: Behavior, method: str, decode: Decode) -> Behavior:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:  # noqa: ANN401
            try:
                self._admit(context)
                return behavior(decode(request), context)
            except Exception as error:
                if _aborted(context):  # the servicer aborted on purpose
                    raise
                self._fail(context, method, error)
                raise  # unreachable: abort raises

        return unary

    def _wrap_streaming(self, behavior: Behavior, method: str, decode: Decode) -> Behavior:
        def streaming(
            request: Any,  # noqa: ANN401 - a message or a message iterator
            context: grpc.ServicerContext,
        ) -> Iterator[Any]:
            try:
                self._admit(context)
                yield from behavior(decode(request), context)
            except Exception as error:
                if _aborted(context):
                    raise
                self._fail(context, method, error)
                raise

        return streaming


Decode = Callable[[Any], Any]


def _decoder(deserializer: Callable[[bytes], Any] | None, *, streaming: bool) -> Decode:
    """What turns the raw request (bytes, or an iterator of bytes) into messages.

    ``deserializer`` is the generated ``Message.FromString``; bytes that do not parse (corrupt
    wire format, invalid UTF-8 in a string field) raise InvalidArgument. A request stream is
    parsed lazily, one message as the servicer reads it.
    """
    if deserializer is None:
        return lambda request: request
    message_type = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = getattr(message_type, "full_name", "request message")

    def parse(raw: bytes) -> Any:  # noqa: ANN401 - the method's request message
        try:
            return deserializer(raw)
        except DecodeError:
            # The payload stays out of the answer: it may be personal data.
            raise errors.InvalidArgument(
                [errors.FieldViolation("", f"not a valid {name}: the bytes do not parse")]
            ) from None

    if not streaming:
        return parse

    def parse_each(raw_messages: Iterable[bytes]) -> Iterator[Any]:
        for raw in raw_messages:
            yield parse(raw)

    return parse_each


def _database_unreachable(error: Exception) -> bool:
    """Whether ``error`` is the database being down, locked or out of connections."""
    if isinstance(error, sql_errors.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error, sql_errors.OperationalError | sql_errors.InterfaceError | sql_errors.TimeoutError
    )


def _aborted(context: grpc.ServicerContext) -> bool:
    """Whether the servicer already set a status (context.abort), which must stand."""
    code: grpc.StatusCode | None = cast("Any", context).code()  # missing from grpc-stubs
    return code is not None


def _kind(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    if handler.request_streaming:
        return "stream_stream" if handler.response_streaming else "stream_unary"
    return "unary_stream" if handler.response_streaming else "unary_unary"


def build_server(
    *,
    listen: str,
    tls: TlsMaterial,
    interceptors: Iterable[grpc.ServerInterceptor[Any, Any]] = (),
    max_workers: int = 16,
) -> tuple[grpc.Server, int]:
    """A server bound to ``listen`` with mutual TLS, not yet started; returns the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=list(interceptors),
    )
    port = server.add_secure_port(listen, server_credentials(tls))
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, port


def add_health_and_reflection(server: grpc.Server, service_names: Iterable[str]) -> None:
    """Serve grpc.health.v1 (each service SERVING) and server reflection."""
    names = list(service_names)
    servicer = health.HealthServicer()
    for name in ["", *names]:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [*names, reflection.SERVICE_NAME, health.SERVICE_NAME], server
    )
