"""Services the gateway implements itself, called in process after admission and auditing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from lienthong.errors import FieldViolation, InvalidArgument

# A local method takes the request and the verified caller identity.
LocalMethod = Callable[[Any, str], Message]


class LocalService:
    """A contract service whose unary methods are implemented by ``implementation``.

    ``implementation`` has one method per RPC, named as in the contract, taking the decoded
    request and the caller's identity and returning the response message.
    """

    def __init__(self, descriptor: ServiceDescriptor, implementation: object) -> None:
        """Bind every method of ``descriptor`` to ``implementation``."""
        self._methods: dict[str, tuple[type[Message], LocalMethod]] = {}
        for method in descriptor.methods:
            if method.client_streaming or method.server_streaming:
                raise ValueError(f"{method.full_name}: only unary methods are served locally")
            request_class = message_factory.GetMessageClass(method.input_type)
            self._methods[f"/{descriptor.full_name}/{method.name}"] = (
                request_class,
                getattr(implementation, method.name),
            )

    def call(self, path: str, request: bytes, caller: str) -> bytes:
        """Decode ``request``, run the method and encode its response."""
        request_class, method = self._methods[path]
        try:
            message = request_class.FromString(request)
        except DecodeError:
            raise InvalidArgument(
                [FieldViolation("", f"not a valid {request_class.DESCRIPTOR.full_name}")]
            ) from None
        return method(message, caller).SerializeToString()
