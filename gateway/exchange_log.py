"""One structured log line per exchange: identifiers, sizes and digests, never payloads."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import structlog

log = structlog.get_logger("gateway.exchange")


@dataclass
class Exchange:
    """What the gateway knows of one call while it runs."""

    method: str
    caller: str | None
    purpose: str | None
    request_id: str | None
    on_behalf_of: str | None = None
    upstream: str | None = None
    exchange_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.perf_counter)
    request_bytes: int = 0
    response_bytes: int = 0
    _request_digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    _response_digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    _on_finish: list[Callable[[grpc.StatusCode], None]] = field(default_factory=list)
    _finished: bool = False

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

    def finish(self, code: grpc.StatusCode) -> None:
        """Write the exchange's log line and run the finish callbacks, once."""
        if self._finished:
            return
        self._finished = True
        for callback in self._on_finish:
            callback(code)
        log.info(
            "exchange",
            exchange_id=self.exchange_id,
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
            request_sha256=self._request_digest.hexdigest(),
            response_sha256=self._response_digest.hexdigest(),
        )
