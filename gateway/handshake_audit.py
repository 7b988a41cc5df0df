"""Audit of TLS handshakes refused by grpc, which Python never sees.

grpcio verifies certificates in its core: a handshake it refuses (self-signed, unknown CA,
expired, not yet valid, wrong key usage, no certificate...) never reaches the gateway's
Python code. The only trace is the line grpc's core writes to the process's stderr
(file descriptor 2), at its default verbosity, for example::

    I1125 18:48:46.079630    8351 ssl_transport_security.cc:2563] Handshake failed with
    error SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_
    FAILED: certificate has expired

(one line). ``HandshakeAudit`` therefore puts a pipe in place of descriptor 2 in the gateway
process. It passes every byte read on, unchanged, to the original stderr, and for each such
line records a refusal in the audit log — a completion entry with method
``tls-handshake``, no caller, status UNAUTHENTICATED and the refusal's reason category in
``purpose`` (docs/audit.md) — and counts it in
``lienthong_gateway_tls_handshake_failures_total{reason}``.

The line does not say which leg failed: a caller's handshake with the gateway, or the
gateway's own client handshake with an upstream. Both are recorded alike.

Nothing here may stall the gateway, whose threads (grpc's included) write to descriptor 2:
the reader only reads, parses and hands over to bounded queues. A forwarder thread writes to
the original stderr, and drops what does not fit while that is blocked (saying how much once
it flows again); recorder threads append to the audit log, and a refusal that does not fit,
or that the log cannot record, is counted in
``lienthong_gateway_tls_handshake_failures_unrecorded_total``. A line that cannot be parsed
is passed on and otherwise ignored. What is written in the instant before the process dies
(a fatal error) may be lost with the pipe.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import re
import sys
import threading
import time
import uuid
from typing import Final

import grpc
import structlog

from gateway.audit.entry import AuditEntry, timestamp
from gateway.audit.store import AuditLog
from gateway.metrics import GatewayMetrics

log = structlog.get_logger(__name__)

# The method of a refused handshake's entry: never a gRPC path, which starts with "/".
HANDSHAKE_METHOD: Final = "tls-handshake"
STDERR: Final = 2
MAX_LINE: Final = 64 * 1024  # a longer "line" is passed on but not parsed
MAX_PENDING_REFUSALS: Final = 10_000
MAX_PENDING_OUTPUT: Final = 4 * 1024 * 1024  # bytes held while the original stderr is blocked
RECORDERS: Final = 4  # concurrent appends, so that the log group-commits a burst
_READ_SIZE: Final = 64 * 1024

# grpc's (absl's) log line, from its first character: severity and date, time, thread,
# file:line] message. Anchored, so that text quoted inside another line never counts.
_HANDSHAKE_FAILED: Final = re.compile(
    r"[IWEF]\d{4} \d{2}:\d{2}:\d{2}\.\d+ +\d+ [^\s\]]+:\d+\] Handshake failed with error (.*)"
)

# Reason categories: a short, fixed vocabulary (metric label values and entries' purpose).
# The first pattern found in the error text decides. An alert means the other side refused
# this side's certificate or parameters; it is tested first, so that e.g.
# SSLV3_ALERT_CERTIFICATE_EXPIRED is not taken for this side finding a certificate expired.
PEER_REFUSED: Final = "PEER_REFUSED"
OTHER: Final = "OTHER"
_CATEGORIES: Final = (
    ("_ALERT_", PEER_REFUSED),
    ("certificate has expired", "EXPIRED"),
    ("certificate is not yet valid", "NOT_YET_VALID"),
    ("certificate revoked", "REVOKED"),
    ("unsupported certificate purpose", "WRONG_PURPOSE"),
    ("KEY_USAGE_BIT_INCORRECT", "KEY_USAGE"),
    ("self signed certificate", "UNTRUSTED_ISSUER"),
    ("self-signed certificate", "UNTRUSTED_ISSUER"),
    ("unable to get local issuer certificate", "UNTRUSTED_ISSUER"),
    ("unable to get issuer certificate", "UNTRUSTED_ISSUER"),
    ("unable to verify the first certificate", "UNTRUSTED_ISSUER"),
    ("certificate signature failure", "BAD_SIGNATURE"),
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "NO_CERTIFICATE"),
    ("CERTIFICATE_VERIFY_FAILED", "UNVERIFIED"),
)
REASONS: Final = frozenset({category for _, category in _CATEGORIES} | {OTHER})
# With these, grpc's core does not write the lines this module reads.
_SILENT_VERBOSITIES: Final = frozenset({"ERROR", "NONE"})


def refusal_reason(line: str) -> str | None:
    """The reason category of a refused handshake, if ``line`` is grpc's line for one."""
    match = _HANDSHAKE_FAILED.match(line)
    if match is None:
        return None
    error = match.group(1)
    for pattern, category in _CATEGORIES:
        if pattern in error:
            return category
    return OTHER


def refusal_entry(reason: str, moment: dt.datetime) -> AuditEntry:
    """The audit entry of one refused handshake, seen at ``moment``."""
    seen = timestamp(moment)
    code = grpc.StatusCode.UNAUTHENTICATED
    return AuditEntry(
        kind="completion",
        exchange_id=str(uuid.uuid4()),
        caller=None,
        upstream=None,
        method=HANDSHAKE_METHOD,
        purpose=reason,
        on_behalf_of=None,
        request_id=None,
        start_time=seen,
        end_time=seen,
        status_code=code.value[0],
        status=code.name,
    )


class HandshakeAudit:
    """Reads the process's stderr through a pipe and audits every refused TLS handshake.

    ``start`` puts the pipe in place of descriptor ``fd``; ``stop`` puts the original back,
    passes on and records what was still in the pipe, and returns. Once started, use it
    from one thread: start and stop are not meant to race each other.
    """

    def __init__(
        self,
        audit: AuditLog,
        metrics: GatewayMetrics,
        *,
        fd: int = STDERR,
        max_pending: int = MAX_PENDING_REFUSALS,
        max_output: int = MAX_PENDING_OUTPUT,
    ) -> None:
        """Record into ``audit``, count into ``metrics``; read descriptor ``fd`` once started."""
        self._audit = audit
        self._metrics = metrics
        self._fd = fd
        self._refusals: queue.Queue[AuditEntry | None] = queue.Queue(max_pending)
        self._output: queue.Queue[bytes | None] = queue.Queue()
        self._output_lock = threading.Lock()
        self._output_held = 0
        self._max_output = max_output
        self._dropped_output = 0
        self._original: int | None = None
        self._read_end: int | None = None
        self._restore_lock = threading.Lock()
        self._restored = True
        self._threads: list[threading.Thread] = []

    # Life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Put the pipe in place of the descriptor and start reading; OSError if impossible."""
        if self._threads:
            raise RuntimeError("the handshake audit is already started")
        verbosity = os.environ.get("GRPC_VERBOSITY", "").strip().upper()
        if verbosity in _SILENT_VERBOSITIES:
            log.warning(
                "tls_handshake_audit_blind",
                grpc_verbosity=verbosity,
                detail="grpc does not log refused handshakes at this verbosity",
            )
        _flush_python_streams()
        try:
            self._original = os.dup(self._fd)
        except OSError:
            self._original = None  # no stderr to pass lines on to: they are still audited
        read_end, write_end = os.pipe()
        try:
            os.dup2(write_end, self._fd)
        except OSError:
            os.close(read_end)
            if self._original is not None:
                os.close(self._original)
                self._original = None
            raise
        finally:
            os.close(write_end)
        self._read_end = read_end
        self._restored = False
        self._threads = [
            threading.Thread(target=self._read_loop, name="handshake-audit-reader", daemon=True),
            threading.Thread(target=self._forward_loop, name="handshake-audit-stderr", daemon=True),
            *(
                threading.Thread(
                    target=self._record_loop, name=f"handshake-audit-recorder-{n}", daemon=True
                )
                for n in range(RECORDERS)
            ),
        ]
        for thread in self._threads:
            thread.start()
        log.info("tls_handshake_audit_started", fd=self._fd)

    def stop(self, timeout: float = 5.0) -> None:
        """Put the original descriptor back, then finish passing on and recording; idempotent.

        Refusals still queued are recorded before this returns (within ``timeout`` seconds
        in all), so stop before closing the audit log.
        """
        if not self._threads:
            return
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        _flush_python_streams()
        # The pipe's only write end is the descriptor: replacing it makes the reader see the
        # end of the pipe once it has read everything written before.
        self._restore()
        reader, forwarder, *recorders = self._threads
        reader.join(left())
        self._output.put(None)
        forwarder.join(left())
        for _ in recorders:
            self._put_refusal(None, block=True, timeout=left())
        for recorder in recorders:
            recorder.join(left())
        if self._original is not None and not forwarder.is_alive() and not reader.is_alive():
            os.close(self._original)
            self._original = None
        self._threads = []

    def _restore(self) -> None:
        with self._restore_lock:
            if self._restored:
                return
            self._restored = True
            if self._original is not None:
                with contextlib.suppress(OSError):
                    os.dup2(self._original, self._fd)
                    return
            # No original to put back: a descriptor on /dev/null still ends the pipe.
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, self._fd)
                os.close(null)

    # Reading ------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        read_end = self._read_end
        if read_end is None:
            return
        partial = b""
        try:
            while True:
                try:
                    chunk = os.read(read_end, _READ_SIZE)
                except OSError:
                    break
                if not chunk:
                    break
                try:
                    self._pass_on(chunk)
                    lines = (partial + chunk).split(b"\n")
                    partial = lines.pop()
                    if len(partial) > MAX_LINE:
                        partial = b""  # passed on already; too long to be grpc's line
                    for line in lines:
                        self._inspect(line)
                except Exception:  # noqa: BLE001 - whatever happens, the pipe is read on
                    partial = b""
            if partial:
                self._inspect(partial)
        finally:
            # Stopped, or reading failed: either way nobody reads the pipe any more, so the
            # descriptor gets its original back rather than a pipe that would fill and block.
            self._restore()
            with contextlib.suppress(OSError):
                os.close(read_end)

    def _inspect(self, line: bytes) -> None:
        try:
            reason = refusal_reason(line.decode("utf-8", errors="replace"))
            if reason is None:
                return
            self._metrics.handshake_failed(reason)
            entry = refusal_entry(reason, dt.datetime.now(dt.UTC))
            if not self._put_refusal(entry, block=False):
                self._metrics.handshake_not_recorded()
        except Exception:  # noqa: BLE001 - a bad line must never end the reading
            return

    def _put_refusal(
        self, entry: AuditEntry | None, *, block: bool, timeout: float | None = None
    ) -> bool:
        try:
            self._refusals.put(entry, block=block, timeout=timeout)
        except queue.Full:
            return False
        return True

    # Passing on ---------------------------------------------------------------------------

    def _pass_on(self, chunk: bytes) -> None:
        if self._original is None:
            return
        with self._output_lock:
            if self._output_held + len(chunk) > self._max_output:
                self._dropped_output += len(chunk)
                return
            self._output_held += len(chunk)
        self._output.put(chunk)

    def _forward_loop(self) -> None:
        while True:
            chunk = self._output.get()
            if chunk is None:
                return
            with self._output_lock:
                self._output_held -= len(chunk)
                dropped, self._dropped_output = self._dropped_output, 0
            original = self._original
            if original is None:
                continue
            if dropped:
                _write_all(original, f"[lienthong: {dropped} bytes of stderr dropped]\n".encode())
            _write_all(original, chunk)

    # Recording ----------------------------------------------------------------------------

    def _record_loop(self) -> None:
        while True:
            entry = self._refusals.get()
            if entry is None:
                return
            try:
                appended = self._audit.append(entry)
            except Exception as error:  # noqa: BLE001 - the next refusal may be recorded again
                self._metrics.handshake_not_recorded()
                log.error(  # noqa: TRY400 - the message says what failed
                    "tls_handshake_refusal_not_recorded",
                    exchange_id=entry.exchange_id,
                    reason=entry.purpose,
                    error=str(error),
                )
                continue
            log.info(
                "tls_handshake_refused",
                exchange_id=entry.exchange_id,
                leaf_index=appended.leaf_index,
                reason=entry.purpose,
            )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            return  # the original stderr is gone: keep auditing regardless
        view = view[written:]


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
