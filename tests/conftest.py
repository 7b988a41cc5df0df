"""Fixtures shared by the test suite: the development PKI, databases, and the whole stack."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from xdist.scheduler import LoadFileScheduling

from certs.pki import DevPki, init_dev_pki

pytest_plugins = ["gateway_fixtures", "justice_fixtures"]


# `make test` hands whole modules to its workers in collection order (--dist loadfile
# --no-loadscope-reorder): the longest go first, so that none starts last and runs alone.
LONGEST_MODULES = (
    "test_crash_soak.py",
    "test_gateway_processes.py",
    "test_reconciliation.py",
    "test_audit.py",
    "test_police_population.py",
    "test_replay.py",
    "test_police_processes.py",
    "test_justice_outbox.py",
)


# Tests long enough to be handed out one by one rather than with their module (they share no
# module-scoped fixture): the crash soak on SQLite and on PostgreSQL run side by side.
ONE_BY_ONE = ("tests/test_crash_soak.py::test_twenty_kills",)


class ModulesAndLongTests(LoadFileScheduling):  # type: ignore[misc]
    """Whole modules per worker (--dist loadfile), but the ONE_BY_ONE tests each alone."""

    def _split_scope(self, nodeid: str) -> str:
        if nodeid.startswith(ONE_BY_ONE):
            return nodeid
        return str(super()._split_scope(nodeid))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> ModulesAndLongTests:
    """Schedule with ModulesAndLongTests."""
    return ModulesAndLongTests(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the longest modules first, each in its order; the rest keep theirs."""
    place = {name: rank for rank, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: place.get(item.path.name, len(place)))


def pytest_sessionstart(session: pytest.Session) -> None:  # noqa: ARG001 - the hook's signature
    """Collect cyclic garbage only between tests, in the main thread (see below)."""
    gc.disable()


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """grpcio's finalizer of a dropped channel's state closes the channel, which takes a lock.
    Run by the cyclic collector inside a gRPC server thread that holds its server's lock, it
    deadlocked that server's stop (seen: a police adapter's teardown hung for good). Tests drop
    channels and stubs in cycles freely, so the collector runs here, where no lock is held:
    what each test allocated after it (cheap), everything after each module.
    """
    yield
    gc.collect(0)


@pytest.fixture(autouse=True, scope="module")
def _collect_all_garbage_after_each_module() -> Iterator[None]:
    yield
    gc.collect()


POSTGRES_ADMIN_URL = os.environ.get(
    "LIENTHONG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """A development PKI made once for the whole run."""
    return init_dev_pki(tmp_path_factory.mktemp("pki") / "dev")


def _postgres_reachable() -> bool:
    try:
        engine = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except sqlalchemy.exc.OperationalError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of the PostgreSQL server; skipped where none runs, but never in CI."""
    if not _postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} in CI")
        pytest.skip("PostgreSQL is not reachable")
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"lienthong_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sqlalchemy.make_url(postgres_server).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database the project supports: a SQLite file, and PostgreSQL when reachable."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("postgres_url"))
