"""Repairs of reconciliation findings, through the paths every change takes.

A repair changes nothing by itself in the population database: it queues a re-send in the
registry's outboxes, which deliver it through the gateway as an audited exchange like any
other. Re-sending the registration re-opens its PIN request (the original request ID, so
the population database answers with the PIN its history says it issued); re-sending
fields adds a change of kind "repair" for the change outbox. Each repair is recorded as a
REPAIRED event of the registration, citing the Reconcile exchange that ordered it, under a
request ID derived from the run's: the same run repeated queues nothing twice.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select

from justice_adapter.change_delivery import REPAIR, Delivery
from justice_adapter.changes import registration_digest
from justice_adapter.evidence import Event, ExchangeRef, record_event
from justice_adapter.models import (
    BirthRegistrationRow,
    RegistrationChangeRow,
    RegistrationEventRow,
    to_message,
)
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import reconciliation_service_pb2 as rc

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.orm import Session, sessionmaker

log = structlog.get_logger(__name__)

_NAMESPACE = uuid.UUID("5b0c3f7e-29a4-4c36-9d0e-6f1d2c8a4b71")


def repair_request_id(run_request_id: str, registration: str, action: int) -> str:
    """The request ID of one repair of one run, stable across repeats of the run."""
    return str(uuid.uuid5(_NAMESPACE, f"{run_request_id}/{registration}/{action}"))


class Repairs:
    """Queues the re-sends that repair findings."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], dt.datetime]) -> None:
        """Write with ``sessions``; ``clock`` makes the re-sends due at once."""
        self._sessions = sessions
        self._clock = clock

    def queue(
        self, finding: rc.Finding, *, run_request_id: str, by: str | None, exchange: ExchangeRef
    ) -> bool:
        """Queue the repair of ``finding``; False when this run had queued it already.

        ``by`` is the ministry administrator's officer ID, ``exchange`` the Reconcile call.
        """
        action = finding.repair_action
        key = repair_request_id(run_request_id, finding.birth_registration, action)
        with self._sessions.begin() as session:
            done = session.scalar(
                select(RegistrationEventRow.id).where(RegistrationEventRow.request_id == key)
            )
            row = session.scalars(
                select(BirthRegistrationRow)
                .where(BirthRegistrationRow.name == finding.birth_registration)
                .with_for_update()
            ).one_or_none()
            if done is not None or row is None:
                return False
            previous = row.pin
            now = self._clock()
            if action == rc.REPAIR_ACTION_RESEND_REGISTRATION:
                _reopen_pin_request(row, now)
            elif action == rc.REPAIR_ACTION_RESEND_FIELDS:
                _add_field_resend(
                    session, row, list(finding.fields), key, (run_request_id, by, now)
                )
            else:
                raise ValueError(f"finding has no repair: {action}")
            record_event(
                session,
                registration_id=row.id,
                event=Event.REPAIRED,
                exchange=exchange,
                record=row.record,
                request_id=key,
                previous_pin=previous,
            )
        log.info(
            "repair_queued",
            birth_registration=finding.birth_registration,
            action=rc.RepairAction.Name(action),
            run_request_id=run_request_id,
        )
        return True


def _reopen_pin_request(row: BirthRegistrationRow, now: dt.datetime) -> None:
    """Make the registration's PIN request due again; the answer replaces its PIN."""
    row.pin = None
    row.pin_status = br.PIN_STATUS_PENDING
    row.pin_next_attempt_at = now
    row.pin_last_error = None
    row.update_time = now


def _add_field_resend(
    session: Session,
    row: BirthRegistrationRow,
    fields: list[str],
    key: str,
    run: tuple[str, str | None, dt.datetime],
) -> None:
    """A change of kind "repair": the registration unchanged, ``fields`` sent as they are."""
    run_request_id, by, now = run
    digest = registration_digest(to_message(row))
    session.add(
        RegistrationChangeRow(
            registration_id=row.id,
            request_id=key,
            request_digest=hashlib.sha256(f"{key}/{','.join(fields)}".encode()).hexdigest(),
            kind=REPAIR,
            paths=fields,
            reason=f"reconciliation {run_request_id}: the registry's data re-sent",
            officer_id=by or "",
            before_digest=digest,
            after_digest=digest,
            citizen_paths=fields,
            delivery=Delivery.PENDING,
            attempts=0,
            next_attempt_at=now,
            create_time=now,
        )
    )
