"""The history of citizen records: every change, from issuance to restoration.

Each change names the fields it touched and the SHA-256 digests of the record before and
after — the values themselves stay in the record only — with the request, the gateway
exchange and its audit log leaf, the calling system and the officer on whose behalf it was
made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import grpc
from sqlalchemy.orm import Session

from lienthong import metadata
from police_adapter.models import CitizenChange


class ChangeKind(StrEnum):
    """What a change did to a record."""

    ISSUED = "ISSUED"
    UPDATED = "UPDATED"
    CANCELLED = "CANCELLED"
    REESTABLISHED = "REESTABLISHED"
    # A re-send found the record its history says exists deleted or cancelled unexplained.
    RESTORED = "RESTORED"


@dataclass(frozen=True)
class Provenance:
    """Who asked for a change, as the gateway vouches for it on its mTLS leg."""

    exchange_id: str | None = None
    caller: str | None = None
    on_behalf_of: str | None = None
    exchange_leaf: int | None = None

    @classmethod
    def of(cls, context: grpc.ServicerContext) -> Provenance:
        """Read the gateway's metadata; the adapter admits only the gateway, so it holds."""
        invocation = context.invocation_metadata()
        return cls(
            exchange_id=metadata.first(invocation, metadata.EXCHANGE_ID),
            caller=metadata.first(invocation, metadata.CALLER),
            on_behalf_of=metadata.first(invocation, metadata.ON_BEHALF_OF),
            exchange_leaf=metadata.exchange_leaf(invocation),
        )


def digest(data: dict[str, Any] | None) -> str | None:
    """SHA-256 of a record's data in canonical JSON."""
    if data is None:
        return None
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_change(  # noqa: PLR0913 - one row's facts, keyword-only
    session: Session,
    *,
    kind: ChangeKind,
    pin: str,
    request_id: str,
    provenance: Provenance,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    fields: list[str] | None = None,
    related_pin: str | None = None,
    request_sha256: str | None = None,
    reason: str | None = None,
) -> None:
    """Add one history row in the caller's transaction."""
    session.add(
        CitizenChange(
            pin=pin,
            kind=kind.value,
            fields=fields or [],
            before_sha256=digest(before),
            after_sha256=digest(after),
            related_pin=related_pin,
            request_id=request_id,
            request_sha256=request_sha256,
            exchange_id=provenance.exchange_id,
            exchange_leaf=provenance.exchange_leaf,
            caller=provenance.caller,
            on_behalf_of=provenance.on_behalf_of,
            reason=reason,
        )
    )
