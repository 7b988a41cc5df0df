"""Reconciliation time for one province of ``--count`` registrations (issue 9, acceptance 3).

Runs the whole stack as `make run` does (`lienthong run`, three processes, the development
configuration and certificates) on fresh databases, writes ``--count`` consistent pairs
straight into both (pilot registrations, all in Hà Nội, each with its citizen record and
history, as the real path leaves them: replaying them through the gateway would take the
replay's time, measured by replay_bench.py), then times one `Reconcile` of province 01
through the gateway as the ministry administrator: the population database's digests read
through the gateway, the registry's computed and compared. The development ports (50051,
50061, 50071) must be free.

    .venv/bin/python bench/reconcile_bench.py [--count 100000] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy
from dev_stack import CONFIG, dev_stack
from google.protobuf import json_format
from sqlalchemy import insert

from justice_adapter.evidence import record_digest
from justice_adapter.models import BirthRegistrationRow, RegistrationEventRow
from justice_adapter.pin_requests import registered_birth
from justice_adapter.registry import PIN_PROCEDURES
from lienthong import pilot, pin, validation
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.config import load_config
from lienthong.place.v1 import administrative_unit_pb2 as au
from lienthong.reconcile import reconcile
from lienthong.reference import CodeLists, Level, code_lists
from lienthong.tls import secure_channel
from police_adapter.history import digest
from police_adapter.models import CitizenChange, CitizenRecord

PROVINCE = "01"
CHUNK = 5_000


def main() -> int:
    """Seed, reconcile once, print the figures."""
    arguments = _parser().parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="reconcile_bench-") as directory,
        dev_stack(arguments.backend, Path(directory)) as (environ, urls),
    ):
        started = time.monotonic()
        issued = _seed(urls, arguments.count, code_lists())
        print(
            f"{arguments.backend}: seeded {arguments.count:,} registrations, {issued:,} "
            f"with a citizen record, in {time.monotonic() - started:.1f} s (not timed)"
        )
        config = load_config(CONFIG, environ)
        today = validation.today()
        with secure_channel(config.gateway.listen, config.demo_tls.read()) as channel:
            started = time.monotonic()
            outcome = reconcile(channel, PROVINCE, start=today, end=today)
            seconds = time.monotonic() - started
    summary = outcome.summary
    print(
        f"{arguments.backend}: reconciled {summary.registrations:,} registrations with "
        f"{summary.citizen_records:,} citizen records in {seconds:.1f} s "
        f"({summary.registrations / seconds:,.0f}/s); findings: {summary.findings}"
    )
    return 0 if summary.findings == 0 else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    return parser


def _seed(urls: dict[str, str], count: int, codes: CodeLists) -> int:
    """Write ``count`` registrations of Hà Nội and their records; the number given a PIN."""
    communes = [
        u for u in codes.units.values() if u.level == Level.COMMUNE and u.province_code == PROVINCE
    ]
    districts = [
        u for u in codes.units.values() if u.level == Level.DISTRICT and u.province_code == PROVINCE
    ]
    rng = random.Random(9)  # noqa: S311 - invented data
    justice = sqlalchemy.create_engine(urls["justice"])
    police = sqlalchemy.create_engine(urls["police"])
    today = validation.today()
    now = dt.datetime.now(dt.UTC)
    serials: dict[str, int] = {}
    rows = _Rows()
    issued = 0
    with justice.connect() as connection:
        first_id = (
            connection.execute(
                sqlalchemy.select(sqlalchemy.func.max(BirthRegistrationRow.id))
            ).scalar()
            or 0
        ) + 1
    for index, request in enumerate(pilot.pilot_registrations(codes, count, seed=9)):
        record = request.birth_registration
        at_district = record.registration_unit.level == au.ADMINISTRATIVE_LEVEL_DISTRICT
        unit = rng.choice(districts if at_district else communes)
        record.registration_unit.code = unit.code
        record.registering_officer = "officers/bench"
        row_id = first_id + index
        name = f"birthRegistrations/{unit.code}-{today.year}-{100_000 + index}"
        stored = json_format.MessageToDict(record, preserving_proto_field_name=True)
        due = validation.is_vietnamese(record.child.nationality) and (
            record.procedure in PIN_PROCEDURES
        )
        number = None
        if due:
            prefix = pin.prefix(
                codes.pin_province_code(unit), record.child.date_of_birth.year, record.child.sex
            )
            serials[prefix] = serials.get(prefix, 500_000) + 1
            number = f"{prefix}{serials[prefix]:06d}"
        status = br.PIN_STATUS_ISSUED if due else br.PIN_STATUS_NOT_APPLICABLE
        rows.registrations.append({
            "id": row_id, "name": name, "request_id": str(uuid.uuid4()), "request_digest": "0" * 64,
            "procedure": record.procedure, "unit_level": unit.level, "unit_code": unit.code,
            "province_code": unit.province_code, "district_code": unit.district_code,
            "registration_year": today.year, "registration_number": 100_000 + index,
            "registration_date": today, "record": stored, "child_nationality_vn": due,
            "pin": number, "pin_status": status,
            "pin_attempts": 1 if due else 0, "pin_next_attempt_at": None, "pin_last_error": None,
            "create_time": now, "update_time": now,
        })  # fmt: skip
        rows.events.append({
            "registration_id": row_id, "event": "REGISTERED", "exchange_id": None,
            "leaf_index": None, "request_id": None, "record_digest": record_digest(stored),
            "previous_pin": None, "create_time": now,
        })  # fmt: skip
        if number is not None:
            issued += 1
            message = br.BirthRegistration()
            message.CopyFrom(record)
            message.name = name
            data = json_format.MessageToDict(
                registered_birth(message), preserving_proto_field_name=True
            )
            request_id = rows.registrations[-1]["request_id"]
            rows.citizens.append({
                "pin": number, "state": 1, "birth_registration": name, "request_id": request_id,
                "province_code": number[:3], "sex": record.child.sex,
                "birth_year": record.child.date_of_birth.year, "data": data, "replaced_by": None,
                "create_time": now, "update_time": now,
            })  # fmt: skip
            rows.history.append({
                "pin": number, "kind": "ISSUED", "fields": [], "before_sha256": None,
                "after_sha256": digest(data), "related_pin": None, "request_id": request_id,
                "request_sha256": hashlib.sha256(request_id.encode()).hexdigest(),
                "exchange_id": None, "exchange_leaf": None, "caller": None, "on_behalf_of": None,
                "reason": None, "create_time": now,
            })  # fmt: skip
        if len(rows.registrations) >= CHUNK:
            rows.flush(justice, police)
    rows.flush(justice, police)
    justice.dispose()
    police.dispose()
    return issued


@dataclass
class _Rows:
    """Rows written a chunk at a time."""

    registrations: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    citizens: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def flush(self, justice: sqlalchemy.Engine, police: sqlalchemy.Engine) -> None:
        with justice.begin() as connection:
            if self.registrations:
                connection.execute(insert(BirthRegistrationRow), self.registrations)
                connection.execute(insert(RegistrationEventRow), self.events)
        with police.begin() as connection:
            if self.citizens:
                connection.execute(insert(CitizenRecord), self.citizens)
                connection.execute(insert(CitizenChange), self.history)
        for batch in (self.registrations, self.events, self.citizens, self.history):
            batch.clear()


if __name__ == "__main__":
    sys.exit(main())
