"""ListCitizenDigests: what a reconciliation learns of one province's citizen records.

For each record its PIN, state and source registration, salted digests of its fields (never
the values: lienthong.field_digests), the changes its history records with their audit log
leaves, and whether its data is what the last of them left. Records are read in batches by
keyset on the PIN, each batch in its own short read transaction, so a province of millions
streams without one snapshot held open for the whole run.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import structlog
from google.protobuf import json_format
from sqlalchemy import Row, select
from sqlalchemy.orm import Session, sessionmaker

from lienthong.field_digests import FIELDS, field_digests
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2
from lienthong.reference import CodeLists
from lienthong.stored_json import parse_stored
from police_adapter.history import digest
from police_adapter.models import CitizenChange, CitizenRecord
from police_adapter.validation import validate_digests_request

log = structlog.get_logger(__name__)

BATCH = 500

# The columns read of a record and of a change.
_Record = Row[str, int, str, str | None, dict[str, Any], dt.datetime]
_Change = Row[str, str, str | None, int | None, str | None, dt.datetime]


class CitizenDigestLister:
    """Lists citizen records as digests over one database."""

    def __init__(self, sessions: sessionmaker[Session], codes: CodeLists) -> None:
        """Read with ``sessions`` (read-only ones spare SQLite's write lock)."""
        self._sessions = sessions
        self._codes = codes

    def list(
        self, request: citizen_service_pb2.ListCitizenDigestsRequest
    ) -> Iterator[citizen_service_pb2.ListCitizenDigestsResponse]:
        """Check the request now, then stream the batches as they are read."""
        province = validate_digests_request(request, self._codes)
        since = (
            request.create_time_from.ToDatetime(tzinfo=dt.UTC)
            if request.HasField("create_time_from")
            else None
        )
        return self._batches(province, since, request.salt, request.province_code)

    def _batches(
        self, province: str, since: dt.datetime | None, salt: bytes, province_code: str
    ) -> Iterator[citizen_service_pb2.ListCitizenDigestsResponse]:
        digester = _Digester(salt)
        # The PINs of a province are one range of the primary key: the scan stays inside it.
        query = (
            select(
                CitizenRecord.pin,
                CitizenRecord.state,
                CitizenRecord.birth_registration,
                CitizenRecord.replaced_by,
                CitizenRecord.data,
                CitizenRecord.create_time,
            )
            .where(
                CitizenRecord.pin.between(f"{province}000000000", f"{province}999999999"),
                CitizenRecord.province_code == province,
            )
            .order_by(CitizenRecord.pin)
            .limit(BATCH)
        )
        if since is not None:
            query = query.where(CitizenRecord.create_time >= since)
        count = 0
        after = ""
        while True:
            with self._sessions() as session:
                records = session.execute(query.where(CitizenRecord.pin > after)).all()
                changes = _changes(session, [record.pin for record in records])
            if records:
                batch = citizen_service_pb2.ListCitizenDigestsResponse()
                for record in records:
                    _describe(batch.citizens.add(), record, changes[record.pin], digester)
                yield batch
            count += len(records)
            if len(records) < BATCH:
                break
            after = records[-1].pin
        log.info("citizen_digests_listed", province_code=province_code, count=count)


def _changes(session: Session, pins: list[str]) -> dict[str, list[_Change]]:
    """The history rows of ``pins``, oldest first, by PIN: one query for a whole batch."""
    by_pin: dict[str, list[_Change]] = defaultdict(list)
    if not pins:
        return by_pin
    rows = session.execute(
        select(
            CitizenChange.pin,
            CitizenChange.kind,
            CitizenChange.exchange_id,
            CitizenChange.exchange_leaf,
            CitizenChange.after_sha256,
            CitizenChange.create_time,
        )
        .where(CitizenChange.pin.in_(pins))
        .order_by(CitizenChange.id)
    )
    for row in rows:
        by_pin[row.pin].append(row)
    return by_pin


def _describe(
    citizen: citizen_service_pb2.CitizenDigest,
    record: _Record,
    changes: Sequence[_Change],
    digester: _Digester,
) -> None:
    """Fill ``citizen`` (built in place: copying messages into the batch costs)."""
    citizen.personal_identification_number = record.pin
    citizen.state = record.state
    citizen.birth_registration = record.birth_registration
    citizen.replaced_by = record.replaced_by or ""
    citizen.create_time.FromDatetime(_utc(record.create_time))
    for field, sha256 in digester(record.data).items():
        citizen.field_digests.add(field=field, sha256=sha256)
    for change in changes:
        event = citizen.events.add(kind=change.kind, exchange_id=change.exchange_id or "")
        if change.exchange_leaf is not None:
            event.leaf_index = change.exchange_leaf
        event.time.FromDatetime(_utc(change.create_time))
    # What the newest change that left data says the data is; a CANCELLED change left none.
    left = next((change.after_sha256 for change in reversed(changes) if change.after_sha256), None)
    citizen.intact = left is not None and left == digest(record.data)


def _utc(value: dt.datetime) -> dt.datetime:
    """SQLite returns the UTC times it stores without their zone."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class _Digester:
    """field_digests of stored records, robust to data altered outside the recorded path."""

    def __init__(self, salt: bytes) -> None:
        self._salt = salt

    def __call__(self, data: object) -> dict[str, bytes]:
        if not isinstance(data, dict):
            return {}
        try:
            birth = parse_stored(data, citizen_pb2.RegisteredBirth())
        except json_format.ParseError:
            return self._field_by_field(data)
        return field_digests(birth, self._salt)

    def _field_by_field(self, data: dict[str, Any]) -> dict[str, bytes]:
        """Digest the fields that still parse; one that does not has no digest, so it differs.

        One damaged record must not stop the listing of its province: the registry sees
        its fields differ and intact false.
        """
        digests = {}
        for field in FIELDS:
            if field not in data:
                continue
            try:
                only = json_format.ParseDict({field: data[field]}, citizen_pb2.RegisteredBirth())
            except json_format.ParseError:
                continue
            digests.update(field_digests(only, self._salt))
        return digests
