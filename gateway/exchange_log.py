"""The record of one exchange: its audit entries, its receipt and its log line.

An exchange's request entry is durable before the call is forwarded, and its completion
entry before the answer is released; the completion's leaf index and hash come back to the
caller as a receipt signed by the gateway. Identifiers, sizes and digests only, never
payloads or personal data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import structlog

from gateway.audit.entry import AuditEntry, Kind, timestamp
from gateway.audit.store import AuditLog, AuditUnavailableError
from lienthong import metadata
from lienthong.signed_note import NoteSigner, Receipt, receipt_text

log = structlog.get_logger("gateway.exchange")

RECEIPT_KEY = metadata.RECEIPT


@dataclass(frozen=True)
class Auditor:
    """Where exchanges are recorded and who signs their receipts."""

    log: AuditLog
    signer: NoteSigner


@dataclass
class Exchange:
    """What the gateway knows of one call while it runs."""

    method: str
    caller: str | None
    purpose: str | None
    request_id: str | None
    auditor: Auditor
    on_behalf_of: str | None = None
    upstream: str | None = None
    metadata_too_long: bool = False  # a metadata value over the limit, before bounding
    exchange_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    start_time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    started: float = field(default_factory=time.perf_counter)
    request_bytes: int = 0
    response_bytes: int = 0
    request_leaf: int | None = None
    receipt: bytes | None = None
    _request_digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    _response_digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    _on_finish: list[Callable[[grpc.StatusCode], None]] = field(default_factory=list)
    _finished: bool = False
    # The handler and grpc's termination callback may both finish an exchange: once wins.
    _finish_lock: threading.Lock = field(default_factory=threading.Lock)

    def when_finished(self, callback: Callable[[grpc.StatusCode], None]) -> None:
        """Run ``callback`` with the final status when the exchange finishes."""
        self._on_finish.append(callback)

    def saw_request(self, message: bytes) -> bytes:
        """Count and digest one request message as received."""
        self.request_bytes += len(message)
        self._request_digest.update(message)
        return message

    def saw_response(self, message: bytes) -> bytes:
        """Count and digest one response message as sent."""
        self.response_bytes += len(message)
        self._response_digest.update(message)
        return message

    def requests(self, messages: Iterator[bytes]) -> Iterator[bytes]:
        """Pass a request stream through, counting and digesting it."""
        for message in messages:
            yield self.saw_request(message)

    def elapsed(self) -> float:
        """Seconds since the call arrived."""
        return time.perf_counter() - self.started

    def _entry(self, kind: Kind, **changes: object) -> AuditEntry:
        return AuditEntry(
            kind=kind,
            exchange_id=self.exchange_id,
            caller=self.caller,
            upstream=self.upstream,
            method=self.method,
            purpose=self.purpose,
            on_behalf_of=self.on_behalf_of,
            request_id=self.request_id,
            start_time=timestamp(self.start_time),
            **changes,  # type: ignore[arg-type]
        )

    def record_request(self, *, digest_known: bool) -> None:
        """Make the request entry durable before forwarding; AuditUnavailableError if not.

        With ``digest_known`` (a unary request, already received) the entry carries the
        request's size and digest, so the evidence of what was sent precedes forwarding.
        """
        known = (
            {
                "request_bytes": self.request_bytes,
                "request_sha256": self._request_digest.hexdigest(),
            }
            if digest_known
            else {}
        )
        self.request_leaf = self.auditor.log.append(self._entry("request", **known)).leaf_index

    def finish(self, code: grpc.StatusCode) -> bytes | None:
        """Record the completion, sign its receipt and log the exchange, once.

        Returns the receipt to send in the trailing metadata, or None when the completion
        could not be made durable — then the answer must not be released.
        """
        with self._finish_lock:
            if self._finished:
                return self.receipt
            self._finished = True
            return self._complete(code)

    def _complete(self, code: grpc.StatusCode) -> bytes | None:
        for callback in self._on_finish:
            callback(code)
        completion = self._entry(
            "completion",
            end_time=timestamp(dt.datetime.now(dt.UTC)),
            status_code=code.value[0],
            status=code.name,
            request_bytes=self.request_bytes,
            response_bytes=self.response_bytes,
            request_sha256=self._request_digest.hexdigest(),
            response_sha256=self._response_digest.hexdigest(),
            request_leaf=self.request_leaf,
        )
        leaf_index = None
        try:
            appended = self.auditor.log.append(completion)
        except AuditUnavailableError as error:
            log.error("exchange_not_recorded", exchange_id=self.exchange_id, error=str(error))  # noqa: TRY400
        else:
            leaf_index = appended.leaf_index
            receipt = Receipt(
                self.auditor.log.origin, leaf_index, appended.leaf_hash, self.exchange_id
            )
            self.receipt = self.auditor.signer.sign(receipt_text(receipt)).encode("utf-8")
        log.info(
            "exchange",
            exchange_id=self.exchange_id,
            leaf_index=leaf_index,
            request_leaf=self.request_leaf,
            caller=self.caller,
            upstream=self.upstream,
            method=self.method,
            purpose=self.purpose,
            on_behalf_of=self.on_behalf_of,
            request_id=self.request_id,
            status=code.name,
            duration_ms=round(self.elapsed() * 1000, 3),
            request_bytes=self.request_bytes,
            response_bytes=self.response_bytes,
            request_sha256=completion.request_sha256,
            response_sha256=completion.response_sha256,
        )
        return self.receipt
