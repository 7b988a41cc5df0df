"""The domain errors of every lienthong service, one tree for all of them.

::

    LienthongError
     ├── InvalidArgument        field violations       -> INVALID_ARGUMENT
     ├── NotFound                                      -> NOT_FOUND
     ├── AlreadyExists                                 -> ALREADY_EXISTS
     ├── FailedPrecondition                            -> FAILED_PRECONDITION
     ├── Unauthenticated                               -> UNAUTHENTICATED
     ├── PermissionDenied                              -> PERMISSION_DENIED
     ├── OutOfRange                                    -> OUT_OF_RANGE
     ├── ResourceExhausted                             -> RESOURCE_EXHAUSTED
     └── Unavailable                                   -> UNAVAILABLE

Domain code raises these; only the gRPC edge (lienthong.grpc_server) turns them into status
codes, so the mapping lives in one table there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: its path in the request and what is wrong with it."""

    field: str
    description: str


class LienthongError(Exception):
    """Base of every domain error; ``reason`` is the UPPER_SNAKE ErrorInfo reason."""

    reason = "ERROR"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        """Keep the developer-facing message, optionally a more precise reason and details."""
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}
        if reason is not None:
            self.reason = reason


class InvalidArgument(LienthongError):
    """The request is malformed; ``violations`` says which fields and why."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        """Keep the violations; the message summarises them."""
        fields = ", ".join(violation.field for violation in violations)
        super().__init__(f"invalid request: {fields}")
        self.violations = violations


class NotFound(LienthongError):
    """The named resource does not exist."""

    reason = "NOT_FOUND"


class AlreadyExists(LienthongError):
    """The request conflicts with an existing resource or an earlier request_id."""

    reason = "ALREADY_EXISTS"


class FailedPrecondition(LienthongError):
    """The request is valid but the system is not in a state to perform it."""

    reason = "FAILED_PRECONDITION"


class Unauthenticated(LienthongError):
    """The caller's credentials are not acceptable (revoked, or unfit for a client)."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(LienthongError):
    """The caller may not do this."""

    reason = "PERMISSION_DENIED"


class OutOfRange(LienthongError):
    """The request asks beyond what exists yet (such as a tree size not yet signed)."""

    reason = "OUT_OF_RANGE"


class ResourceExhausted(LienthongError):
    """A quota or a finite pool (such as a PIN prefix) is used up."""

    reason = "RESOURCE_EXHAUSTED"


class Unavailable(LienthongError):
    """A dependency is down; the call may succeed if retried later."""

    reason = "UNAVAILABLE"
