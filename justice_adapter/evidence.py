"""The registry's side of the evidence: which exchange created or changed a registration.

The gateway tells an upstream, on its mTLS leg, the exchange's ID and the leaf index of its
request entry in the audit log (lienthong.metadata); each registration event keeps both,
with the digest of the record it left, so that a reconciliation can cite the exchanges
behind a record and tell a record changed outside them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from justice_adapter.models import RegistrationEventRow
from lienthong import metadata

if TYPE_CHECKING:
    import grpc
    from sqlalchemy.orm import Session


class Event(StrEnum):
    """What an exchange did to a registration."""

    REGISTERED = "REGISTERED"
    AMENDED = "AMENDED"
    CORRECTED = "CORRECTED"
    REPAIRED = "REPAIRED"


@dataclass(frozen=True)
class ExchangeRef:
    """The gateway exchange a call belongs to; empty when the call did not come through one."""

    exchange_id: str | None = None
    leaf_index: int | None = None

    @classmethod
    def of(cls, context: grpc.ServicerContext) -> ExchangeRef:
        """Read the gateway's metadata; the adapter admits only the gateway, so it holds."""
        invocation = context.invocation_metadata()
        return cls(
            exchange_id=metadata.first(invocation, metadata.EXCHANGE_ID),
            leaf_index=metadata.exchange_leaf(invocation),
        )


NO_EXCHANGE = ExchangeRef()


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of a stored record (the ``record`` column) in canonical JSON."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_event(  # noqa: PLR0913 - one row's facts, keyword-only
    session: Session,
    *,
    registration_id: int,
    event: Event,
    exchange: ExchangeRef,
    record: dict[str, Any],
    request_id: str | None = None,
    previous_pin: str | None = None,
) -> None:
    """Add one event row in the caller's transaction."""
    session.add(
        RegistrationEventRow(
            registration_id=registration_id,
            event=event.value,
            exchange_id=exchange.exchange_id,
            leaf_index=exchange.leaf_index,
            request_id=request_id,
            record_digest=record_digest(record),
            previous_pin=previous_pin,
            create_time=dt.datetime.now(dt.UTC),
        )
    )
