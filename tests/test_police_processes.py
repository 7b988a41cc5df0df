"""PIN issuance from several OS processes at once, on one PostgreSQL database.

Four processes, each with its own engine and register as separate adapter replicas would
have, issue for the same 400 registrations in different orders, every one of them three times
(once, a retry of the same request, and a fresh request_id), all for one prefix so that every
draw contends for the same pool row. Whatever the interleaving, each registration must end
with one PIN, and no PIN may be given to two registrations.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import re
from multiprocessing.synchronize import Barrier

import pytest
from builders import issue_request
from sqlalchemy import select

from lienthong.db import make_engine, session_factory
from lienthong.logs import configure_logging
from lienthong.reference import code_lists
from police_adapter.models import CitizenRecord, create_schema
from police_adapter.population import PopulationRegister

PROCESSES = 4
REGISTRATIONS = [f"birthRegistrations/00004-2016-{n}" for n in range(1, 401)]
# Hà Nội 001, a girl born 2000-2099: 3, year 16, then six digits.
HA_NOI_GIRL_2016 = re.compile(r"^001316\d{6}$")

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]


def _start_together(barrier: Barrier) -> None:
    """Pool initializer: quiet logs, then wait until every process has started."""
    configure_logging("police_adapter", level=logging.WARNING)
    barrier.wait(timeout=60)


def issue_in_order(url: str, registrations: list[str]) -> dict[str, set[str]]:
    """Issue each registration three times in this process; the PINs received for each.

    The three calls are the first request, the same request again (a retry after a lost
    answer) and a new request with a fresh request_id (a retry by a client that lost state).
    """
    engine = make_engine(url)
    register = PopulationRegister(session_factory(engine), code_lists())
    received: dict[str, set[str]] = {}
    try:
        for registration in registrations:
            request = issue_request(registration)
            fresh = issue_request(registration)
            received[registration] = {
                register.issue(attempt).personal_identification_number
                for attempt in (request, request, fresh)
            }
    finally:
        engine.dispose()
    return received


def test_processes_issuing_for_the_same_registrations_agree_on_one_pin_each(postgres_url):
    engine = make_engine(postgres_url)
    create_schema(engine)
    orders = [random.sample(REGISTRATIONS, len(REGISTRATIONS)) for _ in range(PROCESSES)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)

    with context.Pool(PROCESSES, initializer=_start_together, initargs=(barrier,)) as pool:
        results = pool.starmap(issue_in_order, [(postgres_url, order) for order in orders])

    pins_of: dict[str, set[str]] = {registration: set() for registration in REGISTRATIONS}
    for received in results:
        assert set(received) == set(REGISTRATIONS)
        for registration, pins in received.items():
            pins_of[registration] |= pins
    several = {registration: pins for registration, pins in pins_of.items() if len(pins) != 1}
    assert several == {}, "a registration received more than one PIN"
    pin_of = {registration: pins.pop() for registration, pins in pins_of.items()}
    assert len(set(pin_of.values())) == len(REGISTRATIONS), "a PIN went to two registrations"
    malformed = [pin for pin in pin_of.values() if not HA_NOI_GIRL_2016.match(pin)]
    assert malformed == []

    with session_factory(engine)() as session:
        stored = dict(
            session.execute(select(CitizenRecord.birth_registration, CitizenRecord.pin)).all()
        )
        rows = session.scalars(select(CitizenRecord.pin)).all()
    engine.dispose()
    assert len(rows) == len(REGISTRATIONS)
    assert stored == pin_of
