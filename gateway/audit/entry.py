"""The audit log's entries: what is recorded of an exchange, and its canonical bytes.

An entry is UTF-8 JSON with sorted keys and no spaces (the bytes that are hashed into the
Merkle tree). It holds identifiers, sizes, status and SHA-256 digests, never a payload or
personal data. Each exchange has up to two entries:

- ``request``: written, and durable, before the call is forwarded upstream;
- ``completion``: written, and durable, before the answer is released to the caller; it
  repeats the request's fields, so that it alone describes the exchange, and names the
  request entry's leaf index. A refused call has only a completion (``request_leaf`` null).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Final, Literal

FORMAT_VERSION = 1
Kind = Literal["request", "completion"]

TEXT_LIMITS: Final = {"method": 512, "purpose": 256, "on_behalf_of": 256, "request_id": 256}
"""The most characters an entry keeps of each text the caller chooses (the method path and
the metadata values): what the audit_entry columns hold. PostgreSQL refuses an over-long
value, and with it every entry of the same group commit, so longer text is bounded first."""


def bounded(text: str | None, limit: int) -> str | None:
    """``text`` if it has at most ``limit`` characters, else ``limit`` characters standing for it.

    Those are its start, then its length and SHA-256:
    ``"<start>…[5000 characters, sha256 <hex>]"``. The start keeps it searchable and the
    digest ties the entry to the whole text sent.
    """
    if text is None or len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    tail = f"…[{len(text)} characters, sha256 {digest}]"
    return text[: max(limit - len(tail), 0)] + tail


def timestamp(moment: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds, as entries record times."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class AuditEntry:
    """One leaf of the audit log."""

    kind: Kind
    exchange_id: str
    caller: str | None
    upstream: str | None
    method: str
    purpose: str | None
    on_behalf_of: str | None
    request_id: str | None
    start_time: str
    end_time: str | None = None
    status_code: int | None = None
    status: str | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    request_sha256: str | None = None
    response_sha256: str | None = None
    request_leaf: int | None = None
    version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        """The canonical bytes of the entry, which its leaf hash covers."""
        return json.dumps(
            asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> AuditEntry:
        """Parse entry bytes; ValueError when they are not an entry of this format."""
        try:
            value: Any = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"not an audit entry: {error}") from None
        names = {field.name for field in fields(cls)}
        if not isinstance(value, dict) or set(value) != names:
            raise ValueError("not an audit entry: unexpected fields")
        entry = cls(**value)
        if entry.encode() != data:
            raise ValueError("audit entry bytes are not canonical")
        return entry
