"""Updating a citizen record after a civil-status correction.

When the correction changes what the PIN encodes — sex, year of birth, or the province of
the place of registration — the PIN was computed from wrong data: it is cancelled and a new
one established (Decree 137/2015 Art. 16; Circular 59/2021 Art. 6). The cancelled number
stays recorded, linked to its successor, and is never issued again; any other correction
keeps the PIN.
"""

from __future__ import annotations

import hashlib
from typing import Any

from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.orm import Session

from lienthong import pin
from lienthong.errors import AlreadyExists, FailedPrecondition, NotFound
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2
from lienthong.reference import CodeLists, Level
from lienthong.validation import normalise_name_part
from police_adapter.allocation import draw_serial
from police_adapter.history import ChangeKind, Provenance, record_change
from police_adapter.models import CitizenChange, CitizenRecord

ACTIVE = citizen_pb2.CITIZEN_STATE_ACTIVE
CANCELLED = citizen_pb2.CITIZEN_STATE_CANCELLED


def request_digest(request: citizen_service_pb2.UpdateCitizenRequest) -> str:
    """SHA-256 of the request's content, to tell a retry from a reused request_id."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def earlier_answer(
    session: Session, request: citizen_service_pb2.UpdateCitizenRequest
) -> tuple[str, str | None, int] | None:
    """(PIN in force, cancelled PIN, outcome) of an earlier call with this request_id."""
    change = session.scalars(
        select(CitizenChange).where(
            CitizenChange.request_id == request.request_id,
            CitizenChange.kind.in_([ChangeKind.UPDATED.value, ChangeKind.REESTABLISHED.value]),
        )
    ).one_or_none()
    if change is None:
        return None
    if change.request_sha256 != request_digest(request):
        raise AlreadyExists(
            "request_id was already used for a different update", reason="REQUEST_ID_REUSED"
        )
    if change.kind == ChangeKind.REESTABLISHED.value:
        return change.pin, change.related_pin, citizen_service_pb2.PIN_OUTCOME_REESTABLISHED
    return change.pin, None, citizen_service_pb2.PIN_OUTCOME_KEPT


def apply_update(  # noqa: PLR0913 - the update's inputs, keyword-only
    session: Session,
    *,
    request: citizen_service_pb2.UpdateCitizenRequest,
    number: str,
    paths: list[str],
    provenance: Provenance,
    codes: CodeLists,
) -> tuple[str, str | None, int]:
    """Apply the update in the caller's transaction; return (PIN in force, cancelled, outcome)."""
    record = session.get(CitizenRecord, number, with_for_update=True)
    if record is None:
        raise NotFound(f"no citizen citizens/{number}")
    if record.state != ACTIVE:
        raise FailedPrecondition(
            f"PIN {number} was cancelled and replaced by {record.replaced_by}",
            reason="PIN_CANCELLED",
            metadata={"replaced_by": record.replaced_by or ""},
        )
    before = dict(record.data)
    updated = json_format.ParseDict(before, citizen_pb2.RegisteredBirth())
    for field in paths:
        if field == "sex":
            updated.sex = request.citizen.sex
        elif request.citizen.HasField(field):  # type: ignore[arg-type]
            getattr(updated, field).CopyFrom(getattr(request.citizen, field))
        else:
            updated.ClearField(field)  # type: ignore[arg-type]
    after = json_format.MessageToDict(updated, preserving_proto_field_name=True)
    common = {
        "request_id": request.request_id,
        "provenance": provenance,
        "reason": request.reason,
    }
    unit = codes.unit(Level(updated.registration_place.level), updated.registration_place.code)
    if unit is None:  # validated before; the code list has it
        raise LookupError(updated.registration_place.code)
    prefix = pin.prefix(codes.pin_province_code(unit), updated.date_of_birth.year, updated.sex)
    if prefix == number[:6]:
        record.data = after
        record_change(
            session,
            kind=ChangeKind.UPDATED,
            pin=number,
            before=before,
            after=after,
            fields=paths,
            request_sha256=request_digest(request),
            **common,  # type: ignore[arg-type]
        )
        return number, None, citizen_service_pb2.PIN_OUTCOME_KEPT
    successor = f"{prefix}{draw_serial(session, prefix):06d}"
    record.state = CANCELLED
    record.replaced_by = successor
    session.flush()  # the record leaves the active index before its successor enters it
    session.add(
        CitizenRecord(
            pin=successor,
            state=ACTIVE,
            birth_registration=record.birth_registration,
            request_id=request.request_id,
            province_code=successor[:3],
            sex=updated.sex,
            birth_year=updated.date_of_birth.year,
            data=after,
        )
    )
    record_change(
        session,
        kind=ChangeKind.CANCELLED,
        pin=number,
        before=before,
        related_pin=successor,
        fields=paths,
        **common,  # type: ignore[arg-type]
    )
    record_change(
        session,
        kind=ChangeKind.REESTABLISHED,
        pin=successor,
        before=before,
        after=after,
        related_pin=number,
        fields=paths,
        request_sha256=request_digest(request),
        **common,  # type: ignore[arg-type]
    )
    return successor, number, citizen_service_pb2.PIN_OUTCOME_REESTABLISHED


def verify_claim(
    record: CitizenRecord | None, claim: citizen_service_pb2.CitizenClaim
) -> list[citizen_service_pb2.FieldVerification]:
    """Match, mismatch or unknown for each claimed field, disclosing nothing stored."""
    stored = (
        json_format.ParseDict(record.data, citizen_pb2.RegisteredBirth())
        if record is not None and record.state == ACTIVE
        else None
    )
    results = []
    for field in CLAIMABLE:
        claimed = claim.sex != 0 if field == "sex" else claim.HasField(field)  # type: ignore[arg-type]
        if not claimed:
            continue
        if stored is None or (field != "sex" and not stored.HasField(field)):  # type: ignore[arg-type]
            result = citizen_service_pb2.VERIFICATION_RESULT_UNKNOWN
        elif _comparable(field, getattr(claim, field)) == _comparable(
            field, getattr(stored, field)
        ):
            result = citizen_service_pb2.VERIFICATION_RESULT_MATCH
        else:
            result = citizen_service_pb2.VERIFICATION_RESULT_MISMATCH
        results.append(citizen_service_pb2.FieldVerification(field=field, result=result))
    return results


CLAIMABLE = (
    "full_name",
    "date_of_birth",
    "sex",
    "registration_place",
    "ethnicity",
    "nationality",
)


def _comparable(field: str, value: Any) -> object:  # noqa: ANN401 - a field of either message
    if field == "full_name":
        return tuple(
            normalise_name_part(part)
            for part in (value.family_name, value.middle_name, value.given_name)
        )
    if field == "sex":
        return int(value)
    return value.SerializeToString(deterministic=True)
