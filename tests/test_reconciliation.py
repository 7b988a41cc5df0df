"""Reconciliation of the registry with the population database, through the real stack.

1,000 pilot registrations go the real path (officer -> gateway -> registry -> gateway ->
population database); drift is then written straight into the databases, as a faulty
migration or a hand edit would, and the reconciliation must find exactly that drift, cite
the audit log's exchanges behind each record, and repair it through the normal paths.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import Engine, create_engine, delete, make_url, select, update
from stack import Stack, officer_tls, start_stack

from certs.pki import BOOTSTRAP_ADMINISTRATOR
from gateway.audit.entry import AuditEntry
from gateway.audit.store import entry_table
from justice_adapter.change_delivery import update_request_id
from justice_adapter.models import BirthRegistrationRow
from justice_adapter.registry import unit_of_code
from justice_adapter.repairs import repair_request_id
from lienthong import metadata, pin, replay, validation
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import reconciliation_service_pb2 as rc
from lienthong.civilregistry.v1 import reconciliation_service_pb2_grpc as rc_grpc
from lienthong.person.v1 import sex_pb2
from lienthong.reconcile import Outcome, findings_table, reconcile, write_jsonl
from lienthong.reference import code_lists
from lienthong.tls import TlsFiles
from police_adapter.models import CitizenRecord

SEEDED = 500  # a mix of the pilot's outcomes; the scale is bench/reconcile_bench.py's
# The seed takes the whole real path (55 s among three busy workers) and its setup counts
# against the first test's time limit.
pytestmark = pytest.mark.timeout(300)
REGISTER = "/lienthong.civilregistry.v1.BirthRegistrationService/RegisterBirth"
ISSUE = "/lienthong.population.v1.CitizenService/IssuePersonalIdentificationNumber"
UPDATE = "/lienthong.population.v1.CitizenService/UpdateCitizen"
RECONCILE = "/lienthong.civilregistry.v1.ReconciliationService/Reconcile"
CANCELLED = 2  # citizen_pb2.CITIZEN_STATE_CANCELLED


@dataclass(frozen=True)
class Seeded:
    """The running stack after the seeding, with its databases opened beside it."""

    stack: Stack
    justice: Engine
    police: Engine
    audit: Engine
    issued: list[BirthRegistrationRow]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request, pki, tmp_path_factory) -> Iterator[Seeded]:
    directory: Path = tmp_path_factory.mktemp("reconciliation")
    with ExitStack() as cleanup:
        urls = {name: f"sqlite:///{directory / name}.db" for name in ("justice", "police", "audit")}
        if request.param == "postgresql":
            server = request.getfixturevalue("postgres_server")
            urls = cleanup.enter_context(_postgres_databases(server))
        stack = start_stack(pki, directory, databases=urls)
        cleanup.callback(stack.stop_all)
        outcome = replay.replay(
            stack.gateway_address,
            _admin_tls(stack),
            pki.directory,
            code_lists(),
            count=SEEDED,
            concurrency=16,
            officers=0,
            out=io.StringIO(),
        )
        assert dict(outcome.codes) == {"OK": SEEDED}
        engines = [create_engine(urls[name]) for name in ("justice", "police", "audit")]
        for engine in engines:
            cleanup.callback(engine.dispose)
        _wait_until_settled(engines[0])
        with engines[0].connect() as connection:
            issued = list(
                connection.execute(
                    select(BirthRegistrationRow.__table__)
                    .where(BirthRegistrationRow.pin_status == br.PIN_STATUS_ISSUED)
                    .order_by(BirthRegistrationRow.id)
                ).all()
            )
        yield Seeded(stack, *engines, issued=issued)  # type: ignore[arg-type]


@contextmanager
def _postgres_databases(server: str) -> Iterator[dict[str, str]]:
    """Three fresh PostgreSQL databases, dropped afterwards."""
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    names = {name: f"lienthong_test_{name}_{uuid.uuid4().hex[:8]}" for name in
             ("justice", "police", "audit")}  # fmt: skip
    try:
        yield {
            name: make_url(server).set(database=database).render_as_string(hide_password=False)
            for name, database in names.items()
        }  # the services create them at start
    finally:
        with admin.connect() as connection:
            for database in names.values():
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.dispose()


def _admin_tls(stack: Stack) -> TlsFiles:
    return officer_tls(stack.pki, BOOTSTRAP_ADMINISTRATOR)


def _wait_until_settled(justice: Engine, timeout: float = 60.0) -> None:
    """Until no registration waits for its PIN."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with justice.connect() as connection:
            pending = connection.execute(
                select(BirthRegistrationRow.id).where(
                    BirthRegistrationRow.pin_status == br.PIN_STATUS_PENDING
                )
            ).first()
        if pending is None:
            return
        time.sleep(0.2)
    raise AssertionError("registrations still wait for their PIN")


def _reconcile_all(stack: Stack, **options) -> Outcome:
    """Reconcile every pilot province for today, as the ministry administrator."""
    today = validation.today()
    codes = code_lists()
    # The provinces of the five pilot localities.
    provinces = sorted({unit_of_code(codes, code).province_code for code in replay.LOCALITIES})
    findings: list[rc.Finding] = []
    totals = rc.ReconciliationSummary()
    with stack.administrator() as channel:
        for province in provinces:
            outcome = reconcile(channel, province, start=today, end=today, **options)
            findings.extend(outcome.findings)
            totals.registrations += outcome.summary.registrations
            totals.citizen_records += outcome.summary.citizen_records
            totals.findings += outcome.summary.findings
            totals.repairs_queued += outcome.summary.repairs_queued
    return Outcome(findings, totals)


def _audit_entry(audit: Engine, leaf_index: int) -> AuditEntry:
    with audit.connect() as connection:
        data = connection.execute(
            select(entry_table.c.entry).where(entry_table.c.leaf_index == leaf_index)
        ).scalar_one()
    return AuditEntry.decode(bytes(data))


def _police_data(seeded: Seeded, pin_value: str) -> dict:
    with seeded.police.connect() as connection:
        return dict(
            connection.execute(
                select(CitizenRecord.data).where(CitizenRecord.pin == pin_value)
            ).scalar_one()
        )


def _set_police_data(seeded: Seeded, pin_value: str, data: dict) -> None:
    with seeded.police.begin() as connection:
        connection.execute(
            update(CitizenRecord).where(CitizenRecord.pin == pin_value).values(data=data)
        )


def _unused_pin(seeded: Seeded, like: str) -> str:
    """A PIN of the same prefix that nobody holds."""
    with seeded.police.connect() as connection:
        taken = set(connection.execute(select(CitizenRecord.pin)).scalars())
    serial = 999_999
    while f"{like[:6]}{serial:06d}" in taken:
        serial -= 1
    return f"{like[:6]}{serial:06d}"


def test_a_consistent_seed_has_no_finding(seeded: Seeded) -> None:
    outcome = _reconcile_all(seeded.stack)
    assert outcome.findings == []
    assert outcome.summary.registrations == SEEDED
    assert outcome.summary.citizen_records == len(seeded.issued)
    assert len(seeded.issued) > SEEDED * 0.9  # the pilot's mix: 95% are given a PIN


DRIFTS = ("missing", "renamed", "redated", "mother", "cancelled", "unrecorded", "mispinned",
          "duplicate", "stale", "resexed")  # fmt: skip


def _inject_drift(seeded: Seeded) -> dict[str, Any]:
    """Ten kinds of drift, each on its own registration, written straight into a database."""
    rows = dict(zip(DRIFTS, seeded.issued, strict=False))
    # Whose PIN "duplicate" is given: a registration of the same province.
    rows["owner"] = next(
        row
        for row in seeded.issued[len(DRIFTS) :]
        if row.province_code == rows["duplicate"].province_code
    )
    # In the population database, as a direct edit would leave it.
    with seeded.police.begin() as connection:
        for name in ("missing", "stale"):
            connection.execute(delete(CitizenRecord).where(CitizenRecord.pin == rows[name].pin))
        connection.execute(
            update(CitizenRecord)
            .where(CitizenRecord.pin == rows["cancelled"].pin)
            .values(state=CANCELLED)
        )
    for name, path, change in (
        ("renamed", ("full_name", "given_name"), lambda _old: "TAMPERED"),
        ("redated", ("date_of_birth", "day"), lambda old: 1 if old != 1 else 2),
        ("mother", ("mother", "full_name", "family_name"), lambda _old: "KHÁC"),
        ("resexed", ("sex",), lambda old: "SEX_FEMALE" if old == "SEX_MALE" else "SEX_MALE"),
    ):
        data = _police_data(seeded, rows[name].pin)
        *parents, leaf = path
        holder = data
        for key in parents:
            holder = holder[key]
        holder[leaf] = change(holder[leaf])
        _set_police_data(seeded, rows[name].pin, data)
    # In the registry.
    now = dt.datetime.now(dt.UTC)
    never = now + dt.timedelta(days=30)
    table = BirthRegistrationRow.__table__
    with seeded.justice.begin() as connection:
        for name, values in (
            ("unrecorded", {"pin": None, "pin_status": br.PIN_STATUS_PENDING,
                            "pin_next_attempt_at": never}),
            ("mispinned", {"pin": _unused_pin(seeded, rows["mispinned"].pin)}),
            ("duplicate", {"pin": rows["owner"].pin}),
            ("stale", {"pin": None, "pin_status": br.PIN_STATUS_PENDING,
                       "pin_next_attempt_at": never, "update_time": now - dt.timedelta(days=3)}),
        ):  # fmt: skip
            connection.execute(update(table).where(table.c.id == rows[name].id).values(**values))
    return rows


def _expected(rows: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...]]]:
    kinds = {
        "missing": ("CITIZEN_MISSING", ()),
        "renamed": ("FIELD_MISMATCH", ("full_name",)),
        "redated": ("FIELD_MISMATCH", ("date_of_birth",)),
        "mother": ("FIELD_MISMATCH", ("mother",)),
        "resexed": ("FIELD_MISMATCH", ("sex",)),
        "cancelled": ("CANCELLED_PIN_IN_USE", ()),
        "unrecorded": ("PIN_NOT_RECORDED", ()),
        "mispinned": ("PIN_MISMATCH", ()),
        "duplicate": ("DUPLICATE_PIN", ()),
        "stale": ("PIN_PENDING_TOO_LONG", ()),
    }
    return {(rows[name].name, f"FINDING_KIND_{kind}", fields)
            for name, (kind, fields) in kinds.items()}  # fmt: skip


def _assert_cites_its_exchanges(seeded: Seeded, finding: rc.Finding, rows: dict[str, Any]) -> None:
    """The registration's RegisterBirth, and the IssuePersonalIdentificationNumber of each
    population record involved, read back from the audit log at the cited leaves."""
    by_name = {row.name: row for row in rows.values()}
    name = finding.birth_registration
    involved = {
        rows["missing"].name: [],
        rows["stale"].name: [],
        rows["duplicate"].name: [rows["owner"], rows["duplicate"]],
    }.get(name, [by_name[name]])
    cited = []
    for exchange in finding.exchanges:
        entry = _audit_entry(seeded.audit, exchange.leaf_index)
        assert entry.kind == "request"
        assert entry.exchange_id == exchange.exchange_id
        side = rc.RecordSide.Name(exchange.side)
        cited.append((side, exchange.event, entry.method, entry.request_id))
    assert sorted(cited) == sorted(
        [("RECORD_SIDE_REGISTRY", "REGISTERED", REGISTER, by_name[name].request_id)]
        + [("RECORD_SIDE_POPULATION", "ISSUED", ISSUE, row.request_id) for row in involved]
    ), name


def test_ten_kinds_of_drift_are_found_cited_and_repaired(seeded: Seeded) -> None:
    rows = _inject_drift(seeded)
    expected = _expected(rows)

    outcome = _reconcile_all(seeded.stack)

    found = {(f.birth_registration, rc.FindingKind.Name(f.kind), tuple(f.fields)): f
             for f in outcome.findings}  # fmt: skip
    assert set(found) == expected
    assert len(outcome.findings) == len(expected) == outcome.summary.findings
    for finding in outcome.findings:
        _assert_cites_its_exchanges(seeded, finding, rows)
        assert finding.repair_action != rc.REPAIR_ACTION_NONE
        assert finding.registry_record_intact
    tampered = found[rows["renamed"].name, "FINDING_KIND_FIELD_MISMATCH", ("full_name",)]
    assert not tampered.population_record_intact
    assert tampered.repair_action == rc.REPAIR_ACTION_RESEND_FIELDS

    # The report and its export carry identifiers only, never the tampered name.
    table_text = findings_table(outcome, code_lists())
    assert "FIELD_MISMATCH" in table_text
    assert f"{len(expected)} findings" in table_text
    export = io.StringIO()
    write_jsonl(outcome.findings, export)
    lines = [json.loads(line) for line in export.getvalue().splitlines()]
    assert {line["birthRegistration"] for line in lines} == {key[0] for key in expected}
    assert "TAMPERED" not in export.getvalue()

    # Repair: each re-send goes the normal, audited path, and the sides agree again.
    run = str(uuid.uuid4())
    repaired = _reconcile_all(seeded.stack, repair=True, request_id=run)
    assert repaired.summary.repairs_queued == len(expected)
    again = _reconcile_all(seeded.stack, repair=True, request_id=run)
    assert again.summary.repairs_queued == 0  # the same run queues nothing twice
    assert _wait_for_agreement(seeded.stack) == []
    _assert_repaired(seeded, rows, run)


def _assert_repaired(seeded: Seeded, rows: dict[str, Any], run: str) -> None:
    with seeded.justice.connect() as connection:
        pins = dict(
            connection.execute(
                select(BirthRegistrationRow.name, BirthRegistrationRow.pin).where(
                    BirthRegistrationRow.name.in_([row.name for row in rows.values()])
                )
            ).all()
        )
    # The population database restored what its history says it issued: the same PINs.
    for name in DRIFTS:
        assert pins[rows[name].name] == rows[name].pin, name
    assert _police_data(seeded, rows["renamed"].pin)["full_name"]["given_name"] != "TAMPERED"
    resexed = rows["resexed"].pin
    assert sex_pb2.Sex.Name(pin.parse(resexed).sex) == _police_data(seeded, resexed)["sex"]
    with seeded.audit.connect() as connection:
        entries = [
            AuditEntry.decode(bytes(data))
            for data in connection.execute(
                select(entry_table.c.entry).where(entry_table.c.kind == "completion")
            ).scalars()
        ]
    updates = {e.request_id for e in entries if e.method == UPDATE and e.status == "OK"}
    for name in ("renamed", "redated", "mother", "resexed"):
        key = repair_request_id(run, rows[name].name, rc.REPAIR_ACTION_RESEND_FIELDS)
        assert update_request_id(key) in updates, name
    ordered = [e for e in entries if e.method == RECONCILE and e.request_id == run]
    assert ordered, "the Reconcile exchange that ordered the repairs is in the log"
    after = ordered[0].start_time
    resent = {e.request_id for e in entries
              if e.method == ISSUE and e.status == "OK" and e.start_time > after}  # fmt: skip
    for name in ("missing", "cancelled", "unrecorded", "stale", "mispinned", "duplicate"):
        assert rows[name].request_id in resent, name


def _wait_for_agreement(stack: Stack, timeout: float = 60.0) -> list[rc.Finding]:
    deadline = time.monotonic() + timeout
    while True:
        findings = _reconcile_all(stack).findings
        if not findings or time.monotonic() > deadline:
            return findings
        time.sleep(0.5)


def _call(channel: grpc.Channel, request: rc.ReconcileRequest) -> list:
    stub = rc_grpc.ReconciliationServiceStub(channel)
    return list(
        stub.Reconcile(request, timeout=30, metadata=((metadata.PURPOSE, "reconciliation"),))
    )


def _request(unit_code: str = "01", **fields) -> rc.ReconcileRequest:
    today = validation.today()
    request = rc.ReconcileRequest(request_id=str(uuid.uuid4()), unit_code=unit_code, **fields)
    if "start_date" not in fields:
        request.start_date.year, request.start_date.month, request.start_date.day = (
            today.year, today.month, today.day,
        )  # fmt: skip
    if "end_date" not in fields:
        request.end_date.CopyFrom(request.start_date)
    return request


def _violations(error: grpc.RpcError) -> set[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {violation.field for violation in bad.field_violations}
    return set()


@pytest.fixture(scope="module")
def stack(pki, tmp_path_factory) -> Iterator[Stack]:
    running = start_stack(pki, tmp_path_factory.mktemp("reconcile-access"))
    yield running
    running.stop_all()


def test_who_may_reconcile_and_repair(stack: Stack) -> None:
    # The population database's system reconciles any locality, and never repairs.
    with stack.channel("police") as channel:
        answers = _call(channel, _request("48"))
        assert answers[-1].HasField("summary")
        with pytest.raises(grpc.RpcError) as refused:
            _call(channel, _request("48", repair=True))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A provincial supervisor reconciles their province only, without repairing.
    with stack.as_officer("01", "supervisor-01") as channel:
        assert _call(channel, _request("01"))[-1].HasField("summary")
        for request in (_request("48"), _request("01", repair=True)):
            with pytest.raises(grpc.RpcError) as refused:
                _call(channel, request)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The registry's own system is not granted Reconcile by the policy.
    with stack.channel("justice") as channel, pytest.raises(grpc.RpcError) as refused:
        _call(channel, _request("01"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({"request_id": "not-a-uuid"}, {"request_id"}),
        ({"unit_code": ""}, {"unit_code"}),
        ({"unit_code": "99999"}, {"unit_code"}),
        ({"start_date": None}, {"start_date"}),
        ({"end_date": {"year": 2020, "month": 1, "day": 1}}, {"end_date"}),
        ({"start_date": {"year": 2026, "month": 2, "day": 30}}, {"start_date"}),
        ({"pending_threshold": {"seconds": 0}}, {"pending_threshold"}),
    ],
)
def test_bad_requests_get_field_violations(stack: Stack, fields: dict, violations) -> None:
    request = _request()
    for name, value in fields.items():
        if value is None:
            request.ClearField(name)
        elif isinstance(value, dict):
            getattr(request, name).Clear()
            for key, number in value.items():
                setattr(getattr(request, name), key, number)
        else:
            setattr(request, name, value)
    with stack.administrator() as channel, pytest.raises(grpc.RpcError) as refused:
        _call(channel, request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(refused.value) == violations
    assert rpc_status.from_call(refused.value).code == code_pb2.INVALID_ARGUMENT
