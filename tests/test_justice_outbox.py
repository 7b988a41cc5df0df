"""The transactional outbox of PIN requests: unit tests with a fake population database and a
clock the test turns, on SQLite and PostgreSQL; the adapter's worker through a fake gateway;
and the acceptance test through the real stack (gateway and Police adapter)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from justice_fixtures import AsUnitOfficers
from sqlalchemy import select, update
from stack import Stack, as_caller, create_officer, start_stack
from stack import tls_of as tls_files
from structlog.testing import capture_logs
from test_justice_registry import registration, request

from justice_adapter.models import BirthRegistrationRow
from justice_adapter.outbox import OutboxWorker, PinOutbox
from justice_adapter.pin_requests import PinRejected, pin_fits
from justice_adapter.registry import BirthRegistry
from justice_adapter.server import create_adapter
from lienthong import metadata, pin
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import birth_registration_service_pb2 as service
from lienthong.civilregistry.v1 import birth_registration_service_pb2_grpc as service_grpc
from lienthong.config import JusticeConfig
from lienthong.db import make_engine, session_factory
from lienthong.demo import SAMPLES, sample_request
from lienthong.errors import Unavailable
from lienthong.reference import Level, code_lists
from lienthong.tls import secure_channel
from police_adapter.models import CitizenRecord

START = dt.datetime(2030, 1, 1, 8, 0, tzinfo=dt.UTC)
LEASE = 30.0
GATEWAY = "spiffe://lienthong.local/gateway"


# Fakes ------------------------------------------------------------------------------------


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Crash(BaseException):
    """The adapter process dying: nothing after it runs, no handler catches it."""


class PopulationSide:
    """A fake population database behind the gateway, idempotent as the real one.

    ``mode`` is "up", "down" (Unavailable), "refusing" (PinRejected) or "wrong" (a PIN of
    another province). The first call for a
    registration draws its PIN; later calls return the same one. With ``crash_after_issue``
    the PIN is drawn and then the calling process dies before it hears the answer.
    """

    def __init__(self, mode: str = "up", *, delay: float = 0.0) -> None:
        self.mode = mode
        self.delay = delay
        self.crash_after_issue = False
        self.calls: list[tuple[str, str]] = []
        self.issued: dict[str, str] = {}
        self._lock = threading.Lock()
        self._serial = 0

    def issue(
        self, registration: br.BirthRegistration, request_id: str, *, timeout: float = 5.0
    ) -> str:
        assert timeout > 0
        with self._lock:
            self.calls.append((registration.name, request_id))
        if self.delay:
            time.sleep(self.delay)
        if self.mode == "down":
            raise Unavailable("population database: UNAVAILABLE")
        if self.mode == "refusing":
            raise PinRejected(grpc.StatusCode.INVALID_ARGUMENT, "child.full_name NGUYỄN")
        if self.mode == "wrong":  # a well-formed PIN of Hồ Chí Minh City (079)
            child = registration.child
            return pin.prefix("079", child.date_of_birth.year, child.sex) + "000001"
        with self._lock:
            if registration.name not in self.issued:
                self._serial += 1
                self.issued[registration.name] = _lawful_pin(registration, self._serial)
            value = self.issued[registration.name]
        if self.crash_after_issue:
            raise Crash
        return value

    def calls_for(self, name: str) -> list[str]:
        """The request_ids sent for registration ``name``, in order."""
        return [request_id for called, request_id in self.calls if called == name]


def _lawful_pin(registration: br.BirthRegistration, serial: int) -> str:
    codes = code_lists()
    unit = registration.registration_unit
    found = codes.unit(Level(unit.level), unit.code)
    assert found is not None
    child = registration.child
    prefix = pin.prefix(codes.pin_province_code(found), child.date_of_birth.year, child.sex)
    return f"{prefix}{serial:06d}"


# Fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def population():
    return PopulationSide("down")


@pytest.fixture
def outbox(sessions, population, clock):
    return PinOutbox(sessions, population, code_lists(), clock=clock, lease=LEASE)


@pytest.fixture
def registry(sessions, outbox):
    return AsUnitOfficers(BirthRegistry(sessions, outbox, code_lists()))


def row_of(sessions, name: str) -> BirthRegistrationRow:
    with sessions() as session:
        return session.scalars(
            select(BirthRegistrationRow).where(BirthRegistrationRow.name == name)
        ).one()


def seconds_until_due(sessions, name: str, clock: Clock) -> float:
    due = row_of(sessions, name).pin_next_attempt_at
    assert due is not None
    return (due - clock.now).total_seconds()


# Delivery ---------------------------------------------------------------------------------


def test_a_pending_registration_is_delivered_once_the_population_database_is_back(
    registry, outbox, population, sessions, clock
):
    """Registered while the population side is down, the PIN arrives on the first due retry."""
    sent = request()
    entered = registry.register_birth(sent)
    assert entered.pin_status == br.PIN_STATUS_PENDING
    row = row_of(sessions, entered.name)
    assert (row.pin_attempts, row.pin_last_error) == (1, "UNAVAILABLE")

    population.mode = "up"
    assert outbox.deliver_due() == 0  # not due yet: the backoff holds
    clock.advance(seconds_until_due(sessions, entered.name, clock))
    with capture_logs() as logs:
        assert outbox.deliver_due() == 1

    stored = registry.get(entered.name)
    assert stored.pin_status == br.PIN_STATUS_ISSUED
    assert stored.personal_identification_number == population.issued[entered.name]
    assert pin_fits(stored.personal_identification_number, stored, code_lists())
    assert stored.update_time.ToDatetime() >= entered.update_time.ToDatetime()
    # Every request, the immediate one and the retry, carried the RegisterBirth request_id.
    assert population.calls_for(entered.name) == [sent.request_id, sent.request_id]
    row = row_of(sessions, entered.name)
    assert (row.pin_attempts, row.pin_next_attempt_at, row.pin_last_error) == (2, None, None)
    assert logs == [
        {
            "event": "pin_delivered",
            "log_level": "info",
            "birth_registration": entered.name,
            "attempts": 2,
        }
    ]


def test_a_registration_whose_process_dies_is_delivered_when_its_lease_ends(
    registry, outbox, population, sessions, clock, monkeypatch
):
    """The outbox entry commits with the registration, held by its immediate attempt: a
    process that dies before that attempt leaves the request to the worker, one lease on."""

    def die(*args):
        del args
        raise Crash

    monkeypatch.setattr(outbox, "deliver_new", die)
    sent = request()
    with pytest.raises(Crash):
        registry.register_birth(sent)
    monkeypatch.undo()

    (row,) = _all_rows(sessions)
    assert (row.pin_status, row.pin_attempts) == (br.PIN_STATUS_PENDING, 0)
    assert row.pin_next_attempt_at == clock.now + dt.timedelta(seconds=LEASE)
    population.mode = "up"
    assert outbox.deliver_due() == 0  # not before the lease ends: no race with the attempt
    clock.advance(LEASE)
    assert outbox.deliver_due() == 1
    assert population.calls_for(row.name) == [sent.request_id]


def test_no_outbox_entry_for_a_registration_without_pin(registry, sessions, population):
    """A foreign child's registration is never sent to the population database."""
    entered = registry.register_birth(request(registration(child_nationality="KR")))

    row = row_of(sessions, entered.name)
    assert row.pin_next_attempt_at is None
    assert population.calls == []


def test_backoff_grows_exponentially_with_jitter_and_is_capped(sessions, population, clock):
    """Each failed attempt doubles the wait (jittered down by at most half) up to max_delay."""
    outbox = PinOutbox(
        sessions, population, code_lists(), clock=clock, base_delay=0.5, max_delay=4.0
    )
    registry = AsUnitOfficers(BirthRegistry(sessions, outbox, code_lists()))
    name = registry.register_birth(request()).name
    waits = []
    for attempts in range(1, 9):
        wait = seconds_until_due(sessions, name, clock)
        ceiling = min(4.0, 0.5 * 2 ** (attempts - 1))
        assert ceiling / 2 <= wait <= ceiling, (attempts, wait)
        waits.append(wait)
        clock.advance(wait - 0.001)
        assert outbox.deliver_due() == 0
        assert len(population.calls) == attempts  # nothing sent before it is due
        clock.advance(0.001)
        assert outbox.deliver_due() == 0
        assert len(population.calls) == attempts + 1

    # Until the cap the windows do not overlap: jitter never lets a wait shrink. Past it, every
    # wait stays between half the cap and the cap.
    assert waits[:4] == sorted(waits[:4])
    assert all(2.0 <= wait <= 4.0 for wait in waits[3:])
    row = row_of(sessions, name)
    assert (row.pin_attempts, row.pin_last_error) == (9, "UNAVAILABLE")


def test_retry_delay_does_not_overflow_after_many_attempts(outbox):
    """A request failing for months keeps being retried every max_delay."""
    assert 15.0 <= outbox.retry_delay(10_000) <= 30.0


def test_a_refused_request_is_not_retried_before_max_delay(
    registry, outbox, population, sessions, clock
):
    """A definitive refusal is recorded by code and asked again only after max_delay."""
    population.mode = "refusing"
    with capture_logs() as logs:
        entered = registry.register_birth(request())

    row = row_of(sessions, entered.name)
    assert (row.pin_status, row.pin_last_error) == (br.PIN_STATUS_PENDING, "INVALID_ARGUMENT")
    assert seconds_until_due(sessions, entered.name, clock) == 30.0
    clock.advance(29.999)
    assert outbox.deliver_due() == 0
    assert len(population.calls) == 1
    clock.advance(0.001)
    assert outbox.deliver_due() == 0
    assert len(population.calls) == 2
    assert seconds_until_due(sessions, entered.name, clock) == 30.0
    assert logs[-1] == {
        "event": "pin_delivery_failed",
        "log_level": "error",
        "birth_registration": entered.name,
        "code": "INVALID_ARGUMENT",
        "attempts": 1,
        "retry_in": 30.0,
    }
    assert "NGUYỄN" not in repr(logs)  # the refusal's message is not logged


def test_a_pin_that_does_not_fit_is_not_stored_and_not_retried_soon(
    registry, population, sessions, clock
):
    """A PIN of another province breaks Decree 137/2015 Art. 13: kept out, like a refusal."""
    population.mode = "wrong"

    entered = registry.register_birth(request())

    row = row_of(sessions, entered.name)
    assert (row.pin, row.pin_status, row.pin_last_error) == (
        None,
        br.PIN_STATUS_PENDING,
        "PIN_DOES_NOT_FIT",
    )
    assert seconds_until_due(sessions, entered.name, clock) == 30.0


def test_an_issued_registration_is_never_sent_again(registry, outbox, population, clock):
    """Once its PIN is stored, no later round sends the registration's request."""
    population.mode = "up"
    entered = registry.register_birth(request())
    assert entered.pin_status == br.PIN_STATUS_ISSUED

    for _ in range(5):
        clock.advance(3600)
        assert outbox.deliver_due() == 0

    assert len(population.calls) == 1


def test_a_late_outcome_does_not_replace_a_stored_pin(
    registry, outbox, population, sessions, clock
):
    """Whichever delivery stores the PIN first wins; a slower one reads it and stores nothing."""
    entered = registry.register_birth(request())
    clock.advance(1.0)
    (slow,) = outbox._claim(1)
    clock.advance(LEASE)  # the slow process stalled past its lease
    population.mode = "up"
    assert outbox.deliver_due() == 1
    stored = row_of(sessions, entered.name)

    late = outbox._record(slow, outbox._call(slow, timeout=1.0))

    assert late.personal_identification_number == stored.pin
    after = row_of(sessions, entered.name)
    assert (after.pin, after.pin_attempts, after.update_time) == (
        stored.pin,
        stored.pin_attempts,
        stored.update_time,
    )


def test_a_crash_between_claim_and_outcome_leaves_the_row_due_after_the_lease(
    registry, outbox, population, sessions, clock
):
    """The claim committed, the answer was lost: after the lease another process sends the
    same request_id and stores the PIN the population side drew the first time."""
    sent = request()
    entered = registry.register_birth(sent)
    clock.advance(seconds_until_due(sessions, entered.name, clock))
    population.mode = "up"
    population.crash_after_issue = True

    with pytest.raises(Crash):
        outbox.deliver_due()

    drawn = population.issued[entered.name]
    row = row_of(sessions, entered.name)
    assert (row.pin_status, row.pin_attempts) == (br.PIN_STATUS_PENDING, 1)
    assert seconds_until_due(sessions, entered.name, clock) == LEASE
    population.crash_after_issue = False
    restarted = PinOutbox(sessions, population, code_lists(), clock=clock, lease=LEASE)
    clock.advance(LEASE - 0.001)
    assert restarted.deliver_due() == 0  # the lease still keeps it
    clock.advance(0.001)
    assert restarted.deliver_due() == 1

    assert population.calls_for(entered.name) == [sent.request_id] * 3
    assert row_of(sessions, entered.name).pin == drawn
    assert len(population.issued) == 1


def test_a_stopped_batch_gives_back_the_rows_it_did_not_send(
    registry, outbox, population, sessions, clock
):
    """Stopping mid-batch leaves the unsent rows due at once, not a lease later."""
    names = [registry.register_birth(request()).name for _ in range(3)]
    clock.advance(1.0)
    population.mode = "up"
    stop = threading.Event()
    stop.set()

    assert outbox.deliver_due(stop=stop) == 0

    assert len(population.calls) == 3  # the three immediate attempts only
    assert all(seconds_until_due(sessions, name, clock) == 0 for name in names)
    assert outbox.deliver_due() == 3


def test_processes_delivering_at_once_never_send_a_registration_twice(
    database_url, sessions, population
):
    """Four outboxes on their own connections share 120 due rows: each is sent exactly once."""
    registry = AsUnitOfficers(
        BirthRegistry(sessions, PinOutbox(sessions, population, code_lists()), code_lists())
    )
    names = {registry.register_birth(request()).name for _ in range(120)}
    with sessions.begin() as session:
        session.execute(
            update(BirthRegistrationRow).values(
                pin_next_attempt_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            )
        )
    population.calls.clear()
    population.mode = "up"
    population.delay = 0.005  # long enough for them to overlap on every batch
    engines = [make_engine(database_url) for _ in range(4)]
    outboxes = [PinOutbox(session_factory(e), population, code_lists()) for e in engines]
    start = threading.Barrier(4, timeout=30)

    def deliver(outbox: PinOutbox) -> int:
        start.wait()
        delivered = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _pending(sessions):
            delivered += outbox.deliver_due(limit=5)
        return delivered

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            delivered = list(pool.map(deliver, outboxes))
    finally:
        for engine in engines:
            engine.dispose()

    assert sum(delivered) == 120
    sent = Counter(name for name, _ in population.calls)
    assert set(sent) == names
    assert set(sent.values()) == {1}
    assert _pending(sessions) == 0


def _pending(sessions) -> int:
    with sessions() as session:
        rows = session.scalars(
            select(BirthRegistrationRow.id).where(
                BirthRegistrationRow.pin_status == br.PIN_STATUS_PENDING
            )
        ).all()
        return len(rows)


def _all_rows(sessions) -> list[BirthRegistrationRow]:
    with sessions() as session:
        return list(session.scalars(select(BirthRegistrationRow)).all())


# The worker -------------------------------------------------------------------------------


def test_the_worker_delivers_in_the_background_and_stops_on_request(sessions, population):
    """Started, it delivers without being asked and logs by name; stopped, its thread ends."""
    outbox = PinOutbox(sessions, population, code_lists(), base_delay=0.05, max_delay=0.2)
    registry = AsUnitOfficers(BirthRegistry(sessions, outbox, code_lists()))
    names = {registry.register_birth(request()).name for _ in range(3)}
    worker = OutboxWorker(outbox, interval=0.05)

    with capture_logs() as logs:
        worker.start()
        try:
            # The worker itself retries while the population side is down...
            _wait_for(lambda: sum(log["event"] == "pin_delivery_failed" for log in logs) >= 6)
            population.mode = "up"
            _wait_for(lambda: _pending(sessions) == 0)
        finally:
            worker.stop(timeout=10)

    assert not worker._thread.is_alive()
    delivered = [log for log in logs if log["event"] == "pin_delivered"]
    assert {log["birth_registration"] for log in delivered} == names
    failed = [log for log in logs if log["event"] == "pin_delivery_failed"]
    assert failed
    assert {log["code"] for log in failed} == {"UNAVAILABLE"}
    assert all(set(log) <= {"event", "log_level", "birth_registration", "code", "attempts",
                            "retry_in"} for log in logs)  # fmt: skip


def test_the_worker_outlives_a_failed_round(sessions, population):
    """A database error in one round is logged by its type and the next round runs."""
    population.mode = "up"
    outbox = PinOutbox(sessions, population, code_lists())
    rounds = []
    real = outbox.deliver_due

    def flaky(limit, *, stop):
        rounds.append(limit)
        if len(rounds) == 1:
            raise ConnectionError("database at 10.0.0.5 refused: parameters NGUYỄN")
        return real(limit, stop=stop)

    outbox.deliver_due = flaky
    worker = OutboxWorker(outbox, interval=0.01)
    with capture_logs() as logs:
        worker.start()
        try:
            _wait_for(lambda: len(rounds) >= 3)
        finally:
            worker.stop(timeout=10)

    assert logs[0] == {
        "event": "outbox_round_failed",
        "log_level": "error",
        "outbox": "PinOutbox",
        "error": "ConnectionError",
    }


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# The adapter runs its worker --------------------------------------------------------------


def test_the_served_adapter_delivers_a_pending_pin_when_the_gateway_is_back(pki, tmp_path, gateway):
    """Nobody calls again: the adapter's own worker completes the registration."""
    fake, gateway_address = gateway
    fake.failure = grpc.StatusCode.UNAVAILABLE
    adapter = create_adapter(
        JusticeConfig(
            listen="127.0.0.1:0",
            tls=tls_files(pki, "justice"),
            database_url=f"sqlite:///{tmp_path / 'justice.db'}",
            gateway=gateway_address,
            trusted_callers=frozenset({GATEWAY}),
            administrators=("admin",),
        )
    )
    adapter.start()
    try:
        with secure_channel(
            f"127.0.0.1:{adapter.port}", tls_files(pki, "gateway-client").read()
        ) as channel:
            sent = request()
            unit = sent.birth_registration.registration_unit.code
            create_officer(channel, "registrar", unit, direct=True)
            stub = service_grpc.BirthRegistrationServiceStub(channel)
            entered = stub.RegisterBirth(
                sent, timeout=10, metadata=as_caller("registrar")
            ).birth_registration
            assert entered.pin_status == br.PIN_STATUS_PENDING
            fake.failure = None

            def issued() -> bool:
                got = stub.GetBirthRegistration(
                    service.GetBirthRegistrationRequest(name=entered.name),
                    timeout=10,
                    metadata=as_caller("registrar"),
                ).birth_registration
                return got.personal_identification_number == "001316000042"

            _wait_for(issued)
    finally:
        adapter.stop(grace=None)


# Acceptance: the real stack ---------------------------------------------------------------


@pytest.fixture
def stack(pki, tmp_path: Path):
    running = start_stack(pki, tmp_path)
    yield running
    running.stop_all()


def test_births_registered_while_the_population_side_is_down_all_get_their_pin_later(
    stack: Stack, tmp_path: Path
):
    """Issue 6: 100 registrations succeed PENDING while the Police adapter is down; after its
    restart every one is issued within 60 s, each PIN lawful and distinct, each sent once."""
    codes = code_lists()
    stack.stop("police")
    with stack.as_officer(SAMPLES[0].unit_code) as channel:
        stub = service_grpc.BirthRegistrationServiceStub(channel)
        entered = []
        for _ in range(100):
            sent = sample_request(SAMPLES[0], codes)
            sent.request_id = str(uuid.uuid4())
            entered.append(
                stub.RegisterBirth(
                    sent,
                    timeout=10,
                    metadata=(
                        (metadata.REQUEST_ID, sent.request_id),
                        (metadata.PURPOSE, "birth-registration"),
                    ),
                ).birth_registration
            )
        assert {r.pin_status for r in entered} == {br.PIN_STATUS_PENDING}
        assert len({r.name for r in entered}) == 100

        stack.restart("police")
        issued: dict[str, br.BirthRegistration] = {}
        deadline = time.monotonic() + 60
        while len(issued) < 100 and time.monotonic() < deadline:
            for registration_ in entered:
                if registration_.name in issued:
                    continue
                got = stub.GetBirthRegistration(
                    service.GetBirthRegistrationRequest(name=registration_.name),
                    timeout=10,
                    metadata=((metadata.PURPOSE, "birth-registration"),),
                ).birth_registration
                if got.pin_status == br.PIN_STATUS_ISSUED:
                    issued[got.name] = got
            time.sleep(0.2)

    assert len(issued) == 100, f"{100 - len(issued)} still pending after 60 s"
    pins = {name: r.personal_identification_number for name, r in issued.items()}
    assert all(pin_fits(pins[name], issued[name], codes) for name in pins)
    assert len(set(pins.values())) == 100
    police = make_engine(f"sqlite:///{tmp_path / 'police.db'}")
    try:
        with session_factory(police)() as session:
            records = session.scalars(
                select(CitizenRecord).where(CitizenRecord.birth_registration.in_(list(pins)))
            ).all()
    finally:
        police.dispose()
    assert len(records) == 100
    assert {record.birth_registration: record.pin for record in records} == pins
