"""Database faults seen from an officer's desk: a call waits or is refused cleanly, the
services recover by themselves, and nothing is half-written.

The whole stack runs in process (tests/stack.py). SQLite databases are locked by another
connection; PostgreSQL databases are reached through one fault proxy each
(tests/fault_proxy.py), which a test takes down and brings back up, or a table is locked
from a test connection. Each test then retries the officer's very request (same request_id)
and checks the outcome in the databases themselves: one registration with its event, one
citizen record with its PIN, and an audit log that still verifies.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fault_proxy import FaultProxy, Mode
from sqlalchemy import Engine, create_engine, func, make_url, select
from sqlalchemy.exc import OperationalError
from stack import Stack, start_stack

from certs.pki import DevPki
from gateway.audit.entry import AuditEntry, timestamp
from gateway.audit.store import AuditLog, AuditUnavailableError, CompletionQuery
from gateway.audit.tools import verify_log
from justice_adapter.models import BirthRegistrationRow, RegistrationEventRow
from lienthong import metadata
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import birth_registration_service_pb2 as service
from lienthong.civilregistry.v1 import birth_registration_service_pb2_grpc as service_grpc
from lienthong.db import make_engine
from lienthong.demo import SAMPLES, sample_request
from lienthong.reference import code_lists
from lienthong.signed_note import NoteSigner, NoteVerifier
from police_adapter.models import CitizenRecord

log = logging.getLogger(__name__)

DATABASES = ("justice", "police", "audit")
SAMPLE = SAMPLES[0]  # a Vietnamese child's first registration at a commune: due a PIN
OUTAGE = 3.0  # seconds a database stays locked or unreachable
DEADLINE = 10.0  # an officer's call
RETRY_EVERY = 0.3  # seconds between an officer's attempts during an outage
PIN_WITHIN = 30.0  # the outbox's longest backoff: a pending PIN arrives within it
# What a caller may be answered while a database is away: never INTERNAL or UNKNOWN.
CLEAN = {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
UNAVAILABLE_DETAILS = {
    "the database is unavailable; retry",  # an adapter (lienthong.grpc_server)
    "the audit log is unavailable; the call was not forwarded",  # the gateway
    "the audit log could not record the exchange",  # the gateway, at completion
}


@dataclass(frozen=True)
class Answer:
    """What the officer saw of one call."""

    code: grpc.StatusCode
    details: str
    seconds: float
    registration: br.BirthRegistration | None = None


@dataclass
class Running:
    """A stack, its databases opened beside it, and an officer's channel through it."""

    stack: Stack
    engines: dict[str, Engine]
    officer: grpc.Channel
    proxies: dict[str, FaultProxy]


# Calls ------------------------------------------------------------------------------------


def _register(channel: grpc.Channel, request: service.RegisterBirthRequest) -> Answer:
    stub = service_grpc.BirthRegistrationServiceStub(channel)
    started = time.monotonic()
    try:
        response = stub.RegisterBirth(
            request,
            timeout=DEADLINE,
            metadata=(
                (metadata.REQUEST_ID, request.request_id),
                (metadata.PURPOSE, "birth-registration"),
            ),
        )
    except grpc.RpcError as error:
        return _failed(error, started)
    return Answer(grpc.StatusCode.OK, "", time.monotonic() - started, response.birth_registration)


def _get(channel: grpc.Channel, name: str) -> Answer:
    stub = service_grpc.BirthRegistrationServiceStub(channel)
    started = time.monotonic()
    try:
        response = stub.GetBirthRegistration(
            service.GetBirthRegistrationRequest(name=name),
            timeout=DEADLINE,
            metadata=((metadata.PURPOSE, "birth-registration"),),
        )
    except grpc.RpcError as error:
        return _failed(error, started)
    return Answer(grpc.StatusCode.OK, "", time.monotonic() - started, response.birth_registration)


def _failed(error: grpc.RpcError, started: float) -> Answer:
    assert isinstance(error, grpc.Call)  # a failed call's error is also the call
    return Answer(error.code(), error.details() or "", time.monotonic() - started)


def _new_request() -> service.RegisterBirthRequest:
    request = sample_request(SAMPLE, code_lists())
    request.request_id = str(uuid.uuid4())
    return request


def _assert_refused_cleanly(answer: Answer) -> None:
    """UNAVAILABLE with one of the fixed messages, within the deadline: no stack trace."""
    assert answer.code == grpc.StatusCode.UNAVAILABLE, answer
    assert answer.details in UNAVAILABLE_DETAILS, answer
    assert answer.seconds < DEADLINE, answer


# What the databases hold ------------------------------------------------------------------


def _stored(running: Running, request_id: str) -> tuple[list[BirthRegistrationRow], int]:
    """The registrations of ``request_id`` and the number of their events."""
    with running.engines["justice"].connect() as connection:
        rows = list(
            connection.execute(
                select(BirthRegistrationRow.__table__).where(
                    BirthRegistrationRow.request_id == request_id
                )
            ).all()
        )
        events = connection.execute(
            select(func.count())
            .select_from(RegistrationEventRow)
            .where(RegistrationEventRow.registration_id.in_([row.id for row in rows]))
        ).scalar_one()
    return rows, int(events)  # type: ignore[return-value]


def _assert_registered_once(running: Running, request_id: str) -> str:
    """One registration of ``request_id``, with its REGISTERED event; its name."""
    rows, events = _stored(running, request_id)
    assert len(rows) == 1, f"{len(rows)} registrations of one request"
    assert events == 1, f"the registration has {events} events"
    return str(rows[0].name)


def _assert_not_registered(running: Running, request_id: str) -> None:
    rows, events = _stored(running, request_id)
    assert (len(rows), events) == (0, 0), "a refused call left rows behind"


def _wait_for_pin(running: Running, request_id: str) -> tuple[str, float]:
    """The PIN the outbox stores for ``request_id``, and how long it took to arrive."""
    started = time.monotonic()
    statement = select(BirthRegistrationRow.pin_status, BirthRegistrationRow.pin).where(
        BirthRegistrationRow.request_id == request_id
    )
    while True:
        with running.engines["justice"].connect() as connection:
            status, value = connection.execute(statement).one()
        if status == br.PIN_STATUS_ISSUED:
            return str(value), time.monotonic() - started
        assert status == br.PIN_STATUS_PENDING, f"PIN status {status}"
        assert time.monotonic() - started < PIN_WITHIN, "the PIN never arrived"
        time.sleep(0.2)


def _assert_one_citizen(running: Running, name: str, pin: str) -> None:
    with running.engines["police"].connect() as connection:
        pins = (
            connection.execute(
                select(CitizenRecord.pin).where(CitizenRecord.birth_registration == name)
            )
            .scalars()
            .all()
        )
    assert list(pins) == [pin], "the population database holds another PIN for the birth"


def _assert_audit_verifies(running: Running) -> None:
    audit = running.stack.gateway.audit
    audit.checkpoint()  # sign what the outage's calls appended
    result = verify_log(running.engines["audit"], NoteVerifier(audit._signer.verifier_key()))
    assert result.ok, result.problems
    assert result.entries > 0


def _assert_pin_arrives_once(running: Running, request_id: str) -> float:
    """The registration of ``request_id`` gets one PIN, the population database's only one."""
    name = _assert_registered_once(running, request_id)
    pin, waited = _wait_for_pin(running, request_id)
    _assert_one_citizen(running, name, pin)
    return waited


# A silent server ---------------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[FaultProxy]:
    """A loopback port that accepts connections and never answers, as a hung database."""
    proxy = FaultProxy("127.0.0.1", 9)  # the target is never reached
    proxy.down("blackhole")
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()


def _silent_url(proxy: FaultProxy) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/lienthong"


def test_a_postgresql_engine_gives_up_on_a_silent_server_within_a_call_deadline(
    silent_server: FaultProxy,
) -> None:
    """A PostgreSQL server that accepts the connection and never answers makes a new
    connection fail (OperationalError, which the edge answers UNAVAILABLE) after the engine's
    connect timeout, not after the minutes libpq and psycopg would otherwise wait."""
    engine = make_engine(_silent_url(silent_server))
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError), engine.connect():
            pass
    finally:
        engine.dispose()
    assert time.monotonic() - started < DEADLINE


def test_audit_entries_queued_behind_a_failing_write_fail_with_it(
    silent_server: FaultProxy,
) -> None:
    """While the audit database cannot be reached, an entry queued behind a batch whose
    connection attempt fails is answered with that failure, instead of waiting for a
    connection attempt of its own (each caller would wait for all those queued before it);
    an entry appended afterwards tries the database again."""
    signer = NoteSigner("lienthong.local/audit", Ed25519PrivateKey.generate())
    audit = AuditLog(make_engine(_silent_url(silent_server)), signer)
    audit._writer.start()  # the schema cannot be created: only the writer runs
    try:
        _append_while_unreachable(audit, silent_server)
    finally:
        audit._stop.set()  # close() would sign a last checkpoint, in the database
        audit._queue.put(None)
        audit._writer.join()
        audit._engine.dispose()


def _append_while_unreachable(audit: AuditLog, silent_server: FaultProxy) -> None:
    outcomes: dict[str, BaseException] = {}

    def append(name: str) -> None:
        try:
            audit.append(_entry(name))
        except AuditUnavailableError as error:
            outcomes[name] = error

    first = threading.Thread(target=append, args=("first",))
    first.start()
    while not silent_server.held:  # the writer is connecting for the first entry
        threading.Event().wait(0.01)
    queued = threading.Thread(target=append, args=("queued",))
    queued.start()
    while not audit._queue.qsize():  # queued behind the batch being written
        threading.Event().wait(0.01)
    first.join()
    queued.join()
    assert set(outcomes) == {"first", "queued"}
    assert silent_server.attempts == 1
    silent_server.down("refuse")
    append("after")
    assert "after" in outcomes
    assert silent_server.attempts == 2


def _entry(exchange_id: str) -> AuditEntry:
    return AuditEntry(
        kind="request",
        exchange_id=exchange_id,
        caller=None,
        upstream=None,
        method="/test/Method",
        purpose=None,
        on_behalf_of=None,
        request_id=None,
        start_time=timestamp(dt.datetime.now(dt.UTC)),
    )


# SQLite -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_stack(pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("faults-sqlite")
    stack = start_stack(pki, directory)
    engines = {name: create_engine(f"sqlite:///{directory / name}.db") for name in DATABASES}
    try:
        with stack.as_officer(SAMPLE.unit_code) as officer:
            yield Running(stack, engines, officer, {})
    finally:
        stack.stop_all()
        for engine in engines.values():
            engine.dispose()


@contextmanager
def _sqlite_locked(path: Path, seconds: float) -> Iterator[threading.Thread]:
    """Another connection holds BEGIN EXCLUSIVE on ``path`` for ``seconds`` from entry."""
    taken = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            taken.set()
            threading.Event().wait(seconds)  # the fault lasts this long
            connection.execute("COMMIT")
        finally:
            connection.close()

    holder = threading.Thread(target=hold, name="sqlite-lock")
    holder.start()
    try:
        assert taken.wait(10), "the lock was not taken"
        yield holder
    finally:
        holder.join()


@pytest.mark.parametrize("locked", DATABASES)
def test_a_locked_sqlite_database_makes_a_registration_wait_or_refuse_and_never_half_write(
    sqlite_stack: Running, locked: str
) -> None:
    """A SQLite database held under BEGIN EXCLUSIVE by another connection for a few seconds:
    a registration made meanwhile waits and succeeds, or is answered UNAVAILABLE (never
    INTERNAL or UNKNOWN); once the lock goes, the same request succeeds with exactly one
    registration and its event, and its one PIN arrives."""
    running = sqlite_stack
    request = _new_request()
    path = Path(str(make_url(str(running.engines[locked].url)).database))
    with _sqlite_locked(path, OUTAGE):
        first = _register(running.officer, request)
    assert first.code in CLEAN, first
    if first.code == grpc.StatusCode.UNAVAILABLE:
        _assert_refused_cleanly(first)
    again = _register(running.officer, request)
    assert again.code == grpc.StatusCode.OK, again
    assert again.registration is not None
    waited = _assert_pin_arrives_once(running, request.request_id)
    log.info(
        "%s.db locked %.1f s: first call %s after %.2f s, retry OK, PIN after %.2f s more",
        locked, OUTAGE, first.code.name, first.seconds, waited,
    )  # fmt: skip
    if first.registration is not None:
        assert first.registration.name == again.registration.name


# PostgreSQL through fault proxies ---------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_stack(
    pki: DevPki, postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """The stack on three fresh PostgreSQL databases, each reached through a fault proxy."""
    server = make_url(postgres_server)
    names = {name: f"lienthong_test_{name}_{uuid.uuid4().hex[:8]}" for name in DATABASES}
    direct = {
        name: server.set(database=database).render_as_string(hide_password=False)
        for name, database in names.items()
    }
    with ExitStack() as cleanup:
        admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
        cleanup.callback(admin.dispose)

        @cleanup.callback
        def drop() -> None:
            with admin.connect() as connection:
                for database in names.values():
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

        proxies = {
            name: FaultProxy(server.host or "127.0.0.1", server.port or 5432).start()
            for name in DATABASES
        }
        for proxy in proxies.values():
            cleanup.callback(proxy.close)
        proxied = {
            name: server.set(host="127.0.0.1", port=proxies[name].port, database=names[name])
            .render_as_string(hide_password=False)
            for name in DATABASES
        }  # fmt: skip
        stack = start_stack(pki, tmp_path_factory.mktemp("faults-pg"), databases=proxied)

        @cleanup.callback
        def stop() -> None:
            for proxy in proxies.values():
                proxy.up()  # the gateway signs a last checkpoint as it stops
            stack.stop_all()

        engines = {name: create_engine(url) for name, url in direct.items()}
        for engine in engines.values():
            cleanup.callback(engine.dispose)
        officer = cleanup.enter_context(stack.as_officer(SAMPLE.unit_code))
        yield Running(stack, engines, officer, proxies)


@contextmanager
def _unreachable(running: Running, names: tuple[str, ...], mode: Mode) -> Iterator[float]:
    """``names``' databases unreachable from the services until exit; yields the start."""
    for name in names:
        running.proxies[name].down(mode)
    try:
        yield time.monotonic()
    finally:
        for name in names:
            running.proxies[name].up()


def _calls_during(running: Running, started: float, request: service.RegisterBirthRequest,
                  read: str) -> list[Answer]:  # fmt: skip
    """Registrations of ``request`` and reads of ``read``, side by side, until the outage ends.

    Each round is one registration and one read at once, as two officers' calls would come;
    a round follows the last after a few tenths of a second, as a person or a client's
    backoff would retry, and no faster, or the gateway's rate limit would answer instead.
    """
    answers: list[Answer] = []
    with ThreadPoolExecutor(2) as pool:
        while time.monotonic() - started < OUTAGE or not answers:
            registering = pool.submit(_register, running.officer, request)
            reading = pool.submit(_get, running.officer, read)
            answers += [registering.result(), reading.result()]
            threading.Event().wait(RETRY_EVERY)
    return answers


def _first_registration(running: Running) -> str:
    """A registration made while every database is up, to read during the outage."""
    request = _new_request()
    answer = _register(running.officer, request)
    assert answer.code == grpc.StatusCode.OK, answer
    assert answer.registration is not None
    return answer.registration.name


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("names", "mode"),
    [(DATABASES, "refuse"), (DATABASES, "blackhole"), (("justice",), "blackhole")],
    ids=["all-refused", "all-blackholed", "registry-blackholed"],
)
def test_postgresql_unreachable_answers_unavailable_and_recovers_without_a_restart(
    postgres_stack: Running, names: tuple[str, ...], mode: Mode
) -> None:
    """PostgreSQL databases unreachable for a few seconds (connections cut, and new ones reset
    or left unanswered): each registration and read made meanwhile is answered UNAVAILABLE
    with a fixed message within its deadline, and writes nothing; once the databases are
    back, the first retry of the same request succeeds without restarting any service, with
    exactly one registration, its PIN, and an audit log that verifies. When only the
    registry's database was away, the audit log holds each refused exchange."""
    running = postgres_stack
    earlier = _first_registration(running)
    request = _new_request()
    with _unreachable(running, names, mode) as started:
        answers = _calls_during(running, started, request, earlier)
    for answer in answers:
        _assert_refused_cleanly(answer)
    _assert_not_registered(running, request.request_id)
    back = time.monotonic()
    again = _register(running.officer, request)
    assert again.code == grpc.StatusCode.OK, again
    recovered = time.monotonic() - back
    read = _get(running.officer, earlier)
    assert read.code == grpc.StatusCode.OK, read
    waited = _assert_pin_arrives_once(running, request.request_id)
    _assert_audit_verifies(running)
    if "audit" not in names:
        refused = running.stack.gateway.audit.completions(
            CompletionQuery(request_id=request.request_id, status="UNAVAILABLE")
        )
        assert len(refused) == len(answers) // 2
    log.info(
        "PG %s %s %.1f s: %d calls UNAVAILABLE (slowest %.2f s), first call after up OK in"
        " %.2f s, PIN after %.2f s more",
        "+".join(names), mode, OUTAGE, len(answers), max(a.seconds for a in answers),
        recovered, waited,
    )  # fmt: skip


@pytest.mark.postgres
def test_the_gateway_forwards_nothing_while_its_audit_database_is_down(
    postgres_stack: Running,
) -> None:
    """The audit database alone unreachable: the gateway answers UNAVAILABLE and does not
    forward (the registry never sees the request); once it is back the same request is
    forwarded, registered once, and the audit log verifies."""
    running = postgres_stack
    request = _new_request()
    with _unreachable(running, ("audit",), "refuse"):
        refused = _register(running.officer, request)
    _assert_refused_cleanly(refused)
    assert refused.details.startswith("the audit log"), refused
    _assert_not_registered(running, request.request_id)
    again = _register(running.officer, request)
    assert again.code == grpc.StatusCode.OK, again
    _assert_pin_arrives_once(running, request.request_id)
    _assert_audit_verifies(running)
    log.info("PG audit down: refused in %.2f s, not forwarded; after up OK in %.2f s",
             refused.seconds, again.seconds)  # fmt: skip


@pytest.mark.postgres
def test_a_registration_made_while_the_population_database_is_down_gets_its_pin_later(
    postgres_stack: Running,
) -> None:
    """The population database alone unreachable: a registration is accepted with its PIN
    pending, and the outbox delivers the one PIN once the database is back, without a
    restart."""
    running = postgres_stack
    request = _new_request()
    with _unreachable(running, ("police",), "refuse") as started:
        answer = _register(running.officer, request)
        # The fault lasts its time whatever the call took.
        threading.Event().wait(max(0.0, OUTAGE - (time.monotonic() - started)))
    assert answer.code == grpc.StatusCode.OK, answer
    assert answer.registration is not None
    assert answer.registration.pin_status == br.PIN_STATUS_PENDING
    waited = _assert_pin_arrives_once(running, request.request_id)
    log.info("PG police down %.1f s: PIN arrived %.2f s after up", OUTAGE, waited)


@pytest.mark.postgres
@pytest.mark.parametrize("table", ["birth_registration", "registration_event"])
def test_a_locked_postgresql_table_makes_a_registration_wait_and_never_half_write(
    postgres_stack: Running, table: str
) -> None:
    """A registry table held under LOCK TABLE ... IN ACCESS EXCLUSIVE MODE by an open
    transaction for a few seconds: a registration made meanwhile waits and then completes
    (or is answered UNAVAILABLE), with exactly one registration and its event, never one
    without the other."""
    running = postgres_stack
    request = _new_request()
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with running.engines["justice"].begin() as connection:
            connection.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            taken.set()
            release.wait(OUTAGE)  # the fault lasts this long

    holder = threading.Thread(target=hold, name="table-lock")
    holder.start()
    try:
        assert taken.wait(10), "the lock was not taken"
        answer = _register(running.officer, request)
    finally:
        release.set()
        holder.join()
    assert answer.code in CLEAN, answer
    if answer.code == grpc.StatusCode.UNAVAILABLE:
        _assert_refused_cleanly(answer)
        again = _register(running.officer, request)
        assert again.code == grpc.StatusCode.OK, again
    _assert_pin_arrives_once(running, request.request_id)
    log.info("PG %s locked %.1f s: call %s after %.2f s", table, OUTAGE, answer.code.name,
             answer.seconds)  # fmt: skip
