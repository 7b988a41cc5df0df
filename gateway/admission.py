"""Admission of a call: who is calling, may they, and may they now.

In order: the caller's certificate must carry an identity, not be revoked and be fit for a
TLS client (UNAUTHENTICATED otherwise); the policy must grant the method for the declared
purpose (PERMISSION_DENIED); the caller must be within its rate and concurrency limits
(RESOURCE_EXHAUSTED). The chain, validity period and CA were checked by the TLS handshake.
"""

from __future__ import annotations

from gateway.exchange_log import Exchange
from gateway.limits import CallerLimits, Rejection
from gateway.policy import Decision, PolicyStore
from gateway.revocation import CrlSet, check_client_certificate
from lienthong import errors

MAX_METADATA_VALUE = 256  # purposes, officers' identities and request ids are short


class Gatekeeper:
    """Decides whether a call may go upstream; raises the refusal as a domain error."""

    def __init__(self, policy: PolicyStore, crls: CrlSet | None, limits: CallerLimits) -> None:
        """Check calls against ``policy``, ``crls`` (None: no CRL configured) and ``limits``."""
        self._policy = policy
        self._crls = crls
        self._limits = limits

    def admit(self, exchange: Exchange, certificate: bytes | None) -> str:
        """Admit the exchange's call and return its caller, or raise why not.

        An admitted call holds a concurrency slot until the exchange finishes.
        """
        caller = exchange.caller
        if certificate is None or caller is None:
            raise errors.Unauthenticated(
                "the client certificate carries no lienthong identity", reason="NO_IDENTITY"
            )
        if self._crls is not None and self._crls.is_revoked(certificate):
            raise errors.Unauthenticated("the client certificate is revoked", reason="REVOKED")
        unfit = check_client_certificate(certificate)
        if unfit is not None:
            raise errors.Unauthenticated(unfit, reason="KEY_USAGE")
        if exchange.metadata_too_long:
            raise errors.PermissionDenied(
                f"metadata values are at most {MAX_METADATA_VALUE} characters",
                reason="METADATA_TOO_LONG",
            )
        decision = self._policy.current().decide(caller, exchange.method, exchange.purpose)
        if decision is not Decision.ALLOWED:
            raise errors.PermissionDenied(_explain(decision, caller, exchange), reason=decision)
        admission = self._limits.admit(caller)
        if isinstance(admission, Rejection):
            limit = "rate" if admission.reason == "RATE_LIMITED" else "concurrency"
            raise errors.ResourceExhausted(
                f"{caller} is over its {limit} limit",
                reason=admission.reason,
                metadata={"retry_after_seconds": f"{min(admission.retry_after, 3600.0):.3f}"},
            )
        exchange.when_finished(lambda _code: admission.release())
        return caller


def _explain(decision: Decision, caller: str, exchange: Exchange) -> str:
    if decision is Decision.MISSING_PURPOSE:
        return "every call must declare its purpose in the lienthong-purpose metadata"
    if decision is Decision.PURPOSE_NOT_GRANTED:
        return f"{caller} is not granted {exchange.method} for purpose {exchange.purpose!r}"
    return f"{caller} is not granted {exchange.method}"
