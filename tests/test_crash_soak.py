"""Crashes: kill -9 of every service during a replay loses, doubles and leaks nothing (issue 8).

The long soak (the whole pilot, `make soak`) runs the same harness, tests/crash_soak.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from crash_soak import DATABASES, SoakReport, SoakSettings, _scan_privacy, run_soak

from lienthong import pilot
from lienthong.reference import code_lists

# Twenty kills spread over a thousand registrations (tests/crash_soak.py holds the replay at
# each kill's point until it is done, so every kill falls during the replay).
SHORT_SOAK = SoakSettings(registrations=1_000, kills=20, concurrency=16, gap=(0.1, 0.5))


@pytest.fixture(params=["sqlite", "postgresql"])
def soak_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Empty databases for the three services: SQLite files, and PostgreSQL when reachable
    (dropped afterwards)."""
    if request.param == "sqlite":
        yield {name: f"sqlite:///{tmp_path / f'{name}.db'}" for name in DATABASES}
        return
    server = request.getfixturevalue("postgres_server")
    names = {name: f"lienthong_soak_{uuid.uuid4().hex[:12]}" for name in DATABASES}
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for database in names.values():
            connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
    url = sqlalchemy.make_url(server)
    yield {
        name: url.set(database=database).render_as_string(hide_password=False)
        for name, database in names.items()
    }
    with admin.connect() as connection:
        for database in names.values():
            connection.exec_driver_sql(f'DROP DATABASE "{database}" WITH (FORCE)')
    admin.dispose()


@pytest.mark.timeout(600)
def test_twenty_kills_during_a_replay_lose_double_and_leak_nothing(
    tmp_path: Path, soak_databases: dict[str, str]
) -> None:
    """Twenty SIGKILLs of the gateway and both adapters (each at least six times) during a
    replay, on SQLite and on PostgreSQL: every registration stored once, every eligible one
    holding one PIN that the population database holds too, the audit log verifying, every
    answer's receipt naming its exchange in the log, and no name or date of birth in logs,
    metrics or audit entries."""
    report = run_soak(SHORT_SOAK, tmp_path, urls=soak_databases)

    assert report.problems == [], report.summary()
    assert report.privacy_hits == [], report.summary()
    assert report.kills_during_replay >= SHORT_SOAK.kills
    assert min(report.kills[name] for name in ("gateway", "justice", "police")) >= 6
    assert report.answers == {"OK": SHORT_SOAK.registrations}
    assert report.receipts_checked >= SHORT_SOAK.registrations
    assert report.pins_issued == pilot.expected_counts(SHORT_SOAK.registrations)["pins_issued"]
    assert report.audit_verify.startswith("exit 0: OK")
    assert report.scanned["log lines"] > 0
    assert report.scanned["audit entries"] > 0
    assert report.scanned["metric lines"] > 0


def test_the_privacy_scan_finds_a_name_or_a_date_of_birth_wherever_it_is(tmp_path: Path) -> None:
    """The scan is not blind: a child's name in a log line (escaped as JSON escapes it), a
    parent's name in a metric and a date of birth in an audit entry are each reported."""
    requests = list(pilot.pilot_registrations(code_lists(), 3))
    child = requests[0].birth_registration.child
    mother = requests[1].birth_registration.mother.name
    born = requests[2].birth_registration.child.date_of_birth
    logs = tmp_path / "log"
    logs.mkdir()
    parts = (child.name.family_name, child.name.middle_name, child.name.given_name)
    full_name = " ".join(part for part in parts if part)
    (logs / "justice.jsonl").write_text(
        json.dumps({"event": "oops", "name": full_name.title()}) + "\n", encoding="utf-8"
    )
    metrics = (
        f'lienthong_oops{{who="{mother.family_name} {mother.middle_name} {mother.given_name}"}} 1'
    )
    audit = f"sqlite:///{tmp_path / 'audit.db'}"
    engine = sqlalchemy.create_engine(audit)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE audit_entry (entry BLOB)")
        connection.exec_driver_sql(
            "INSERT INTO audit_entry VALUES (?)",
            (f'{{"born":"{born.year:04d}-{born.month:02d}-{born.day:02d}"}}'.encode(),),
        )
    engine.dispose()
    report = SoakReport()

    _scan_privacy(requests, logs, metrics, audit, report)

    assert len(report.privacy_hits) == 3, report.privacy_hits
    assert [hit.split(":")[0] for hit in sorted(report.privacy_hits)] == [
        "audit entries", "log lines", "metric lines",
    ]  # fmt: skip
