"""The outbox of changes for the population database: amendments and corrections delivered.

An amendment or correction of a registration that holds a PIN, touching a field the
population database keeps, commits with a ``registration_change`` row whose ``delivery`` is
PENDING (justice_adapter.changes). ``ChangeOutbox`` sends it as UpdateCitizen through a
``CitizenUpdater`` with the same claim / call / record steps and leases as the PIN outbox
(justice_adapter.outbox), and records the outcome:

    delivered   the population database applied it; when it re-established the PIN, the
                registration stores the new PIN and keeps the old one as cancelled
    pending     a transient failure: retried with exponential backoff and jitter
    rejected    a definitive refusal (or a new PIN that breaks Decree 137/2015 Art. 13): a
                person must look at it; the registry no longer blocks further changes

One change of a registration is pending at a time (changes.py refuses another meanwhile), so
the values sent are the registration's current ones. The UpdateCitizen request_id is derived
from the change's own, so a retry after a crash is answered as the first call was.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import grpc
import structlog
from sqlalchemy import select

from justice_adapter.models import (
    BirthRegistrationRow,
    CancelledPinRow,
    RegistrationChangeRow,
    to_message,
)
from justice_adapter.outbox import PIN_DOES_NOT_FIT, LeasedOutbox, backoff_delay
from justice_adapter.pin_requests import CitizenUpdate, CitizenUpdater, PinRejected, pin_fits
from lienthong.errors import Unavailable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from lienthong.civilregistry.v1 import birth_registration_pb2 as br

log = structlog.get_logger(__name__)

# UpdateCitizen request ids: one per change, the same on every retry.
_REQUEST_NAMESPACE = uuid.UUID("8f7f1f7e-5b8c-4d0e-9a51-6c0b7e3f2a10")


class Delivery(StrEnum):
    """Where a change stands with the population database."""

    NONE = "none"  # nothing of it goes there
    PENDING = "pending"
    DELIVERED = "delivered"
    REJECTED = "rejected"


# The kind of a change that re-sends unchanged data to repair drift (justice_adapter.repairs).
REPAIR = "repair"


def update_request_id(change_request_id: str) -> str:
    """The UpdateCitizen request_id of a change, stable across retries."""
    return str(uuid.uuid5(_REQUEST_NAMESPACE, change_request_id))


@dataclass(frozen=True)
class _Claim:
    change_id: int
    registration: br.BirthRegistration
    pin: str
    paths: list[str]
    reason: str
    request_id: str
    lease_end: dt.datetime


@dataclass(frozen=True)
class _Outcome:
    update: CitizenUpdate | None = None
    code: str | None = None
    definitive: bool = False


class ChangeOutbox(LeasedOutbox[CitizenUpdater, _Claim]):
    """Delivers pending changes to the population database and records their outcomes."""

    def _deliver(self, claim: _Claim, *, timeout: float) -> bool:
        return self._record(claim, self._call(claim, timeout=timeout)) == Delivery.DELIVERED

    def deliver_new(self, change_id: int, lease_end: dt.datetime) -> None:
        """Send a change just committed with ``claim_on_entry()``, and record the outcome."""
        with self._sessions() as session:
            claim = _claim_of(session, session.get_one(RegistrationChangeRow, change_id), lease_end)
        left = (lease_end - self._clock()).total_seconds()
        self._record(claim, self._call(claim, timeout=min(self._call_timeout, left)))

    def _claim(self, limit: int) -> list[_Claim]:
        """Take up to ``limit`` due changes for one lease, in one short transaction."""
        with self._sessions.begin() as session:
            now = self._clock()
            lease_end = now + self._lease
            query = (
                select(RegistrationChangeRow)
                .where(
                    RegistrationChangeRow.delivery == Delivery.PENDING,
                    RegistrationChangeRow.next_attempt_at <= now,
                )
                .order_by(RegistrationChangeRow.next_attempt_at, RegistrationChangeRow.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            claims = []
            for change in session.scalars(query).all():
                change.next_attempt_at = lease_end
                claims.append(_claim_of(session, change, lease_end))
            return claims

    def _release(self, claims: Sequence[_Claim]) -> None:
        with self._sessions.begin() as session:
            for claim in claims:
                change = session.get_one(RegistrationChangeRow, claim.change_id)
                if (
                    change.delivery == Delivery.PENDING
                    and change.next_attempt_at == claim.lease_end
                ):
                    change.next_attempt_at = self._clock()

    def _call(self, claim: _Claim, *, timeout: float) -> _Outcome:
        try:
            update = self._sender.update(
                claim.registration,
                pin=claim.pin,
                paths=claim.paths,
                reason=claim.reason,
                request_id=claim.request_id,
                timeout=timeout,
            )
        except Unavailable as error:
            cause = error.__cause__
            code = cause.code().name if isinstance(cause, grpc.Call) else "UNAVAILABLE"
            return _Outcome(code=code)
        except PinRejected as rejected:
            return _Outcome(code=rejected.code.name, definitive=True)
        except Exception as error:  # noqa: BLE001 - one change's failure must not stop the others'
            log.error(  # noqa: TRY400 - the type only: the message may quote the data sent
                "change_delivery_failed_unexpectedly",
                birth_registration=claim.registration.name,
                error=type(error).__name__,
            )
            return _Outcome(code=grpc.StatusCode.INTERNAL.name)
        if update.cancelled_pin is not None and not pin_fits(
            update.pin, claim.registration, self._codes
        ):
            return _Outcome(code=PIN_DOES_NOT_FIT, definitive=True)
        return _Outcome(update=update)

    def _record(self, claim: _Claim, outcome: _Outcome) -> Delivery:
        with self._sessions.begin() as session:
            change = session.scalars(
                select(RegistrationChangeRow)
                .where(RegistrationChangeRow.id == claim.change_id)
                .with_for_update()
            ).one()
            if change.delivery != Delivery.PENDING:
                return Delivery(change.delivery)  # another process recorded it first
            tried_before = change.attempts
            change.attempts = tried_before + 1
            now = self._clock()
            if outcome.update is not None:
                change.delivery = Delivery.DELIVERED
                change.next_attempt_at = None
                change.last_error = None
                change.deliver_time = now
                self._store_pin(session, change, outcome.update, now)
            elif outcome.definitive:
                change.delivery = Delivery.REJECTED
                change.next_attempt_at = None
                change.last_error = outcome.code
            else:
                delay = backoff_delay(tried_before, self._base_delay, self._max_delay)
                change.last_error = outcome.code
                change.next_attempt_at = now + dt.timedelta(seconds=delay)
            delivery = Delivery(change.delivery)
        _log_outcome(claim, outcome, delivery, attempts=tried_before + 1)
        return delivery

    @staticmethod
    def _store_pin(
        session: Session, change: RegistrationChangeRow, update: CitizenUpdate, now: dt.datetime
    ) -> None:
        """Store a re-established PIN and keep the cancelled one."""
        registration = session.scalars(
            select(BirthRegistrationRow)
            .where(BirthRegistrationRow.id == change.registration_id)
            .with_for_update()
        ).one()
        if update.cancelled_pin is None or registration.pin != update.cancelled_pin:
            return
        session.add(
            CancelledPinRow(
                registration_id=registration.id,
                pin=update.cancelled_pin,
                replaced_by=update.pin,
                change_id=change.id,
                cancel_time=now,
            )
        )
        change.cancelled_pin = update.cancelled_pin
        registration.pin = update.pin
        registration.update_time = now
        session.flush()
        session.expire(registration, ["cancelled_pins"])


def _claim_of(session: Session, change: RegistrationChangeRow, lease_end: dt.datetime) -> _Claim:
    """What a delivery of ``change`` sends: the registration's current values."""
    registration = session.get_one(BirthRegistrationRow, change.registration_id)
    return _Claim(
        change_id=change.id,
        registration=to_message(registration),
        pin=registration.pin or "",
        paths=list(change.citizen_paths),
        reason=_reason_sent(change),
        request_id=update_request_id(change.request_id),
        lease_end=lease_end,
    )


def _reason_sent(change: RegistrationChangeRow) -> str:
    """What the population database records as the reason: the decision, or the amendment."""
    if change.kind == REPAIR:
        return change.reason
    if change.decision_number is not None and change.decision_date is not None:
        return f"correction decision {change.decision_number} of {change.decision_date}"
    return f"amendment within the grace window: {change.reason}"


def _log_outcome(claim: _Claim, outcome: _Outcome, delivery: Delivery, *, attempts: int) -> None:
    fields = {"birth_registration": claim.registration.name, "attempts": attempts}
    if delivery == Delivery.DELIVERED:
        reestablished = outcome.update is not None and outcome.update.cancelled_pin is not None
        log.info("change_delivered", pin_reestablished=reestablished, **fields)
    elif delivery == Delivery.REJECTED:
        log.error("change_rejected", code=outcome.code, **fields)
    else:
        log.warning("change_delivery_failed", code=outcome.code, **fields)
