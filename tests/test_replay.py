"""The pilot replay: its generator keeps the published proportions, and a short replay
through the real stack is counted by the registry as the generator says."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from stack import Stack, officer_tls, start_stack

from certs.pki import BOOTSTRAP_ADMINISTRATOR
from justice_adapter.validation import validate_register_birth
from lienthong import pilot, replay
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.demo import statistics_of
from lienthong.reference import Level, code_lists
from lienthong.tls import secure_channel


def test_the_published_total_has_exactly_the_published_mix():
    """88,982 registrations: 84,674 given a PIN and 4,308 not, as on 27 April 2016."""
    expected = pilot.expected_counts(88_982)

    assert expected["pins_issued"] == 84_674
    assert expected["not_applicable_foreign"] + expected["not_applicable_re_registration"] == 4_308


def test_the_generated_registrations_are_valid_and_in_the_pilot_localities():
    """Every request passes the registry's validation, in a pilot unit of the right level."""
    codes = code_lists()
    units = {unit.code: unit for unit in pilot.pilot_units(codes).all()}
    requests = list(pilot.pilot_registrations(codes, 2_000))
    kinds: dict[str, int] = {}
    for request in requests:
        validate_register_birth(request, codes)
        registration = request.birth_registration
        unit = units[registration.registration_unit.code]
        assert unit.province_code in pilot.PROVINCES or unit.district_code in pilot.DISTRICTS
        procedure = br.RegistrationProcedure.Name(registration.procedure)
        kinds[procedure] = kinds.get(procedure, 0) + 1
        if registration.procedure != br.REGISTRATION_PROCEDURE_RE_REGISTRATION:
            born = registration.child.date_of_birth
            assert (2016, 1, 1) <= (born.year, born.month, born.day) <= (2016, 4, 27)
    assert len({request.request_id for request in requests}) == 2_000
    assert set(kinds) == {
        "REGISTRATION_PROCEDURE_FIRST_REGISTRATION",
        "REGISTRATION_PROCEDURE_FOREIGN_ELEMENT",
        "REGISTRATION_PROCEDURE_RE_REGISTRATION",
    }
    sexes = {request.birth_registration.child.sex for request in requests}
    assert len(sexes) == 2
    assert requests == list(pilot.pilot_registrations(codes, 2_000))  # seeded: repeatable
    other = next(pilot.pilot_registrations(codes, 1_000))
    assert other.request_id not in {request.request_id for request in requests}


def test_the_pilot_units_are_the_five_localities():
    """1,199 communes and 76 districts that register: the pilot's 1,276 units, less one."""
    units = pilot.pilot_units(code_lists())

    assert len(units.communes) == 1_199
    assert all(unit.level == Level.DISTRICT for unit in units.districts)
    assert len(units.all()) == 1_275


@pytest.fixture
def stack(pki, tmp_path: Path):
    running = start_stack(pki, tmp_path)
    yield running
    running.stop_all()


def test_a_short_replay_through_the_real_path_is_counted_as_generated(stack: Stack):
    """300 registrations by their units' officers: the registry counts what the generator made."""
    administrator = officer_tls(stack.pki, BOOTSTRAP_ADMINISTRATOR)

    outcome = replay.replay(
        stack.gateway_address,
        administrator,
        stack.pki.directory,
        code_lists(),
        count=300,
        concurrency=16,
        officers=0,
        out=io.StringIO(),
    )

    assert outcome.codes == {"OK": 300}
    with secure_channel(stack.gateway_address, administrator.read()) as channel:
        assert replay.wait_for_pins(channel, timeout=60) == 0
        total = statistics_of(channel, replay.LOCALITIES).total
    expected = pilot.expected_counts(300)
    assert total.registrations == expected["registrations"]
    assert total.pins_issued == expected["pins_issued"]
    assert total.not_applicable_foreign == expected["not_applicable_foreign"]
    assert total.not_applicable_re_registration == expected["not_applicable_re_registration"]
    assert total.pins_pending == 0
