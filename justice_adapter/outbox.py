"""The transactional outbox of PIN requests: pending registrations delivered until issued.

A registration due a PIN is committed with ``PIN_STATUS_PENDING`` in the transaction that
stores it (justice_adapter.registry): the row itself is the outbox entry, so no PIN request is
lost unless its registration is. Its ``pin_next_attempt_at`` is one lease ahead
(``claim_on_entry``): the registering call holds it for its immediate attempt
(``deliver_new``), and the worker takes it only if that call's process dies. ``PinOutbox``
sends the request of each due row through a ``PinIssuer`` and records the outcome;
``OutboxWorker`` runs it, and the change outbox (justice_adapter.change_delivery), in the
background for as long as the adapter serves. Both paths record through the same step, so
there is one place that stores a PIN.

No database transaction stays open across a call to the population database::

    claim    lock due rows (FOR UPDATE SKIP LOCKED), move their next attempt one lease ahead,
             commit
    call     the issuer, with the registration's own RegisterBirth request_id
    record   a PIN that fits the registration is stored (ISSUED); otherwise the next attempt
             is scheduled with exponential backoff and jitter, or after ``max_delay`` for a
             definitive refusal, which asking again soon would not change

A process that dies between claim and record leaves the row due again when its lease ends.
The retry carries the same request_id, and the population database, idempotent by request_id
and by registration, answers with the PIN it may already have issued. Several adapter
processes may deliver from one PostgreSQL database: SKIP LOCKED and the lease keep each off
the rows another holds. (SQLite has no row locks; lienthong.db serialises its writers with
BEGIN IMMEDIATE, and SQLAlchemy leaves FOR UPDATE out there.)

Logs carry registration names and gRPC code names, never personal data (Decree 13/2023).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import grpc
import structlog
from sqlalchemy import select, update

from justice_adapter.models import BirthRegistrationRow, to_message
from justice_adapter.pin_requests import PinIssuer, PinRejected, pin_fits
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.errors import Unavailable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from lienthong.reference import CodeLists

log = structlog.get_logger(__name__)

Clock = Callable[[], dt.datetime]

DEFAULT_BATCH = 50
# Twice the longest call (DEFAULT_CALL_TIMEOUT), so that a live claim does not expire
# mid-call; no longer, because it is how long a process that dies delays the PINs it held.
DEFAULT_LEASE = 10.0
DEFAULT_CALL_TIMEOUT = 5.0
# Less lease left than this is not worth a call: the claim is left to expire.
MIN_CALL_SECONDS = 0.5
# Recorded in pin_last_error when the population database returned a PIN that breaks
# Decree 137/2015 Art. 13; no gRPC code says that. It is treated as a definitive refusal.
PIN_DOES_NOT_FIT = "PIN_DOES_NOT_FIT"
# 2**64 times any sensible base delay is far past any cap, and still a float.
_MAX_EXPONENT = 64


def backoff_delay(attempts: int, base_delay: float, max_delay: float) -> float:
    """Seconds to wait: ``base_delay * 2**attempts`` at most ``max_delay``, jittered.

    The jitter takes off up to half, so that what failed together is not retried together.
    """
    ceiling = min(max_delay, base_delay * 2 ** min(attempts, _MAX_EXPONENT))
    # Jitter spreads retries out; it guards no secret, so a plain PRNG will do.
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311


def utc_now() -> dt.datetime:
    """The current time, timezone-aware in UTC: the outbox's default clock."""
    return dt.datetime.now(dt.UTC)


class _Leased(Protocol):
    """A claim: held by this process until its lease ends."""

    @property
    def lease_end(self) -> dt.datetime:
        """When other processes may claim the entry again."""
        ...


SenderT = TypeVar("SenderT")
ClaimT = TypeVar("ClaimT", bound=_Leased)


@dataclass(frozen=True)
class _Claim:
    """A due registration this process holds until ``lease_end``."""

    registration: br.BirthRegistration
    request_id: str
    lease_end: dt.datetime


@dataclass(frozen=True)
class _Outcome:
    """What one PIN request came to: a PIN that fits, or the code it failed with."""

    pin: str | None = None
    code: str | None = None
    definitive: bool = False


class LeasedOutbox(Generic[SenderT, ClaimT]):
    """What both outboxes share: a sender, a clock, leases and backoff, one delivery loop.

    A subclass claims due entries (``_claim``), gives back those it did not send
    (``_release``), and sends and records one (``_deliver``, True when delivered).
    """

    def __init__(  # noqa: PLR0913 - the collaborators, then the tuning, all keyword-only
        self,
        sessions: sessionmaker[Session],
        sender: SenderT,
        codes: CodeLists,
        *,
        clock: Clock = utc_now,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        lease: float = DEFAULT_LEASE,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        """Send through ``sender``, check PINs with ``codes``; delays are in seconds.

        After a transient failure the next attempt waits ``base_delay * 2**attempts`` (the
        attempts made before), at most ``max_delay``, jittered down by up to half so that
        entries failed together are not retried together. ``lease`` is how long a claim
        keeps other processes off a row; a call may take ``call_timeout``, never more than
        the lease left.
        """
        if not 0 < base_delay <= max_delay:
            raise ValueError("delays must satisfy 0 < base_delay <= max_delay")
        if not MIN_CALL_SECONDS <= call_timeout <= lease:
            raise ValueError("a call must fit in the lease")
        self._sessions = sessions
        self._sender = sender
        self._codes = codes
        self._clock = clock
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._lease = dt.timedelta(seconds=lease)
        self._call_timeout = call_timeout

    def claim_on_entry(self) -> dt.datetime:
        """The lease end to commit a new entry with: held by the committing process.

        The worker then leaves it to that process's immediate attempt, instead of racing it
        to the same call; if the process dies first, the entry falls due when the lease
        ends.
        """
        return self._clock() + self._lease

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after a transient failure; ``attempts`` were made before it."""
        return backoff_delay(attempts, self._base_delay, self._max_delay)

    def deliver_due(
        self, limit: int = DEFAULT_BATCH, *, stop: threading.Event | None = None
    ) -> int:
        """Send up to ``limit`` due entries; the number delivered.

        When ``stop`` is set, the batch ends before its next call and the entries not yet
        sent are due again at once, for this process or another.
        """
        claims = self._claim(limit)
        delivered = 0
        for index, claim in enumerate(claims):
            left = (claim.lease_end - self._clock()).total_seconds()
            if (stop is not None and stop.is_set()) or left < MIN_CALL_SECONDS:
                self._release(claims[index:])
                break
            delivered += self._deliver(claim, timeout=min(self._call_timeout, left))
        return delivered

    def _claim(self, limit: int) -> list[ClaimT]:
        raise NotImplementedError

    def _release(self, claims: Sequence[ClaimT]) -> None:
        raise NotImplementedError

    def _deliver(self, claim: ClaimT, *, timeout: float) -> bool:
        raise NotImplementedError


class PinOutbox(LeasedOutbox[PinIssuer, _Claim]):
    """Delivers the PIN requests of pending registrations and records their outcomes."""

    def _deliver(self, claim: _Claim, *, timeout: float) -> bool:
        outcome = self._call(claim, timeout=timeout)
        self._record(claim, outcome)
        return outcome.pin is not None

    def deliver_new(
        self, registration: br.BirthRegistration, request_id: str, lease_end: dt.datetime
    ) -> br.BirthRegistration:
        """Send the PIN request of a registration just committed with ``claim_on_entry()``.

        Returns the registration as stored after the attempt: with its PIN, or still
        pending with the next attempt scheduled.
        """
        claim = _Claim(registration, request_id, lease_end)
        left = (lease_end - self._clock()).total_seconds()
        return self._record(claim, self._call(claim, timeout=min(self._call_timeout, left)))

    def _claim(self, limit: int) -> list[_Claim]:
        """Take up to ``limit`` due rows for one lease, in one short transaction."""
        with self._sessions.begin() as session:
            now = self._clock()
            lease_end = now + self._lease
            rows = session.scalars(
                select(BirthRegistrationRow)
                .where(
                    BirthRegistrationRow.pin_status == br.PIN_STATUS_PENDING,
                    BirthRegistrationRow.pin_next_attempt_at <= now,
                )
                .order_by(BirthRegistrationRow.pin_next_attempt_at, BirthRegistrationRow.id)
                .limit(limit)
                # Rows another process is claiming are passed over, not waited for.
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                row.pin_next_attempt_at = lease_end
            return [_Claim(to_message(row), row.request_id, lease_end) for row in rows]

    def _release(self, claims: Sequence[_Claim]) -> None:
        """Make claimed rows that were not sent due again now, unless claimed since."""
        if not claims:
            return
        with self._sessions.begin() as session:
            session.execute(
                update(BirthRegistrationRow)
                .where(
                    BirthRegistrationRow.name.in_([claim.registration.name for claim in claims]),
                    BirthRegistrationRow.pin_status == br.PIN_STATUS_PENDING,
                    BirthRegistrationRow.pin_next_attempt_at == claims[0].lease_end,
                )
                .values(pin_next_attempt_at=self._clock())
            )

    def _call(self, claim: _Claim, *, timeout: float) -> _Outcome:
        """Ask for the PIN; no transaction is open meanwhile."""
        registration = claim.registration
        try:
            value = self._sender.issue(registration, claim.request_id, timeout=timeout)
        except Unavailable as error:
            return _Outcome(code=_code_name(error))
        except PinRejected as rejected:
            return _Outcome(code=rejected.code.name, definitive=True)
        except Exception as error:  # noqa: BLE001 - one registration's failure must not stop the others'
            # Only the type: the message of an unexpected error may quote the data sent.
            log.error(  # noqa: TRY400
                "pin_request_failed_unexpectedly",
                birth_registration=registration.name,
                error=type(error).__name__,
            )
            return _Outcome(code=grpc.StatusCode.INTERNAL.name)
        if not pin_fits(value, registration, self._codes):
            return _Outcome(code=PIN_DOES_NOT_FIT, definitive=True)
        return _Outcome(pin=value)

    def _record(self, claim: _Claim, outcome: _Outcome) -> br.BirthRegistration:
        """Store the PIN or schedule the next attempt, in a second short transaction."""
        name = claim.registration.name
        with self._sessions.begin() as session:
            row = session.scalars(
                select(BirthRegistrationRow)
                .where(BirthRegistrationRow.name == name)
                .with_for_update()
            ).one()
            if row.pin_status != br.PIN_STATUS_PENDING:
                # Another delivery of the same request stored the PIN first; it stays.
                return to_message(row)
            tried_before = row.pin_attempts
            row.pin_attempts = tried_before + 1
            delay = 0.0
            if outcome.pin is not None:
                row.pin = outcome.pin
                row.pin_status = br.PIN_STATUS_ISSUED
                row.pin_next_attempt_at = None
                row.pin_last_error = None
                row.update_time = dt.datetime.now(dt.UTC)
            else:
                delay = self._max_delay if outcome.definitive else self.retry_delay(tried_before)
                row.pin_last_error = outcome.code
                row.pin_next_attempt_at = self._clock() + dt.timedelta(seconds=delay)
            stored = to_message(row)
        # Logged once committed, so that the log never claims what the database lacks.
        _log_outcome(name, outcome, attempts=tried_before + 1, delay=delay)
        return stored


class Outbox(Protocol):
    """An outbox the worker drains: PIN requests, changes for the population database."""

    def deliver_due(
        self, limit: int = DEFAULT_BATCH, *, stop: threading.Event | None = None
    ) -> int:
        """Deliver up to ``limit`` due entries; the number delivered."""
        ...


class OutboxWorker:
    """Drains outboxes from a daemon thread, from ``start()`` until ``stop()``."""

    def __init__(
        self, *outboxes: Outbox, interval: float = 0.5, batch: int = DEFAULT_BATCH
    ) -> None:
        """Look for due entries every ``interval`` seconds, up to ``batch`` per outbox."""
        self._outboxes = outboxes
        self._interval = interval
        self._batch = batch
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start delivering in the background."""
        if self._thread is not None:
            raise RuntimeError("the outbox worker was already started")
        # A daemon, so that a process that never calls stop() can still exit.
        self._thread = threading.Thread(target=self._run, name="outbox-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the call in flight, if any, and wait up to ``timeout`` seconds for it."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            delivered = self._round()
            # A full batch delivered means more may be due: go on at once.
            if delivered < self._batch:
                self._stopping.wait(self._interval)

    def _round(self) -> int:
        """Entries delivered, as many as the fullest outbox's batch (a full one goes on)."""
        fullest = 0
        for outbox in self._outboxes:
            try:
                fullest = max(fullest, outbox.deliver_due(self._batch, stop=self._stopping))
            except Exception as error:  # noqa: BLE001 - the worker must outlive a database outage
                # Only the type: a database error's message quotes the statement's parameters.
                log.error(  # noqa: TRY400
                    "outbox_round_failed", outbox=type(outbox).__name__, error=type(error).__name__
                )
        return fullest


def _code_name(error: Unavailable) -> str:
    """The gRPC code behind a transient failure, when the issuer kept the call as its cause."""
    cause = error.__cause__
    if isinstance(cause, grpc.Call):
        return cause.code().name
    return grpc.StatusCode.UNAVAILABLE.name


def _log_outcome(name: str, outcome: _Outcome, *, attempts: int, delay: float) -> None:
    if outcome.pin is not None:
        log.info("pin_delivered", birth_registration=name, attempts=attempts)
        return
    # A definitive refusal needs a person to look at the registration; a transient one waits.
    emit = log.error if outcome.definitive else log.warning
    emit(
        "pin_delivery_failed",
        birth_registration=name,
        code=outcome.code,
        attempts=attempts,
        retry_in=round(delay, 3),
    )
