"""The population register: issues PINs and keeps citizen records."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import structlog
from google.protobuf import json_format, timestamp_pb2
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from lienthong import pin
from lienthong.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2
from lienthong.reference import CodeLists
from lienthong.validation import Violations
from police_adapter.allocation import draw_serial
from police_adapter.correction import CLAIMABLE, apply_update, earlier_answer, verify_claim
from police_adapter.history import ChangeKind, Provenance, record_change
from police_adapter.models import CitizenChange, CitizenRecord
from police_adapter.validation import validate_issue_request, validate_update_request

log = structlog.get_logger(__name__)

ACTIVE = citizen_pb2.CITIZEN_STATE_ACTIVE
CANCELLED = citizen_pb2.CITIZEN_STATE_CANCELLED
_CITIZEN_NAME = re.compile(r"^citizens/(\d{12})$")
# A unique-index race (two processes issuing for one registration) is retried this often.
_ATTEMPTS = 3


class PopulationRegister:
    """PIN issuance and citizen records over one database."""

    def __init__(self, sessions: sessionmaker[Session], codes: CodeLists) -> None:
        """Use ``sessions`` for every transaction and ``codes`` for validation."""
        self._sessions = sessions
        self._codes = codes

    def issue(
        self,
        request: citizen_service_pb2.IssuePersonalIdentificationNumberRequest,
        provenance: Provenance | None = None,
    ) -> citizen_service_pb2.IssuePersonalIdentificationNumberResponse:
        """Return the registration's PIN, issuing it on the first call (idempotent).

        A re-send restores the record its history says exists, when it was deleted or
        cancelled outside the recorded path (see _restored).
        """
        unit = validate_issue_request(request, self._codes)
        birth = request.registered_birth
        provenance = provenance or Provenance()
        prefix = pin.prefix(
            self._codes.pin_province_code(unit), birth.date_of_birth.year, birth.sex
        )
        for attempt in range(_ATTEMPTS):
            try:
                with self._sessions.begin() as session:
                    existing = _existing(session, request)
                    number = _restored(session, request, existing, prefix, provenance)
                    if number is None and existing is not None:
                        return _answer(existing.pin, newly_issued=False)
                    newly_issued = number is None
                    if number is None:
                        number = _issued(session, request, prefix, provenance)
                log.info(
                    "pin_issued" if newly_issued else "pin_restored",
                    birth_registration=birth.birth_registration,
                    request_id=request.request_id,
                )
                return _answer(number, newly_issued=newly_issued)
            except IntegrityError:
                # Another process issued for this registration or request_id meanwhile.
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def update(
        self,
        request: citizen_service_pb2.UpdateCitizenRequest,
        provenance: Provenance | None = None,
    ) -> citizen_service_pb2.UpdateCitizenResponse:
        """Apply a correction; a repeat with the same request_id returns the first answer."""
        number, paths = validate_update_request(request, self._codes)
        with self._sessions.begin() as session:
            answer = earlier_answer(session, request)
            if answer is None:
                answer = apply_update(
                    session,
                    request=request,
                    number=number,
                    paths=paths,
                    provenance=provenance or Provenance(),
                    codes=self._codes,
                )
            in_force, cancelled, outcome = answer
            record = session.get(CitizenRecord, in_force)
            if record is None:  # the change rows name records that exist
                raise NotFound(f"no citizen citizens/{in_force}")
            citizen = _to_message(record)
        log.info(
            "citizen_updated",
            pin_outcome=citizen_service_pb2.PinOutcome.Name(outcome),  # type: ignore[arg-type]
            request_id=request.request_id,
            birth_registration=citizen.birth_registration,
        )
        return citizen_service_pb2.UpdateCitizenResponse(
            citizen=citizen,
            pin_outcome=outcome,  # type: ignore[arg-type]
            cancelled_personal_identification_number=cancelled or "",
        )

    def verify(
        self, request: citizen_service_pb2.VerifyCitizenRequest
    ) -> citizen_service_pb2.VerifyCitizenResponse:
        """Match, mismatch or unknown per claimed field, without returning stored data."""
        v = Violations()
        if not re.fullmatch(r"\d{12}", request.personal_identification_number):
            v.add("personal_identification_number", "must be 12 digits")
        if not request.HasField("claim") or not any(
            (request.claim.sex != 0) if field == "sex" else request.claim.HasField(field)  # type: ignore[arg-type]
            for field in CLAIMABLE
        ):
            v.add("claim", "must claim at least one field")
        v.raise_if_any()
        with self._sessions() as session:
            record = session.get(CitizenRecord, request.personal_identification_number)
            results = verify_claim(record, request.claim)
        return citizen_service_pb2.VerifyCitizenResponse(results=results)

    def get(self, name: str) -> citizen_pb2.Citizen:
        """The citizen record called ``name`` ("citizens/{pin}"), cancelled ones included."""
        match = _CITIZEN_NAME.match(name)
        if match is None:
            raise InvalidArgument([FieldViolation("name", "must be citizens/ and a 12-digit PIN")])
        with self._sessions() as session:
            record = session.get(CitizenRecord, match.group(1))
            if record is None:
                raise NotFound(f"no citizen {name}")
            return _to_message(record)


def _answer(
    number: str, *, newly_issued: bool
) -> citizen_service_pb2.IssuePersonalIdentificationNumberResponse:
    return citizen_service_pb2.IssuePersonalIdentificationNumberResponse(
        personal_identification_number=number, newly_issued=newly_issued
    )


def _data(birth: citizen_pb2.RegisteredBirth) -> dict[str, Any]:
    """A registered birth as a record stores it: the protobuf JSON mapping."""
    return json_format.MessageToDict(birth, preserving_proto_field_name=True)


def _record(
    number: str,
    request: citizen_service_pb2.IssuePersonalIdentificationNumberRequest,
    data: dict[str, Any],
) -> CitizenRecord:
    """A record in force for the request's registered birth, as issuance creates it."""
    birth = request.registered_birth
    return CitizenRecord(
        pin=number,
        state=ACTIVE,
        birth_registration=birth.birth_registration,
        request_id=request.request_id,
        province_code=number[:3],
        sex=birth.sex,
        birth_year=birth.date_of_birth.year,
        data=data,
    )


def _issued(
    session: Session,
    request: citizen_service_pb2.IssuePersonalIdentificationNumberRequest,
    prefix: str,
    provenance: Provenance,
) -> str:
    """Draw a new PIN of ``prefix`` and create its record; the PIN."""
    number = f"{prefix}{draw_serial(session, prefix):06d}"
    data = _data(request.registered_birth)
    record_change(
        session,
        kind=ChangeKind.ISSUED,
        pin=number,
        request_id=request.request_id,
        provenance=provenance,
        after=data,
    )
    session.add(_record(number, request, data))
    return number


def _existing(
    session: Session, request: citizen_service_pb2.IssuePersonalIdentificationNumberRequest
) -> CitizenRecord | None:
    """The record an earlier call with this request_id or registration left in force."""
    registration = request.registered_birth.birth_registration
    by_request = session.scalars(
        select(CitizenRecord).where(CitizenRecord.request_id == request.request_id)
    ).one_or_none()
    if by_request is not None:
        if by_request.birth_registration != registration:
            raise AlreadyExists(
                "request_id was used for another registration", reason="REQUEST_ID_REUSED"
            )
        return _in_force(session, by_request)
    return _active(session, registration)


def _active(session: Session, registration: str) -> CitizenRecord | None:
    return session.scalars(
        select(CitizenRecord).where(
            CitizenRecord.birth_registration == registration,
            CitizenRecord.state == ACTIVE,
        )
    ).one_or_none()


def _restored(
    session: Session,
    request: citizen_service_pb2.IssuePersonalIdentificationNumberRequest,
    existing: CitizenRecord | None,
    prefix: str,
    provenance: Provenance,
) -> str | None:
    """Restore what the history says this request issued, if it went missing; its PIN.

    Reconciliation repairs drift by re-sending a registration with its original request_id.
    The history, not the record, is then the authority: a record cancelled without a
    recorded cancellation is put back in force, and a record whose row is gone is re-created
    with its PIN from the registered birth sent — when that PIN still encodes the data sent.
    """
    if existing is not None:
        return _reinstated(session, existing, request.request_id, provenance)
    lost = _lost_issue(session, request.request_id, prefix)
    if lost is None:
        return None
    data = _data(request.registered_birth)
    record = _record(lost.pin, request, data)
    record.create_time = lost.create_time  # the record's own, not the repair's
    session.add(record)
    record_change(
        session,
        kind=ChangeKind.RESTORED,
        pin=lost.pin,
        request_id=request.request_id,
        provenance=provenance,
        after=data,
    )
    return lost.pin


def _reinstated(
    session: Session, record: CitizenRecord, request_id: str, provenance: Provenance
) -> str | None:
    """Put back in force a record cancelled outside the recorded path; its PIN."""
    if record.state != CANCELLED or record.replaced_by is not None:
        return None
    # Locked and read again: concurrent re-sends restore it once (PostgreSQL).
    session.refresh(record, with_for_update=True)
    if (
        record.state != CANCELLED
        or record.replaced_by is not None
        or _was_cancelled(session, record.pin)
        # Another record in force for the registration came later; two would break the rule.
        or _active(session, record.birth_registration) is not None
    ):
        return None
    record.state = ACTIVE
    record_change(
        session,
        kind=ChangeKind.RESTORED,
        pin=record.pin,
        request_id=request_id,
        provenance=provenance,
        before=record.data,
        after=record.data,
        fields=["state"],
    )
    return record.pin


def _lost_issue(session: Session, request_id: str, prefix: str) -> CitizenChange | None:
    """The newest change that gave this request_id a PIN of ``prefix`` whose row is gone."""
    changes = session.scalars(
        select(CitizenChange)
        .where(
            CitizenChange.request_id == request_id,
            CitizenChange.kind.in_([ChangeKind.ISSUED.value, ChangeKind.REESTABLISHED.value]),
        )
        .order_by(CitizenChange.id.desc())
    ).all()
    for change in changes:
        if (
            change.pin[:6] == prefix
            and session.get(CitizenRecord, change.pin) is None
            # A cancelled PIN is never in force again, whatever became of its row.
            and not _was_cancelled(session, change.pin)
        ):
            return change
    return None


def _was_cancelled(session: Session, number: str) -> bool:
    """Whether the history records a cancellation of ``number``."""
    cancellation = select(CitizenChange.id).where(
        CitizenChange.pin == number, CitizenChange.kind == ChangeKind.CANCELLED.value
    )
    return session.scalars(cancellation.limit(1)).first() is not None


def _in_force(session: Session, record: CitizenRecord) -> CitizenRecord:
    """Follow replaced_by links from a cancelled record to the record in force."""
    while record.replaced_by is not None:
        following = session.get(CitizenRecord, record.replaced_by)
        if following is None:
            break
        record = following
    return record


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    return stamp


def _to_message(record: CitizenRecord) -> citizen_pb2.Citizen:
    birth = json_format.ParseDict(record.data, citizen_pb2.RegisteredBirth())
    citizen = citizen_pb2.Citizen(
        name=f"citizens/{record.pin}",
        personal_identification_number=record.pin,
        state=citizen_pb2.CitizenState.ValueType(record.state),
        full_name=birth.full_name,
        date_of_birth=birth.date_of_birth,
        sex=birth.sex,
        registration_place=birth.registration_place,
        home_town=birth.home_town,
        ethnicity=birth.ethnicity,
        nationality=birth.nationality,
        birth_registration=record.birth_registration,
        replaced_by=record.replaced_by or "",
        create_time=_timestamp(record.create_time),
        update_time=_timestamp(record.update_time),
    )
    for role in ("father", "mother", "legal_representative"):
        if birth.HasField(role):
            getattr(citizen, role).CopyFrom(getattr(birth, role))
    return citizen
