"""Amendments within the grace window, and formal corrections after it.

TP HCM's request in the 2016 pilot: the registering unit may fix its own mistake for a while
after entry (``grace_window``, 24 hours by default) without the formal procedure. Each
amendment is recorded with its reason and SHA-256 digests of the registration before and
after. After the window, or from any other unit, only a formal correction may change the
data: it carries a decision number and date, and is decided by the registering commune for a
person under 14 on the decision date, by the district of the registering unit for 14 and
over (and for whatever a district registered).

The change and its outbox entry for the population database (justice_adapter.change_delivery)
commit together; the immediate attempt to deliver it follows, as for PIN requests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from google.protobuf import field_mask_pb2, json_format
from sqlalchemy import select

from justice_adapter.change_delivery import Delivery
from justice_adapter.evidence import NO_EXCHANGE, Event, ExchangeRef, record_event
from justice_adapter.models import BirthRegistrationRow, RegistrationChangeRow, to_message
from justice_adapter.registry import NAME_PATTERN, NAME_REGEX, normalise_names
from justice_adapter.scope import COMMUNE_OFFICER, DISTRICT_OFFICER, Officer
from justice_adapter.validation import validate_register_birth
from lienthong import validation
from lienthong.calendar.v1 import date_pb2
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import birth_registration_service_pb2 as service
from lienthong.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from lienthong.reference import Level

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from justice_adapter.change_delivery import ChangeOutbox
    from justice_adapter.outbox import Clock
    from lienthong.reference import CodeLists

log = structlog.get_logger(__name__)

# Raises PermissionDenied or FailedPrecondition when the officer may not make the change.
_Authorise = Callable[[BirthRegistrationRow, Officer, "_Change"], None]

DEFAULT_GRACE_WINDOW = dt.timedelta(hours=24)
MAX_REASON = 500
MAX_DECISION_NUMBER = 100
ADULT_AGE = 14  # corrections for persons of this age and over are decided by a district
AMENDMENT = "amendment"
CORRECTION = "correction"

# The paths of BirthRegistration a change may touch, and the path of population.v1.Citizen
# each becomes there (None: the population database does not keep it). The unit, procedure
# and nationality decide the registration's number and whether it has a PIN at all: they are
# not changed, a wrong one is a matter for a new registration.
CHANGEABLE: dict[str, str | None] = {
    "child.name": "full_name",
    "child.sex": "sex",
    "child.date_of_birth": "date_of_birth",
    "child.place_of_birth": None,
    "child.home_town": "home_town",
    "child.ethnicity": "ethnicity",
    "father": "father",
    "mother": "mother",
    "declarant": None,
    "legal_representative": "legal_representative",
}


@dataclass(frozen=True)
class ChangeResult:
    """A registration after a change, and what the change did to its PIN so far."""

    registration: br.BirthRegistration
    cancelled_pin: str
    population_update_pending: bool


@dataclass(frozen=True)
class _Change:
    """A validated request: what to change and why."""

    kind: str
    request_id: str
    digest: str
    name: str
    submitted: br.BirthRegistration
    paths: list[str]
    reason: str
    decision_number: str | None = None
    decision_date: dt.date | None = None


class RegistrationChanges:
    """Amends and corrects registrations, and hands the changes to the change outbox."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        outbox: ChangeOutbox,
        codes: CodeLists,
        *,
        grace_window: dt.timedelta = DEFAULT_GRACE_WINDOW,
        clock: Clock,
    ) -> None:
        """``clock`` tells the time the grace window is measured by."""
        self._sessions = sessions
        self._outbox = outbox
        self._codes = codes
        self._grace_window = grace_window
        self._clock = clock

    def amend(
        self,
        request: service.AmendBirthRegistrationRequest,
        officer: Officer,
        exchange: ExchangeRef = NO_EXCHANGE,
    ) -> ChangeResult:
        """Amend a registration of ``officer``'s own unit within the grace window."""
        officer.require_writer()
        v = validation.Violations()
        paths = _common_checks(v, request)
        if not request.reason.strip():
            v.add("reason", "is required")
        elif len(request.reason) > MAX_REASON:
            v.add("reason", f"must be at most {MAX_REASON} characters")
        v.raise_if_any()
        change = _Change(
            AMENDMENT,
            request.request_id,
            _digest(request),
            request.birth_registration.name,
            request.birth_registration,
            paths,
            request.reason,
        )
        return self._apply(change, (officer, exchange), self._check_amendable)

    def correct(
        self,
        request: service.CorrectBirthRegistrationRequest,
        officer: Officer,
        exchange: ExchangeRef = NO_EXCHANGE,
    ) -> ChangeResult:
        """Record a formal correction decided by the competent unit."""
        officer.require_writer()
        v = validation.Violations()
        paths = _common_checks(v, request)
        decision = request.decision
        if not decision.number.strip():
            v.add("decision.number", "is required")
        elif len(decision.number) > MAX_DECISION_NUMBER:
            v.add("decision.number", f"must be at most {MAX_DECISION_NUMBER} characters")
        decided = None
        if not request.HasField("decision") or not decision.HasField("date"):
            v.add("decision.date", "is required")
        else:
            try:
                decided = dt.date(decision.date.year, decision.date.month, decision.date.day)
            except ValueError:
                v.add("decision.date", "must be a complete, existing calendar date")
            else:
                if decided > validation.today():
                    v.add("decision.date", "must not be in the future")
        v.raise_if_any()
        change = _Change(
            CORRECTION,
            request.request_id,
            _digest(request),
            request.birth_registration.name,
            request.birth_registration,
            paths,
            f"decision {decision.number}",
            decision.number,
            decided,
        )
        return self._apply(change, (officer, exchange), self._check_competent)

    def _apply(
        self, change: _Change, by: tuple[Officer, ExchangeRef], authorise: _Authorise
    ) -> ChangeResult:
        officer, exchange = by
        repeat = self._stored_answer(change)
        if repeat is not None:
            return repeat
        with self._sessions.begin() as session:
            row = session.scalars(
                select(BirthRegistrationRow)
                .where(BirthRegistrationRow.name == change.name)
                .with_for_update()
            ).one_or_none()
            if row is None:
                raise NotFound(f"{change.name} does not exist")
            authorise(row, officer, change)
            _require_settled(session, row)
            before = to_message(row)
            after = self._changed(before, change)
            due = row.pin_status == br.PIN_STATUS_ISSUED and row.pin is not None
            citizen_paths = sorted(
                {path for p in change.paths if (path := CHANGEABLE[p]) is not None}
            )
            if not due:
                citizen_paths = []
            now = self._clock()
            lease_end = self._outbox.claim_on_entry()
            row.record = json_format.MessageToDict(
                _record_of(after), preserving_proto_field_name=True
            )
            row.update_time = now
            record = RegistrationChangeRow(
                registration_id=row.id,
                request_id=change.request_id,
                request_digest=change.digest,
                kind=change.kind,
                paths=change.paths,
                reason=change.reason,
                decision_number=change.decision_number,
                decision_date=change.decision_date,
                officer_id=officer.officer_id,
                before_digest=registration_digest(before),
                after_digest=registration_digest(after),
                citizen_paths=citizen_paths,
                delivery=Delivery.PENDING if citizen_paths else Delivery.NONE,
                attempts=0,
                next_attempt_at=lease_end if citizen_paths else None,
                create_time=now,
            )
            session.add(record)
            session.flush()
            change_id = record.id
            record_event(
                session,
                registration_id=row.id,
                event=Event.AMENDED if change.kind == AMENDMENT else Event.CORRECTED,
                exchange=exchange,
                record=row.record,
            )
        log.info(
            "registration_changed",
            kind=change.kind,
            birth_registration=change.name,
            request_id=change.request_id,
            paths=change.paths,
            officer=officer.resource_name,
            before_digest=record.before_digest,
            after_digest=record.after_digest,
        )
        if citizen_paths:
            self._outbox.deliver_new(change_id, lease_end)
        return self._result(change_id)

    def _check_amendable(
        self, row: BirthRegistrationRow, officer: Officer, change: _Change
    ) -> None:
        del change
        if officer.unit is None or officer.unit.unit_code != row.unit_code:
            raise PermissionDenied(
                f"only the registering unit {row.unit_code} may amend {row.name}; any other "
                "change needs the formal correction procedure (CorrectBirthRegistration)",
                reason="OTHER_UNIT",
            )
        entered = row.create_time
        if self._clock() - entered > self._grace_window:
            hours = self._grace_window.total_seconds() / 3600
            raise FailedPrecondition(
                f"the grace window of {hours:g} hours after entry has closed: the change needs "
                "the formal correction procedure (CorrectBirthRegistration) with a decision "
                "number and date",
                reason="GRACE_WINDOW_CLOSED",
            )

    def _check_competent(
        self, row: BirthRegistrationRow, officer: Officer, change: _Change
    ) -> None:
        """Commune for persons under 14 on the decision date, district for 14 and over."""
        stored = to_message(row)
        assert change.decision_date is not None  # noqa: S101 - validated by correct()
        age = _age(stored.child.date_of_birth, change.decision_date)
        by_district = age >= ADULT_AGE or row.unit_level == Level.DISTRICT
        unit = officer.unit
        if by_district:
            if (
                officer.role == DISTRICT_OFFICER
                and unit is not None
                and unit.district_code == row.district_code
            ):
                return
            who = f"the district {row.district_code}"
        else:
            if (
                officer.role == COMMUNE_OFFICER
                and unit is not None
                and unit.unit_code == row.unit_code
            ):
                return
            who = f"the registering commune {row.unit_code}"
        raise PermissionDenied(
            f"a correction of {row.name} (a person of {age} on the decision date) is decided "
            f"by {who}",
            reason="NOT_COMPETENT",
        )

    def _changed(self, before: br.BirthRegistration, change: _Change) -> br.BirthRegistration:
        after = br.BirthRegistration()
        after.CopyFrom(before)
        mask = field_mask_pb2.FieldMask(paths=change.paths)
        mask.MergeMessage(
            change.submitted, after, replace_message_field=True, replace_repeated_field=True
        )
        # The new values are checked as a whole registration, with the request's paths.
        check = service.RegisterBirthRequest(
            request_id=change.request_id, birth_registration=_record_of(after)
        )
        validate_register_birth(check, self._codes)
        normalise_names(after)
        return after

    def _stored_answer(self, change: _Change) -> ChangeResult | None:
        with self._sessions() as session:
            stored = session.scalars(
                select(RegistrationChangeRow).where(
                    RegistrationChangeRow.request_id == change.request_id
                )
            ).one_or_none()
            if stored is None:
                return None
            if stored.request_digest != change.digest:
                raise AlreadyExists(
                    "request_id was already used for a different change",
                    reason="REQUEST_ID_REUSED",
                )
            change_id = stored.id
        return self._result(change_id)

    def _result(self, change_id: int) -> ChangeResult:
        with self._sessions() as session:
            change = session.get_one(RegistrationChangeRow, change_id)
            row = session.get_one(BirthRegistrationRow, change.registration_id)
            return ChangeResult(
                registration=to_message(row),
                cancelled_pin=change.cancelled_pin or "",
                population_update_pending=change.delivery == Delivery.PENDING,
            )


def _common_checks(
    v: validation.Violations,
    request: service.AmendBirthRegistrationRequest | service.CorrectBirthRegistrationRequest,
) -> list[str]:
    validation.check_request_id(v, "request_id", request.request_id)
    if not NAME_REGEX.fullmatch(request.birth_registration.name):
        v.add("birth_registration.name", f"must be {NAME_PATTERN}")
    paths = list(dict.fromkeys(request.update_mask.paths))
    if not paths:
        v.add("update_mask", "must name at least one field")
    if unknown := [path for path in paths if path not in CHANGEABLE]:
        v.add(
            "update_mask.paths",
            f"{validation.describe_paths(unknown)} cannot be changed; "
            f"changeable: {', '.join(CHANGEABLE)}",
        )
    return paths


def _require_settled(session: Session, row: BirthRegistrationRow) -> None:
    """Refuse a change while the PIN or an earlier change is still on its way."""
    if row.pin_status == br.PIN_STATUS_PENDING:
        raise FailedPrecondition(
            f"the PIN of {row.name} has been requested and not received yet; change the "
            "registration once it is issued",
            reason="PIN_PENDING",
        )
    pending = session.scalars(
        select(RegistrationChangeRow.id).where(
            RegistrationChangeRow.registration_id == row.id,
            RegistrationChangeRow.delivery == Delivery.PENDING,
        )
    ).first()
    if pending is not None:
        raise FailedPrecondition(
            f"an earlier change of {row.name} has not reached the population database yet",
            reason="CHANGE_PENDING",
        )


def _record_of(registration: br.BirthRegistration) -> br.BirthRegistration:
    """The registration as the ``record`` column keeps it.

    That is without its output-only fields, except the registering officer, recorded at entry.
    """
    record = br.BirthRegistration()
    record.CopyFrom(registration)
    officer = record.registering_officer
    for field in (
        "name",
        "registration_number",
        "registration_date",
        "personal_identification_number",
        "pin_status",
        "create_time",
        "update_time",
        "cancelled_personal_identification_numbers",
    ):
        record.ClearField(field)
    record.registering_officer = officer
    return record


def registration_digest(registration: br.BirthRegistration) -> str:
    """SHA-256 of a registration's record, as changes record it before and after."""
    return hashlib.sha256(
        _record_of(registration).SerializeToString(deterministic=True)
    ).hexdigest()


def _digest(
    request: service.AmendBirthRegistrationRequest | service.CorrectBirthRegistrationRequest,
) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def _age(born: date_pb2.Date, on: dt.date) -> int:
    """Completed years of age on ``on``."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
