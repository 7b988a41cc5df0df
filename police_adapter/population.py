"""The population register: issues PINs and keeps citizen records."""

from __future__ import annotations

import datetime as dt
import re

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
from police_adapter.models import CitizenRecord
from police_adapter.validation import validate_issue_request, validate_update_request

log = structlog.get_logger(__name__)

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
        """Return the registration's PIN, issuing it on the first call (idempotent)."""
        unit = validate_issue_request(request, self._codes)
        birth = request.registered_birth
        for attempt in range(_ATTEMPTS):
            try:
                with self._sessions.begin() as session:
                    existing = self._existing(session, request)
                    if existing is not None:
                        return citizen_service_pb2.IssuePersonalIdentificationNumberResponse(
                            personal_identification_number=existing, newly_issued=False
                        )
                    prefix = pin.prefix(
                        self._codes.pin_province_code(unit), birth.date_of_birth.year, birth.sex
                    )
                    number = f"{prefix}{draw_serial(session, prefix):06d}"
                    data = json_format.MessageToDict(birth, preserving_proto_field_name=True)
                    record_change(
                        session,
                        kind=ChangeKind.ISSUED,
                        pin=number,
                        request_id=request.request_id,
                        provenance=provenance or Provenance(),
                        after=data,
                    )
                    session.add(
                        CitizenRecord(
                            pin=number,
                            state=citizen_pb2.CITIZEN_STATE_ACTIVE,
                            birth_registration=birth.birth_registration,
                            request_id=request.request_id,
                            province_code=number[:3],
                            sex=birth.sex,
                            birth_year=birth.date_of_birth.year,
                            data=data,
                        )
                    )
                log.info(
                    "pin_issued",
                    birth_registration=birth.birth_registration,
                    request_id=request.request_id,
                )
                return citizen_service_pb2.IssuePersonalIdentificationNumberResponse(
                    personal_identification_number=number, newly_issued=True
                )
            except IntegrityError:
                # Another process issued for this registration or request_id meanwhile.
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _existing(
        session: Session, request: citizen_service_pb2.IssuePersonalIdentificationNumberRequest
    ) -> str | None:
        registration = request.registered_birth.birth_registration
        by_request = session.scalars(
            select(CitizenRecord).where(CitizenRecord.request_id == request.request_id)
        ).one_or_none()
        if by_request is not None:
            if by_request.birth_registration != registration:
                raise AlreadyExists(
                    "request_id was used for another registration", reason="REQUEST_ID_REUSED"
                )
            return _in_force(session, by_request).pin
        active = session.scalars(
            select(CitizenRecord).where(
                CitizenRecord.birth_registration == registration,
                CitizenRecord.state == citizen_pb2.CITIZEN_STATE_ACTIVE,
            )
        ).one_or_none()
        return active.pin if active is not None else None

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
