"""Officer accounts: created, read, listed and disabled, and the caller authenticated by them.

An officer is authenticated by a client certificate of their own: the gateway verifies it
and passes its SPIFFE ID, ``spiffe://{trust domain}/moj/officers/{officer_id}``, in
``lienthong-caller`` on its own mTLS leg (lienthong.identity.caller_identity). No header a
caller sets names an officer. The first ministry administrators come from the configuration
(``ensure_administrators``); they create every other account.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog
from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from justice_adapter import paging
from justice_adapter.models import OfficerRow
from justice_adapter.scope import (
    MINISTRY_ADMINISTRATOR,
    PROVINCIAL_SUPERVISOR,
    ROLE_LEVEL,
    Locality,
    Officer,
    out_of_scope,
)
from lienthong import validation
from lienthong.civilregistry.v1 import officer_pb2
from lienthong.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from lienthong.person.v1 import person_name_pb2
from lienthong.place.v1 import administrative_unit_pb2
from lienthong.reference import CODE_LENGTH, CodeLists, Level, Unit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker
    from sqlalchemy.sql.elements import ColumnElement

    from lienthong.civilregistry.v1 import officer_service_pb2 as service

log = structlog.get_logger(__name__)

OFFICER_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
_NAME = re.compile(r"officers/([a-z][a-z0-9-]{0,62})")
_LEVEL_OF_LENGTH = {length: level for level, length in CODE_LENGTH.items()}


class OfficerDirectory:
    """The officer accounts of the registry, in its database."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        codes: CodeLists,
        *,
        identity_prefix: str,
        reads: sessionmaker[Session] | None = None,
    ) -> None:
        """Accounts authenticate as ``identity_prefix`` + officer_id (a SPIFFE ID)."""
        if not identity_prefix.endswith("/"):
            raise ValueError("identity_prefix must end with /")
        self._sessions = sessions
        self._codes = codes
        self._prefix = identity_prefix
        # Reads that need no lock (lienthong.db.read_session_factory); the same by default.
        self._reads = reads or sessions

    def identity_of(self, officer_id: str) -> str:
        """The SPIFFE ID an account authenticates with."""
        return self._prefix + officer_id

    def authenticate(self, identity: str | None) -> Officer:
        """The active account of the certificate identity ``identity``.

        PermissionDenied when there is none or it is disabled: the caller is authenticated
        (by its certificate) but has no right here.
        """
        if not identity:
            raise PermissionDenied("calls must come from an officer", reason="NO_OFFICER")
        with self._reads() as session:
            row = session.scalars(
                select(OfficerRow).where(OfficerRow.identity == identity)
            ).one_or_none()
        if row is None:
            raise PermissionDenied("the caller has no officer account", reason="NO_OFFICER_ACCOUNT")
        if row.state != officer_pb2.OFFICER_STATE_ACTIVE:
            raise PermissionDenied("the officer account is disabled", reason="ACCOUNT_DISABLED")
        return _officer_of(row)

    def ensure_administrators(self, officer_ids: Iterable[str]) -> None:
        """Create the ministry administrators the configuration names, if missing."""
        for officer_id in officer_ids:
            if not OFFICER_ID.fullmatch(officer_id):
                raise ValueError(f"bad administrator officer id {officer_id!r}")
            name = person_name_pb2.PersonName(family_name="QUẢN TRỊ", given_name=officer_id.upper())
            try:
                with self._sessions.begin() as session:
                    exists = session.scalars(
                        select(OfficerRow).where(OfficerRow.officer_id == officer_id)
                    ).first()
                    if exists is not None and (
                        exists.role != MINISTRY_ADMINISTRATOR
                        or exists.state != officer_pb2.OFFICER_STATE_ACTIVE
                    ):
                        # The configuration does not override an account: say so, once a start.
                        log.warning("administrator_not_active", officer=f"officers/{officer_id}")
                    if exists is None:
                        session.add(
                            self._new_row(officer_id, name, MINISTRY_ADMINISTRATOR, None, None)
                        )
                        log.info("administrator_created", officer=f"officers/{officer_id}")
            except IntegrityError:
                pass  # another process created it first

    def create(self, request: service.CreateOfficerRequest, caller: Officer) -> officer_pb2.Officer:
        """Create an account; a repeat of the request_id returns the account as it stands."""
        caller.require_administrator()
        unit = self._validate_create(request)
        digest = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
        stored = self._stored_answer(request.request_id, digest)
        if stored is not None:
            return stored
        officer = request.officer
        row = self._new_row(
            request.officer_id,
            _normalised(officer.display_name),
            officer.role,
            unit,
            (request.request_id, digest),
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            stored = self._stored_answer(request.request_id, digest)
            if stored is not None:
                return stored
            raise AlreadyExists(
                f"officers/{request.officer_id} already exists", reason="OFFICER_ID_TAKEN"
            ) from None
        log.info(
            "officer_created",
            officer=f"officers/{row.officer_id}",
            role=officer_pb2.OfficerRole.Name(officer.role),
            unit=row.unit_code,
            by=caller.resource_name,
        )
        return _message(row)

    def get(self, name: str, caller: Officer) -> officer_pb2.Officer:
        """One account: one's own, or one within a supervisor's or administrator's reach."""
        _officer_id_of(name)  # a malformed name is INVALID_ARGUMENT for everyone
        if caller.role not in (MINISTRY_ADMINISTRATOR, PROVINCIAL_SUPERVISOR) and (
            name != caller.resource_name
        ):
            # Not even whether the account exists: a registrar reads only its own.
            raise out_of_scope(caller, "another officer's account")
        with self._reads() as session:
            row = self._row(session, name)
            self._require_reader(caller, row)
            return _message(row)

    def list(
        self, request: service.ListOfficersRequest, caller: Officer
    ) -> tuple[builtins.list[officer_pb2.Officer], str]:
        """One page of the accounts within the caller's reach, and the next page's token."""
        if caller.role not in (MINISTRY_ADMINISTRATOR, PROVINCIAL_SUPERVISOR):
            raise PermissionDenied(
                "only supervisors and administrators list accounts", reason="ROLE_NOT_ALLOWED"
            )
        v = validation.Violations()
        size = paging.page_size(v, request.page_size)
        after = paging.decode_page_token(v, request.page_token)
        conditions: builtins.list[ColumnElement[bool]] = []
        if request.unit_code:
            locality = self._locality_filter(v, request.unit_code)
            if locality is not None:
                if not caller.sees(locality):
                    raise out_of_scope(caller, f"unit {request.unit_code}")
                conditions.append(_within(request.unit_code))
        if request.state:
            if request.state not in officer_pb2.OfficerState.values():
                v.add("state", "is not an officer state")
            conditions.append(OfficerRow.state == request.state)
        v.raise_if_any()
        if caller.role == PROVINCIAL_SUPERVISOR and caller.unit is not None:
            conditions.append(OfficerRow.province_code == caller.unit.province_code)
        query = (
            select(OfficerRow)
            .where(OfficerRow.id > after, *conditions)
            .order_by(OfficerRow.id)
            .limit(size + 1)
        )
        with self._reads() as session:
            rows = session.scalars(query).all()
        more = len(rows) > size
        token = paging.encode_page_token(rows[size - 1].id) if more else ""
        return [_message(row) for row in rows[:size]], token

    def disable(self, name: str, caller: Officer) -> officer_pb2.Officer:
        """Disable an account; its registrations remain. Disabling twice succeeds."""
        caller.require_administrator()
        with self._sessions.begin() as session:
            row = self._row(session, name)
            if row.state != officer_pb2.OFFICER_STATE_DISABLED:
                row.state = officer_pb2.OFFICER_STATE_DISABLED
                row.update_time = dt.datetime.now(dt.UTC)
                log.info("officer_disabled", officer=name, by=caller.resource_name)
            return _message(row)

    def _validate_create(self, request: service.CreateOfficerRequest) -> Unit | None:
        v = validation.Violations()
        validation.check_request_id(v, "request_id", request.request_id)
        if not OFFICER_ID.fullmatch(request.officer_id):
            v.add(
                "officer_id",
                "must be a lower-case letter then up to 62 lower-case letters, digits, hyphens",
            )
        officer = request.officer
        validation.check_person_name(
            v,
            "officer.display_name",
            officer.display_name,
            present=officer.HasField("display_name"),
        )
        if officer.role not in ROLE_LEVEL:
            v.add("officer.role", "must be set")
            v.raise_if_any()
        level = ROLE_LEVEL[officer.role]
        unit = None
        if officer.HasField("unit"):
            unit = validation.check_unit(v, "officer.unit", officer.unit, self._codes, present=True)
        elif level is not None:
            v.add("officer.unit", "is required for this role")
        v.raise_if_any()
        found_level = None if unit is None else unit.level
        if found_level != level:
            wanted = "no unit" if level is None else f"a {level.name.lower()}"
            raise FailedPrecondition(
                f"an account of role {officer_pb2.OfficerRole.Name(officer.role)} belongs to "
                f"{wanted}",
                reason="UNIT_LEVEL_MISMATCH",
            )
        return unit

    def _new_row(
        self,
        officer_id: str,
        name: person_name_pb2.PersonName,
        role: int,
        unit: Unit | None,
        request: tuple[str, str] | None,
    ) -> OfficerRow:
        now = dt.datetime.now(dt.UTC)
        return OfficerRow(
            officer_id=officer_id,
            identity=self.identity_of(officer_id),
            request_id=None if request is None else request[0],
            request_digest=None if request is None else request[1],
            display_name=json_format.MessageToDict(name, preserving_proto_field_name=True),
            role=role,
            unit_level=None if unit is None else int(unit.level),
            unit_code=None if unit is None else unit.code,
            province_code=None if unit is None else unit.province_code,
            district_code=None if unit is None else unit.district_code,
            state=officer_pb2.OFFICER_STATE_ACTIVE,
            create_time=now,
            update_time=now,
        )

    def _stored_answer(self, request_id: str, digest: str) -> officer_pb2.Officer | None:
        with self._reads() as session:
            row = session.scalars(
                select(OfficerRow).where(OfficerRow.request_id == request_id)
            ).one_or_none()
        if row is None:
            return None
        if row.request_digest != digest:
            raise AlreadyExists(
                "request_id was already used for a different account", reason="REQUEST_ID_REUSED"
            )
        return _message(row)

    def _row(self, session: Session, name: str) -> OfficerRow:
        row = session.scalars(
            select(OfficerRow).where(OfficerRow.officer_id == _officer_id_of(name))
        ).one_or_none()
        if row is None:
            raise NotFound(f"{name} does not exist")
        return row

    def _require_reader(self, caller: Officer, row: OfficerRow) -> None:
        if caller.officer_id == row.officer_id or caller.role == MINISTRY_ADMINISTRATOR:
            return
        place = _locality_of(row)
        if caller.role == PROVINCIAL_SUPERVISOR and place is not None and caller.sees(place):
            return
        raise out_of_scope(caller, f"officers/{row.officer_id}")

    def _locality_filter(self, v: validation.Violations, unit_code: str) -> Locality | None:
        level = _LEVEL_OF_LENGTH.get(len(unit_code))
        unit = None if level is None else self._codes.unit(level, unit_code)
        if unit is None:
            v.add("unit_code", "must be a province, district or commune code of the list")
            return None
        return Locality(unit.code, unit.province_code, unit.district_code)


def _officer_id_of(name: str) -> str:
    match = _NAME.fullmatch(name)
    if match is None:
        raise InvalidArgument([FieldViolation("name", "must be officers/{officer_id}")])
    return match.group(1)


def _within(unit_code: str) -> ColumnElement[bool]:
    level = _LEVEL_OF_LENGTH[len(unit_code)]
    column = {
        Level.PROVINCE: OfficerRow.province_code,
        Level.DISTRICT: OfficerRow.district_code,
        Level.COMMUNE: OfficerRow.unit_code,
    }[level]
    return column == unit_code


def _locality_of(row: OfficerRow) -> Locality | None:
    if row.unit_code is None or row.province_code is None:
        return None
    return Locality(row.unit_code, row.province_code, row.district_code)


def _officer_of(row: OfficerRow) -> Officer:
    return Officer(row.officer_id, row.role, _locality_of(row))


def _normalised(name: person_name_pb2.PersonName) -> person_name_pb2.PersonName:
    return person_name_pb2.PersonName(
        family_name=validation.normalise_name_part(name.family_name),
        middle_name=validation.normalise_name_part(name.middle_name),
        given_name=validation.normalise_name_part(name.given_name),
    )


def _message(row: OfficerRow) -> officer_pb2.Officer:
    officer = officer_pb2.Officer(
        name=f"officers/{row.officer_id}",
        display_name=json_format.ParseDict(row.display_name, person_name_pb2.PersonName()),
        role=officer_pb2.OfficerRole.ValueType(row.role),
        state=officer_pb2.OfficerState.ValueType(row.state),
        identity=row.identity,
    )
    if row.unit_code is not None and row.unit_level is not None:
        officer.unit.CopyFrom(
            administrative_unit_pb2.AdministrativeUnit(
                level=administrative_unit_pb2.AdministrativeLevel.ValueType(row.unit_level),
                code=row.unit_code,
            )
        )
    officer.create_time.FromDatetime(row.create_time)
    return officer
