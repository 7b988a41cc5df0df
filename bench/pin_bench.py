"""PIN allocation benchmark: many PINs for one prefix, and whether a draw slows as it fills.

Usage: .venv/bin/python bench/pin_bench.py [--count 200000] [--postgres URL]

Issues --count PINs through PopulationRegister.issue, one committed transaction each, all for
one prefix (girls born 2016 and registered at commune 00004 in Hà Nội: prefix 001316), the
registrations birthRegistrations/00004-2016-1 .. -{count}. The database is a fresh SQLite
file (WAL, synchronous=FULL, as lienthong.db.make_engine configures it), or with --postgres a
fresh database created on that server and dropped afterwards. Each issue is timed; the report
compares the mean of the first 1,000 issues with that of the last 1,000, since a draw must
cost the same however full the prefix is. Every PIN is then checked to be 12 digits, to carry
the prefix, and to be unique. Logs below WARNING are dropped, so that the figures time the
register and its database rather than the per-issue log line.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy

from lienthong import pin
from lienthong.calendar.v1 import date_pb2
from lienthong.db import make_engine, session_factory
from lienthong.logs import configure_logging
from lienthong.person.v1 import ethnicity_pb2, nationality_pb2, person_name_pb2, sex_pb2
from lienthong.place.v1 import administrative_unit_pb2, place_pb2
from lienthong.population.v1 import citizen_pb2, citizen_service_pb2
from lienthong.reference import code_lists
from police_adapter.models import create_schema
from police_adapter.population import PopulationRegister

COMMUNE = "00004"  # Phường Trúc Bạch, Quận Ba Đình, Hà Nội: PIN province 001
PREFIX = "001316"  # Hà Nội 001, a girl born 2000-2099: 3, year 16
WINDOW = 1_000  # issues averaged at the start and at the end


def issue_request(n: int) -> citizen_service_pb2.IssuePersonalIdentificationNumberRequest:
    """A valid request for registration number ``n``: a girl born 2016, registered in Hà Nội."""
    vietnamese = nationality_pb2.Nationality(country_code="VN")
    return citizen_service_pb2.IssuePersonalIdentificationNumberRequest(
        request_id=str(uuid.uuid4()),
        registered_birth=citizen_pb2.RegisteredBirth(
            birth_registration=f"birthRegistrations/{COMMUNE}-2016-{n}",
            full_name=person_name_pb2.PersonName(
                family_name="LÊ", middle_name="THỊ", given_name="HOA"
            ),
            date_of_birth=date_pb2.Date(year=2016, month=3, day=14),
            sex=sex_pb2.SEX_FEMALE,
            registration_place=administrative_unit_pb2.AdministrativeUnit(
                level=administrative_unit_pb2.ADMINISTRATIVE_LEVEL_COMMUNE, code=COMMUNE
            ),
            home_town=place_pb2.Place(
                country_code="VN",
                administrative_unit=administrative_unit_pb2.AdministrativeUnit(
                    level=administrative_unit_pb2.ADMINISTRATIVE_LEVEL_PROVINCE, code="01"
                ),
            ),
            ethnicity=ethnicity_pb2.Ethnicity(code="01"),
            nationality=vietnamese,
            father=citizen_pb2.RelatedPerson(
                full_name=person_name_pb2.PersonName(family_name="LÊ", given_name="NAM"),
                nationality=vietnamese,
            ),
            mother=citizen_pb2.RelatedPerson(undetermined=True),
        ),
    )


def issue_all(url: str, count: int) -> tuple[list[str], list[float]]:
    """Issue ``count`` PINs one after another; return them and each issue's seconds."""
    engine = make_engine(url)
    create_schema(engine)
    register = PopulationRegister(session_factory(engine), code_lists())
    numbers: list[str] = []
    seconds: list[float] = []
    try:
        for n in range(1, count + 1):
            request = issue_request(n)
            started = time.perf_counter()
            answer = register.issue(request)
            seconds.append(time.perf_counter() - started)
            numbers.append(answer.personal_identification_number)
            if n % 20_000 == 0:
                print(f"  {n:,} issued", flush=True)
    finally:
        engine.dispose()
    return numbers, seconds


def malformed(numbers: list[str]) -> list[str]:
    """The numbers that are not 12 digits encoding a girl born 2016 registered in Hà Nội."""
    wrong = []
    for number in numbers:
        try:
            parts = pin.parse(number)
        except ValueError:
            wrong.append(number)
            continue
        if not number.startswith(PREFIX) or (parts.sex, parts.birth_year) != (
            sex_pb2.SEX_FEMALE,
            2016,
        ):
            wrong.append(number)
    return wrong


@contextmanager
def database(postgres_admin_url: str | None) -> Iterator[str]:
    """A fresh database URL: a temporary SQLite file, or a PostgreSQL database dropped after."""
    if postgres_admin_url is None:
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{Path(directory) / 'pin_bench.db'}"
        return
    name = f"lienthong_bench_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = sqlalchemy.make_url(postgres_admin_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> None:
    """Issue, time and check; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200_000, help="PINs to issue")
    parser.add_argument(
        "--postgres", metavar="URL", help="admin URL of a PostgreSQL server (default: SQLite)"
    )
    arguments = parser.parse_args()
    # The per-issue "pin_issued" line would time the terminal, not the allocation.
    configure_logging("pin_bench", stream=sys.stderr, level=logging.WARNING)
    if arguments.count < 2 * WINDOW:
        parser.error(f"--count must be at least {2 * WINDOW}")
    backend = "PostgreSQL" if arguments.postgres else f"SQLite {sqlite3.sqlite_version}"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {backend}"
    )
    print(f"issuing {arguments.count:,} PINs for prefix {PREFIX}, one transaction each")
    with database(arguments.postgres) as url:
        started = time.perf_counter()
        numbers, seconds = issue_all(url, arguments.count)
        total = time.perf_counter() - started
    first = statistics.fmean(seconds[:WINDOW]) * 1000
    last = statistics.fmean(seconds[-WINDOW:]) * 1000
    print(f"total: {total:,.1f} s")
    print(f"rate: {arguments.count / total:,.0f} PINs/s")
    print(f"mean ms per PIN, first {WINDOW:,}: {first:.3f}")
    print(f"mean ms per PIN, last {WINDOW:,}: {last:.3f}")
    print(f"last / first: {last / first:.2f}")
    duplicates = len(numbers) - len(set(numbers))
    wrong = malformed(numbers)
    verdict = "OK" if duplicates == 0 and not wrong else "FAILED"
    print(
        f"check: {verdict}: {len(numbers):,} PINs, {len(set(numbers)):,} distinct, "
        f"{duplicates:,} duplicates, {len(wrong):,} malformed"
    )
    if verdict != "OK":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
