"""What reconciliation relies on in the population database — on SQLite and PostgreSQL.

The idempotent re-send of a registration restores the record its history says exists; every
change keeps the audit log leaf of its exchange; ListCitizenDigests streams a province's
records as salted field digests with their history; and the migration that added the leaf
keeps what an existing database holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from alembic import command
from alembic.config import Config
from builders import TP_HCM_COMMUNE, issue_request
from google.protobuf import field_mask_pb2, json_format, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import Engine, delete, insert, inspect, select, text, update
from stack import GATEWAY_ID, free_port, tls_of

from lienthong import errors, metadata
from lienthong.config import PoliceConfig
from lienthong.db import make_engine, read_session_factory, schema_transaction, session_factory
from lienthong.field_digests import FIELDS, field_digests
from lienthong.person.v1 import person_name_pb2, sex_pb2
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2, citizen_service_pb2_grpc
from lienthong.reference import code_lists
from lienthong.tls import secure_channel
from police_adapter import population
from police_adapter.digests import BATCH, CitizenDigestLister
from police_adapter.history import Provenance, digest
from police_adapter.models import CitizenChange, CitizenRecord, create_schema
from police_adapter.population import PopulationRegister
from police_adapter.server import DOMAIN, create_server
from police_adapter.servicer import CitizenServicer

ACTIVE = citizen_pb2.CITIZEN_STATE_ACTIVE
CANCELLED = citizen_pb2.CITIZEN_STATE_CANCELLED
SALT = b"reconciliation-salt-0123456789"
BY = Provenance(
    exchange_id="ex-issue",
    caller="spiffe://lienthong.local/moj/civil-registry",
    on_behalf_of="officers/7",
    exchange_leaf=11,
)
RESEND = Provenance(
    exchange_id="ex-resend", caller="spiffe://lienthong.local/moj/civil-registry", exchange_leaf=42
)
Request = citizen_service_pb2.IssuePersonalIdentificationNumberRequest


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def register(engine: Engine) -> PopulationRegister:
    return PopulationRegister(session_factory(engine), code_lists())


@pytest.fixture
def lister(engine: Engine) -> CitizenDigestLister:
    return CitizenDigestLister(read_session_factory(engine), code_lists())


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The register's log events; its own logger, whatever structlog cached before."""
    capture = structlog.testing.LogCapture()
    logger = structlog.wrap_logger(None, processors=[capture], wrapper_class=structlog.BoundLogger)
    monkeypatch.setattr(population, "log", logger)
    return capture.entries


def _history(engine: Engine, number: str) -> list[CitizenChange]:
    with session_factory(engine)() as session:
        query = select(CitizenChange).where(CitizenChange.pin == number)
        return list(session.scalars(query.order_by(CitizenChange.id)))


def _record(engine: Engine, number: str) -> CitizenRecord | None:
    with session_factory(engine)() as session:
        return session.get(CitizenRecord, number)


def _change_record(engine: Engine, number: str, **values: Any) -> None:
    """Change a record outside the recorded path, as drift or tampering would."""
    with engine.begin() as connection:
        if values:
            connection.execute(
                update(CitizenRecord).where(CitizenRecord.pin == number).values(**values)
            )
        else:
            connection.execute(delete(CitizenRecord).where(CitizenRecord.pin == number))


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _data(request: Request) -> dict[str, Any]:
    return json_format.MessageToDict(request.registered_birth, preserving_proto_field_name=True)


def _listing(
    lister: CitizenDigestLister, province: str = "01", salt: bytes = SALT, **fields: Any
) -> list[citizen_service_pb2.ListCitizenDigestsResponse]:
    request = citizen_service_pb2.ListCitizenDigestsRequest(
        province_code=province, salt=salt, **fields
    )
    return list(lister.list(request))


def _citizens(lister: CitizenDigestLister, **options: Any) -> dict[str, Any]:
    return {
        citizen.personal_identification_number: citizen
        for batch in _listing(lister, **options)
        for citizen in batch.citizens
    }


def _digests(citizen: citizen_service_pb2.CitizenDigest) -> dict[str, bytes]:
    return {digest.field: digest.sha256 for digest in citizen.field_digests}


# --- restoration on the idempotent re-send ---------------------------------------------------


def test_a_deleted_record_comes_back_with_its_pin_data_and_creation_time(
    register, engine, lister, logged
):
    request = issue_request("birthRegistrations/00004-2016-1")
    number = register.issue(request, BY).personal_identification_number
    created = register.get(f"citizens/{number}").create_time
    _change_record(engine, number)

    again = register.issue(request, RESEND)

    assert (again.personal_identification_number, again.newly_issued) == (number, False)
    restored = _record(engine, number)
    assert restored is not None
    assert (restored.state, restored.data, restored.request_id) == (
        ACTIVE,
        _data(request),
        request.request_id,
    )
    issued, restoration = _history(engine, number)
    # Created when it was issued, not when it was repaired.
    recreated = register.get(f"citizens/{number}").create_time.ToDatetime(tzinfo=dt.UTC)
    assert abs(recreated - created.ToDatetime(tzinfo=dt.UTC)) < dt.timedelta(seconds=1)
    assert recreated == _utc(issued.create_time)
    assert (issued.kind, restoration.kind) == ("ISSUED", "RESTORED")
    assert (restoration.exchange_id, restoration.exchange_leaf) == ("ex-resend", 42)
    assert restoration.after_sha256 == issued.after_sha256 == digest(_data(request))
    (citizen,) = _citizens(lister).values()
    assert citizen.intact
    assert [(event.kind, event.leaf_index) for event in citizen.events] == [
        ("ISSUED", 11),
        ("RESTORED", 42),
    ]
    assert logged[-1] == {
        "event": "pin_restored",
        "log_level": "info",
        "birth_registration": "birthRegistrations/00004-2016-1",
        "request_id": request.request_id,
    }


def test_a_record_deleted_twice_is_restored_twice_under_the_same_request_id(register, engine):
    request = issue_request()
    number = register.issue(request, BY).personal_identification_number
    for _ in range(2):
        _change_record(engine, number)
        assert register.issue(request, RESEND).personal_identification_number == number
    assert [change.kind for change in _history(engine, number)] == [
        "ISSUED",
        "RESTORED",
        "RESTORED",
    ]
    # A further re-send finds the record in force and changes nothing.
    assert register.issue(request).personal_identification_number == number
    assert len(_history(engine, number)) == 3


def test_an_unexplained_cancellation_is_undone(register, engine, lister, logged):
    request = issue_request()
    number = register.issue(request, BY).personal_identification_number
    _change_record(engine, number, state=CANCELLED)

    again = register.issue(request, RESEND)

    assert (again.personal_identification_number, again.newly_issued) == (number, False)
    assert register.get(f"citizens/{number}").state == ACTIVE
    restoration = _history(engine, number)[-1]
    assert (restoration.kind, restoration.fields) == ("RESTORED", ["state"])
    assert restoration.before_sha256 == restoration.after_sha256 == digest(_data(request))
    assert restoration.exchange_leaf == 42
    assert _citizens(lister)[number].intact
    assert logged[-1]["event"] == "pin_restored"


def test_a_recorded_cancellation_is_not_undone(register, engine):
    """The idempotent answer stays the PIN in force: the one the correction established."""
    request = issue_request()
    old = register.issue(request, BY).personal_identification_number
    correction = citizen_service_pb2.UpdateCitizenRequest(
        request_id=str(uuid.uuid4()),
        citizen=citizen_pb2.Citizen(name=f"citizens/{old}", sex=sex_pb2.SEX_MALE),
        update_mask=field_mask_pb2.FieldMask(paths=["sex"]),
        reason="Quyết định cải chính số 12/QĐ-UBND",
    )
    new = register.update(correction, BY).citizen.personal_identification_number

    assert register.issue(request, RESEND).personal_identification_number == new
    assert register.get(f"citizens/{old}").state == CANCELLED
    # Even with its link to the successor lost, a cancellation in the history stands.
    _change_record(engine, old, replaced_by=None)
    register.issue(request, RESEND)
    assert register.get(f"citizens/{old}").state == CANCELLED
    assert register.get(f"citizens/{new}").state == ACTIVE
    kinds = {change.kind for pin in (old, new) for change in _history(engine, pin)}
    assert "RESTORED" not in kinds


def test_a_deleted_record_whose_prefix_no_longer_fits_gets_a_new_pin(register, engine):
    """The registry corrected the sex on its side: the old PIN would encode it wrongly."""
    girl = issue_request(sex=sex_pb2.SEX_FEMALE)
    old = register.issue(girl, BY).personal_identification_number
    _change_record(engine, old)
    boy = Request()
    boy.CopyFrom(girl)
    boy.registered_birth.sex = sex_pb2.SEX_MALE

    again = register.issue(boy, RESEND)

    new = again.personal_identification_number
    assert again.newly_issued
    assert (old[:6], new[:6]) == ("001316", "001216")
    assert _record(engine, old) is None
    assert register.get(f"citizens/{new}").sex == sex_pb2.SEX_MALE
    assert register.issue(boy).personal_identification_number == new


def test_a_deleted_record_of_a_cancelled_pin_is_not_brought_back(register, engine):
    """A cancelled PIN is never in force again, even when every row of it is gone."""
    request = issue_request()
    old = register.issue(request, BY).personal_identification_number
    correction = citizen_service_pb2.UpdateCitizenRequest(
        request_id=str(uuid.uuid4()),
        citizen=citizen_pb2.Citizen(name=f"citizens/{old}", sex=sex_pb2.SEX_MALE),
        update_mask=field_mask_pb2.FieldMask(paths=["sex"]),
        reason="Quyết định cải chính số 12/QĐ-UBND",
    )
    new = register.update(correction, BY).citizen.personal_identification_number
    _change_record(engine, old)
    _change_record(engine, new)

    again = register.issue(request, RESEND)

    assert again.personal_identification_number not in {old, new}
    assert again.newly_issued
    assert _record(engine, old) is None


# --- the audit leaf of each change ---------------------------------------------------------


class FakeContext:
    """The part of a grpc.ServicerContext the servicer reads: the gateway's metadata."""

    def __init__(self, *pairs: tuple[str, str]) -> None:
        self.pairs = pairs

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.pairs


def test_the_history_keeps_the_exchange_leaf_the_gateway_sends(register, engine, lister):
    servicer = CitizenServicer(register, lister)
    context = FakeContext(
        (metadata.EXCHANGE_ID, "ex-9"), (metadata.EXCHANGE_LEAF, "1234567"), ("other", "x")
    )
    answer = servicer.IssuePersonalIdentificationNumber(issue_request(), context)
    (change,) = _history(engine, answer.personal_identification_number)
    assert (change.exchange_id, change.exchange_leaf) == ("ex-9", 1234567)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param("0", 0, id="zero"),
        pytest.param("9223372036854775807", 2**63 - 1, id="largest-bigint"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("-1", None, id="negative"),
        pytest.param("+5", None, id="signed"),
        pytest.param(" 5", None, id="space"),
        pytest.param("1_000", None, id="underscore"),
        pytest.param("0x10", None, id="hexadecimal"),
        pytest.param("\u0661\u0662", None, id="arabic-indic-digits"),
        pytest.param("9223372036854775808", None, id="beyond-bigint"),
        pytest.param("9" * 5000, None, id="five-thousand-digits"),
    ],
)
def test_a_malformed_exchange_leaf_is_left_out_never_refused(sent: str | None, kept: int | None):
    pairs = [(metadata.EXCHANGE_ID, "ex-1")]
    if sent is not None:
        pairs.append((metadata.EXCHANGE_LEAF, sent))
    provenance = Provenance.of(FakeContext(*pairs))
    assert (provenance.exchange_id, provenance.exchange_leaf) == ("ex-1", kept)


# --- ListCitizenDigests ------------------------------------------------------------------


def test_the_digests_are_those_of_the_registered_birth_that_was_issued(register, lister):
    request = issue_request()
    number = register.issue(request, BY).personal_identification_number

    (batch,) = _listing(lister)

    (citizen,) = batch.citizens
    birth = request.registered_birth
    expected = field_digests(birth, SALT)
    assert [(d.field, d.sha256) for d in citizen.field_digests] == list(expected.items())
    assert [d.field for d in citizen.field_digests] == list(FIELDS)[:9]  # no representative
    # The wire format of the contract, computed by hand for one field.
    only_name = citizen_pb2.RegisteredBirth(full_name=birth.full_name)
    by_hand = hashlib.sha256(SALT + only_name.SerializeToString(deterministic=True)).digest()
    assert _digests(citizen)["full_name"] == by_hand
    assert citizen.personal_identification_number == number
    assert (citizen.state, citizen.birth_registration, citizen.replaced_by) == (
        ACTIVE,
        birth.birth_registration,
        "",
    )
    assert citizen.intact
    (event,) = citizen.events
    assert (event.kind, event.exchange_id, event.leaf_index) == ("ISSUED", "ex-issue", 11)
    created = citizen.create_time.ToDatetime(tzinfo=dt.UTC)
    assert abs(event.time.ToDatetime(tzinfo=dt.UTC) - created) < dt.timedelta(seconds=5)
    assert "HOA" not in str(batch)


def test_a_tampered_field_changes_exactly_its_digest_and_the_record_is_not_intact(
    register, engine, lister
):
    request = issue_request()
    number = register.issue(request, BY).personal_identification_number
    before = _digests(_citizens(lister)[number])
    data = _data(request)
    data["full_name"]["given_name"] = "HỒNG"
    _change_record(engine, number, data=data)

    citizen = _citizens(lister)[number]

    after = _digests(citizen)
    assert {field for field in FIELDS if before.get(field) != after.get(field)} == {"full_name"}
    assert not citizen.intact


def test_a_record_the_history_does_not_know_is_not_intact(register, engine, lister):
    number = register.issue(issue_request(), BY).personal_identification_number
    with engine.begin() as connection:
        connection.execute(delete(CitizenChange).where(CitizenChange.pin == number))
    citizen = _citizens(lister)[number]
    assert (list(citizen.events), citizen.intact) == ([], False)
    assert _digests(citizen)  # the data is still compared


def test_a_cancelled_record_is_listed_with_its_successor_and_history(register, lister):
    old = register.issue(issue_request(), BY).personal_identification_number
    correction = citizen_service_pb2.UpdateCitizenRequest(
        request_id=str(uuid.uuid4()),
        citizen=citizen_pb2.Citizen(
            name=f"citizens/{old}",
            full_name=person_name_pb2.PersonName(family_name="LÊ", given_name="HỒNG"),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["full_name"]),
        reason="Quyết định cải chính số 12/QĐ-UBND",
    )
    register.update(correction, RESEND)
    correction.request_id = str(uuid.uuid4())
    correction.citizen.sex = sex_pb2.SEX_MALE
    correction.update_mask.paths[:] = ["sex"]
    new = register.update(correction, RESEND).citizen.personal_identification_number

    citizens = _citizens(lister)

    assert (citizens[old].state, citizens[old].replaced_by) == (CANCELLED, new)
    assert [event.kind for event in citizens[old].events] == ["ISSUED", "UPDATED", "CANCELLED"]
    # The cancellation left no data: the update before it says what the data is.
    assert citizens[old].intact
    assert [event.kind for event in citizens[new].events] == ["REESTABLISHED"]
    assert citizens[new].intact


def test_the_salt_changes_every_digest(register, lister):
    number = register.issue(issue_request(), BY).personal_identification_number
    first = _digests(_citizens(lister)[number])
    second = _digests(_citizens(lister, salt=bytes(reversed(SALT)))[number])
    assert first.keys() == second.keys()
    assert all(first[field] != second[field] for field in first)


def test_the_province_and_the_creation_time_choose_the_records(register, engine, lister):
    ha_noi = register.issue(issue_request(), BY).personal_identification_number
    old = register.issue(issue_request("birthRegistrations/00004-2016-2"), BY)
    old_pin = old.personal_identification_number
    saigon = register.issue(issue_request(commune=TP_HCM_COMMUNE), BY)
    saigon_pin = saigon.personal_identification_number
    since = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    _change_record(engine, old_pin, create_time=since - dt.timedelta(microseconds=1))
    _change_record(engine, ha_noi, create_time=since)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(since)

    assert set(_citizens(lister)) == {ha_noi, old_pin}
    assert set(_citizens(lister, province="79")) == {saigon_pin}
    assert set(_citizens(lister, create_time_from=stamp)) == {ha_noi}
    assert _citizens(lister, province="79", create_time_from=stamp).keys() == {saigon_pin}
    assert _listing(lister, province="02") == []  # Hà Giang: no record


def test_records_come_in_batches_of_at_most_500_in_pin_order(engine, lister):
    numbers = [f"001316{serial:06d}" for serial in random.sample(range(1_000_000), 1203)]
    others = [f"079316{serial:06d}" for serial in range(5)]
    rows = [
        _row(number, n, state=CANCELLED if n % 3 == 0 else ACTIVE)
        for n, number in enumerate(numbers + others)
    ]
    with engine.begin() as connection:
        connection.execute(insert(CitizenRecord), rows)

    batches = _listing(lister)

    assert [len(batch.citizens) for batch in batches] == [BATCH, BATCH, 203]
    listed = [c.personal_identification_number for b in batches for c in b.citizens]
    assert listed == sorted(numbers)
    states = {c.personal_identification_number: c.state for b in batches for c in b.citizens}
    assert sum(state == CANCELLED for state in states.values()) == 401


def _row(number: str, n: int, **values: Any) -> dict[str, Any]:
    request = issue_request(f"birthRegistrations/00004-2016-{n + 1}")
    return {
        "pin": number,
        "state": ACTIVE,
        "birth_registration": request.registered_birth.birth_registration,
        "request_id": request.request_id,
        "province_code": number[:3],
        "sex": sex_pb2.SEX_FEMALE,
        "birth_year": 2016,
        "data": _data(request),
        "create_time": dt.datetime.now(dt.UTC),
        "update_time": dt.datetime.now(dt.UTC),
        **values,
    }


def _tampered(change: str) -> dict[str, Any]:
    data = _data(issue_request())
    if change == "sex-as-number":
        data["sex"] = 2
    elif change == "year-as-text":
        data["date_of_birth"]["year"] = "2016"
    elif change == "camel-case-name":
        data["fullName"] = data.pop("full_name")
    elif change == "unknown-field":
        data["note"] = "x"
    elif change == "name-as-text":
        data["full_name"] = "LÊ THỊ HOA"
    elif change == "unpaired-surrogate":
        data["full_name"]["given_name"] = "HOA\ud800"
    elif change == "year-out-of-range":
        data["date_of_birth"]["year"] = 2**40
    elif change == "bool-as-number":
        data["mother"]["undetermined"] = 1
    elif change == "not-an-object":
        return ["not", "a", "record"]  # type: ignore[return-value]
    return data


def _reference_digests(data: Any) -> dict[str, bytes]:
    """The contract's digests of stored data, the slow way: the whole record, else each field."""
    if not isinstance(data, dict):
        return {}
    try:
        return field_digests(json_format.ParseDict(data, citizen_pb2.RegisteredBirth()), SALT)
    except json_format.ParseError:
        pass
    digests = {}
    for field in FIELDS:
        try:
            only = json_format.ParseDict({field: data[field]}, citizen_pb2.RegisteredBirth())
        except (KeyError, json_format.ParseError):
            continue
        digests.update(field_digests(only, SALT))
    return digests


CHANGES = [
    "sex-as-number",
    "year-as-text",
    "camel-case-name",
    "unknown-field",
    "name-as-text",
    "unpaired-surrogate",
    "year-out-of-range",
    "bool-as-number",
    "not-an-object",
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_damaged_data_is_digested_as_json_format_reads_it_and_does_not_stop_the_listing(
    engine, lister
):
    """Stored data in any shape: the digests of what still parses, never a failed listing."""
    rows = [_row(f"001316{n:06d}", n) for n in range(len(CHANGES) + 1)]
    for row, change in zip(rows, CHANGES, strict=False):
        row["data"] = _tampered(change)
    with engine.begin() as connection:
        connection.execute(insert(CitizenRecord), rows)

    citizens = _citizens(lister)

    assert len(citizens) == len(rows)
    for row in rows:
        citizen = citizens[row["pin"]]
        assert _digests(citizen) == _reference_digests(row["data"]), row["data"]
        assert list(_digests(citizen)) == [f for f in FIELDS if f in _digests(citizen)]


# --- the servicer, over mutual TLS -----------------------------------------------------------


@pytest.fixture(scope="module")
def police(pki, tmp_path_factory) -> Iterator[citizen_service_pb2_grpc.CitizenServiceStub]:
    """A police adapter server, and a stub that presents the gateway's certificate."""
    database = Path(tmp_path_factory.mktemp("police")) / "police.db"
    address = f"127.0.0.1:{free_port()}"
    server = create_server(
        PoliceConfig(
            listen=address,
            tls=tls_of(pki, "police"),
            database_url=f"sqlite:///{database}",
            trusted_callers=frozenset({GATEWAY_ID}),
        )
    )
    server.start()
    with secure_channel(address, tls_of(pki, "gateway-client").read()) as channel:
        yield citizen_service_pb2_grpc.CitizenServiceStub(channel)
    server.stop(grace=None).wait()


def test_the_server_streams_the_digests_with_the_leaf_the_gateway_sent(police):
    request = issue_request("birthRegistrations/26734-2016-5", commune=TP_HCM_COMMUNE)
    sent = ((metadata.EXCHANGE_ID, "ex-77"), (metadata.EXCHANGE_LEAF, "77"))
    number = police.IssuePersonalIdentificationNumber(
        request, metadata=sent, timeout=10
    ).personal_identification_number

    batches = list(
        police.ListCitizenDigests(
            citizen_service_pb2.ListCitizenDigestsRequest(province_code="79", salt=SALT),
            timeout=10,
        )
    )

    (citizen,) = [c for batch in batches for c in batch.citizens]
    assert citizen.personal_identification_number == number
    assert _digests(citizen) == field_digests(request.registered_birth, SALT)
    assert [(e.kind, e.exchange_id, e.leaf_index) for e in citizen.events] == [
        ("ISSUED", "ex-77", 77)
    ]


def _far_future() -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=253_402_300_800)


INVALID = [
    pytest.param({"province_code": ""}, "province_code", id="province-missing"),
    pytest.param({"province_code": "1"}, "province_code", id="province-one-digit"),
    pytest.param({"province_code": "001"}, "province_code", id="province-pin-code"),
    pytest.param({"province_code": "0A"}, "province_code", id="province-letter"),
    pytest.param(
        {"province_code": "\u0660\u0661"}, "province_code", id="province-arabic-indic-digits"
    ),
    pytest.param({"province_code": "01\n"}, "province_code", id="province-trailing-newline"),
    pytest.param({"province_code": "99"}, "province_code", id="province-not-in-code-list"),
    pytest.param({"salt": b""}, "salt", id="salt-missing"),
    pytest.param({"salt": b"s" * 15}, "salt", id="salt-15-bytes"),
    pytest.param({"salt": b"s" * 65}, "salt", id="salt-65-bytes"),
    pytest.param(
        {"create_time_from": timestamp_pb2.Timestamp(seconds=0, nanos=-1)},
        "create_time_from",
        id="create_time_from-negative-nanos",
    ),
    pytest.param(
        {"create_time_from": timestamp_pb2.Timestamp(seconds=0, nanos=1_000_000_000)},
        "create_time_from",
        id="create_time_from-nanos-overflow",
    ),
    pytest.param(
        {"create_time_from": _far_future()}, "create_time_from", id="create_time_from-year-10000"
    ),
    pytest.param(
        {"create_time_from": timestamp_pb2.Timestamp(seconds=-62_135_596_801)},
        "create_time_from",
        id="create_time_from-before-year-1",
    ),
]


@pytest.mark.parametrize(("change", "field"), INVALID)
def test_an_invalid_listing_request_is_refused_by_field(police, change: dict[str, Any], field):
    request = citizen_service_pb2.ListCitizenDigestsRequest(province_code="01", salt=SALT)
    for name, value in change.items():
        if isinstance(value, timestamp_pb2.Timestamp):
            request.create_time_from.CopyFrom(value)
        else:
            setattr(request, name, value)

    with pytest.raises(grpc.RpcError) as raised:
        list(police.ListCitizenDigests(request, timeout=10))

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    assert status is not None
    violations = error_details_pb2.BadRequest()
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            detail.Unpack(violations)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    assert [violation.field for violation in violations.field_violations] == [field]
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", DOMAIN)


def test_every_invalid_field_is_named_at_once(lister):
    request = citizen_service_pb2.ListCitizenDigestsRequest(
        province_code="9", salt=b"short", create_time_from=_far_future()
    )
    with pytest.raises(errors.InvalidArgument) as raised:
        lister.list(request)  # refused on the call, before any batch is read
    fields = [violation.field for violation in raised.value.violations]
    assert fields == ["province_code", "salt", "create_time_from"]


def test_the_boundaries_of_the_salt_and_the_time_are_accepted(register, lister):
    register.issue(issue_request(), BY)
    earliest = timestamp_pb2.Timestamp(seconds=-62_135_596_800)
    assert len(_citizens(lister, salt=b"s" * 16, create_time_from=earliest)) == 1
    assert len(_citizens(lister, salt=b"s" * 64)) == 1


# --- the migration ---------------------------------------------------------------------------


def _migrate(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", "police_adapter:migrations")
    with schema_transaction(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return connection.scalar(text("SELECT version_num FROM alembic_version_police"))


def test_a_fresh_database_is_migrated_to_the_leaf(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    create_schema(engine)
    columns = {column["name"] for column in inspect(engine).get_columns("citizen_change")}
    indexes = {index["name"] for index in inspect(engine).get_indexes("citizen_change")}
    assert _revision(engine) == "0002"
    assert "exchange_leaf" in columns
    assert {"citizen_change_request", "ix_citizen_change_request_id"} <= indexes
    engine.dispose()


def test_a_database_at_0001_keeps_its_rows_and_they_can_be_restored(database_url):
    engine = make_engine(database_url)
    _migrate(engine, "0001")
    request = issue_request()
    number = "001316123456"
    row = _row(number, 0, request_id=request.request_id, data=_data(request))
    with engine.begin() as connection:
        connection.execute(insert(CitizenRecord), [row])
        connection.execute(
            text(
                "INSERT INTO citizen_change (pin, kind, fields, after_sha256, request_id,"
                " exchange_id, create_time) VALUES (:pin, 'ISSUED', '[]', :sha, :request_id,"
                " 'ex-old', :time)"
            ),
            {
                "pin": number,
                "sha": digest(_data(request)),
                "request_id": request.request_id,
                "time": row["create_time"],
            },
        )

    create_schema(engine)

    assert _revision(engine) == "0002"
    stored = _record(engine, number)
    assert stored is not None
    assert (stored.data, stored.state) == (_data(request), ACTIVE)
    (change,) = _history(engine, number)
    assert (change.kind, change.exchange_id, change.exchange_leaf) == ("ISSUED", "ex-old", None)
    # The migrated history serves as before: the deleted record comes back from it.
    register = PopulationRegister(session_factory(engine), code_lists())
    _change_record(engine, number)
    assert register.issue(request, RESEND).personal_identification_number == number
    lister = CitizenDigestLister(read_session_factory(engine), code_lists())
    (event, restoration) = _citizens(lister)[number].events
    assert not event.HasField("leaf_index")
    assert restoration.leaf_index == 42
    engine.dispose()
