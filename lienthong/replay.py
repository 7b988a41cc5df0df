"""The 2016 pilot replayed through the real path, and its statistics beside the published ones.

The ministry administrator enrols the pilot's officers (one account per registering unit of
the five localities, and a second one in the busiest units, 1,594 in all as in the pilot);
each officer registers their unit's births with a certificate of their own through the
gateway, the Justice adapter asks the Police adapter for each PIN through the gateway, and
at the end the registry's statistics are printed beside the pilot's published figures.
Registrations are sent concurrently with gRPC futures, ``concurrency`` in flight at a time.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, TextIO, cast

import grpc

from certs.pki import issue_officer_certificate, load_pki
from lienthong import metadata, pilot, retry
from lienthong.civilregistry.v1 import (
    birth_registration_pb2,
    birth_registration_service_pb2,
    birth_registration_service_pb2_grpc,
)
from lienthong.demo import columns, create_officer, locality_name, statistics_of
from lienthong.tls import TlsFiles, secure_channel

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from lienthong.reference import CodeLists, Unit

# The pilot had 1,594 officers in 1,276 units (shared/domain/README.md).
PILOT_OFFICERS = 1_594
LOCALITIES = (*pilot.PROVINCES, *pilot.DISTRICTS)
_PENDING_WAIT = 120.0  # seconds to wait for the last PINs before reporting


@dataclass
class ReplayOutcome:
    """What a replay came to."""

    sent: int = 0
    seconds: float = 0.0
    codes: Counter[str] = field(default_factory=Counter)
    pin_status: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    # (status code name, receipt) of every answer that carried the gateway's receipt.
    receipts: list[tuple[str, bytes]] = field(default_factory=list)


def enrol_officers(
    channel: grpc.Channel, units: tuple[Unit, ...], *, total: int = PILOT_OFFICERS
) -> dict[str, str]:
    """Accounts for ``total`` officers: one per unit, a second in the first units.

    Returns the officer id that registers for each unit, by unit code. Creating them again
    is harmless.
    """
    registrars: dict[str, str] = {}
    for index in range(max(total, len(units))):
        unit = units[index % len(units)]
        officer_id = f"pilot-{unit.code}-{index // len(units) + 1}"
        retry.with_retries(partial(create_officer, channel, officer_id, unit))
        registrars.setdefault(unit.code, officer_id)
    return registrars


def replay(  # noqa: PLR0913 - where to send, as whom, and how much
    gateway: str,
    administrator: TlsFiles,
    pki_directory: Path,
    codes: CodeLists,
    *,
    count: int,
    concurrency: int = 64,
    seed: int = 2016,
    officers: int = PILOT_OFFICERS,
    out: TextIO = sys.stderr,
    keep_receipts: bool = False,
    before_send: Callable[[int], None] | None = None,
) -> ReplayOutcome:
    """Register ``count`` pilot births through ``gateway``, each by its unit's officer.

    ``officers`` accounts are enrolled first, at least one per unit; with 0, only the units
    the replay reaches get one, when first reached (for short replays). A call that fails
    for a passing reason (UNAVAILABLE while a service restarts, ...) is sent again with its
    request ID until it is answered for good. ``keep_receipts`` keeps the gateway's receipt
    of every answer, with its status. ``before_send`` is called with each registration's
    index (0, 1, ...) before it is sent, and may hold it back (the crash soak kills a service
    at set points of the replay, whatever the machine's speed).
    """
    units = pilot.pilot_units(codes)
    admin = secure_channel(gateway, administrator.read())
    registrars: dict[str, str] = {}
    by_code = {unit.code: unit for unit in units.all()}
    pki = load_pki(pki_directory)
    channels: dict[str, grpc.Channel] = {}
    outcome = ReplayOutcome()
    slots = threading.BoundedSemaphore(concurrency)
    try:
        if officers:
            out.write(f"Enrolling {max(officers, len(units.all()))} officers...\n")
            registrars = enrol_officers(admin, units.all(), total=officers)
        progress = _Progress(count, out)
        answers = _Answers(outcome, slots, progress, keep_receipts=keep_receipts)
        started = time.monotonic()
        for index, request in enumerate(pilot.pilot_registrations(codes, count, seed=seed)):
            if before_send is not None:
                before_send(index)
            unit_code = request.birth_registration.registration_unit.code
            if unit_code not in registrars:
                officer = partial(create_officer, admin, f"pilot-{unit_code}-1", by_code[unit_code])
                registrars[unit_code] = retry.with_retries(officer)
            if unit_code not in channels:
                paths = issue_officer_certificate(pki, registrars[unit_code])
                tls = TlsFiles(administrator.ca_certificate, paths.certificate, paths.private_key)
                channels[unit_code] = secure_channel(gateway, tls.read())
            stub = birth_registration_service_pb2_grpc.BirthRegistrationServiceStub(
                channels[unit_code]
            )
            slots.acquire()
            _Registration(stub, request, answers).send()
            outcome.sent += 1
        for _ in range(concurrency):  # every call answered
            slots.acquire()
        outcome.seconds = time.monotonic() - started
        progress.finish()
    finally:
        for channel in [admin, *channels.values()]:
            channel.close()
    return outcome


class _Answers:
    """Where the replay's answers go: counted, shown, and their slot freed."""

    def __init__(
        self,
        outcome: ReplayOutcome,
        slots: threading.BoundedSemaphore,
        progress: _Progress,
        *,
        keep_receipts: bool,
    ) -> None:
        self.outcome, self._slots, self._progress = outcome, slots, progress
        self._keep_receipts = keep_receipts
        self._lock = threading.Lock()

    def answered(self, done: grpc.Future) -> None:  # type: ignore[type-arg]
        """Count the final answer of one registration."""
        try:
            exception = done.exception()
            with self._lock:
                outcome = self.outcome
                if exception is None:
                    outcome.codes["OK"] += 1
                    status = done.result().birth_registration.pin_status
                    outcome.pin_status[birth_registration_pb2.PinStatus.Name(status)] += 1
                else:
                    code = exception.code() if isinstance(exception, grpc.Call) else None
                    outcome.codes[code.name if code else type(exception).__name__] += 1
                self._progress.advance()
        finally:
            self._slots.release()

    def received(self, done: grpc.Future) -> None:  # type: ignore[type-arg]
        """Keep the receipt of any answer, final or not, with the status the client saw."""
        if not self._keep_receipts:
            return
        call = cast("grpc.Call", done)
        receipts = [
            (call.code().name, value)
            for key, value in call.trailing_metadata() or ()
            if key == metadata.RECEIPT and isinstance(value, bytes)
        ]
        with self._lock:
            self.outcome.receipts.extend(receipts)

    def retried(self) -> None:
        """Count one call sent again."""
        with self._lock:
            self.outcome.retries += 1


class _Registration:
    """One RegisterBirth call, sent again after each retryable failure within its patience."""

    def __init__(
        self,
        stub: birth_registration_service_pb2_grpc.BirthRegistrationServiceStub,
        request: birth_registration_service_pb2.RegisterBirthRequest,
        answers: _Answers,
    ) -> None:
        self._stub, self._request, self._answers = stub, request, answers
        self._attempt = 0
        self._deadline = time.monotonic() + retry.DEFAULT_PATIENCE

    def send(self) -> None:
        """Send the call; its answer comes back on a gRPC thread."""
        future = self._stub.RegisterBirth.future(
            self._request,
            timeout=60,
            metadata=(
                (metadata.REQUEST_ID, self._request.request_id),
                (metadata.PURPOSE, "birth-registration"),
            ),
        )
        future.add_done_callback(self._done)

    def _done(self, done: grpc.Future) -> None:  # type: ignore[type-arg]
        self._answers.received(done)
        error = done.exception()
        if error is not None and retry.retryable(error):
            self._attempt += 1
            wait = retry.delay(self._attempt)
            if time.monotonic() + wait < self._deadline:
                self._answers.retried()
                timer = threading.Timer(wait, self.send)
                timer.daemon = True
                timer.start()
                return
        self._answers.answered(done)


def wait_for_pins(channel: grpc.Channel, *, timeout: float = _PENDING_WAIT) -> int:
    """Wait until no registration of today is PIN_STATUS_PENDING; the number left.

    A service restarting meanwhile (the gateway or the registry) is waited for, as every
    call of the replay waits for it, within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        pending = retry.with_retries(
            partial(statistics_of, channel, list(LOCALITIES)),
            patience=max(0.0, deadline - time.monotonic()),
        ).total.pins_pending
        if pending == 0 or time.monotonic() > deadline:
            return pending
        time.sleep(1.0)


def comparison_table(
    before: birth_registration_service_pb2.GetRegistrationStatisticsResponse,
    after: birth_registration_service_pb2.GetRegistrationStatisticsResponse,
    codes: CodeLists,
) -> str:
    """What the replay added, per locality, beside the pilot's figures of 27 April 2016."""
    earlier = {row.unit_code: row for row in before.rows}
    rows: list[tuple[str, ...]] = [
        (
            "locality",
            "registrations",
            "given a PIN",
            "not given one",
            "pending",
            "accounts",
            "units",
        )
    ]
    for row in [*after.rows, after.total]:
        old = earlier.get(row.unit_code, before.total if not row.unit_code else None)
        name = locality_name(codes, row.unit_code) if row.unit_code else "total (replayed)"
        rows.append((
            name,
            _delta(row.registrations, old.registrations if old else 0),
            _delta(row.pins_issued, old.pins_issued if old else 0),
            _delta(
                row.not_applicable_foreign + row.not_applicable_re_registration,
                (old.not_applicable_foreign + old.not_applicable_re_registration) if old else 0,
            ),
            _delta(row.pins_pending, old.pins_pending if old else 0),
            str(row.officer_accounts),
            str(row.units),
        ))  # fmt: skip
    published = pilot.PUBLISHED[-1]
    rows.append((
        f"pilot, published {published.as_of}", f"{published.registrations}",
        f"{published.pins_issued}", f"{published.not_issued}", "", "1594", "1276",
    ))  # fmt: skip
    return columns(rows)


def _delta(now: int, then: int) -> str:
    return str(now - then)


class _Progress:
    """A one-line progress bar on a terminal, a line every 10% elsewhere."""

    def __init__(self, total: int, out: TextIO) -> None:
        self._total, self._out, self._done = total, out, 0
        self._started = time.monotonic()
        self._tty = out.isatty()
        self._shown = -1

    def advance(self) -> None:
        self._done += 1
        step = self._done * (50 if self._tty else 10) // max(self._total, 1)
        if step != self._shown:
            self._shown = step
            self._show()

    def finish(self) -> None:
        self._show()
        self._out.write("\n")
        self._out.flush()

    def _show(self) -> None:
        elapsed = time.monotonic() - self._started
        rate = self._done / elapsed if elapsed else 0.0
        share = self._done / max(self._total, 1)
        bar = "#" * int(share * 40)
        text = f"[{bar:<40}] {self._done}/{self._total} {rate:,.0f}/s {elapsed:,.1f}s"
        self._out.write(("\r" if self._tty else "") + text + ("" if self._tty else "\n"))
        self._out.flush()
