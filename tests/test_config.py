"""The configuration file, its environment overrides, and PostgreSQL chosen by configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy

from lienthong.config import ConfigError, Route, load_config
from lienthong.db import ensure_database

DEV = Path(__file__).resolve().parent.parent / "config" / "dev.toml"


def test_the_development_file_loads_with_sqlite_everywhere() -> None:
    """`make run` needs nothing but the file: SQLite for all three databases."""
    config = load_config(DEV, environ={})

    urls = (
        config.justice.database_url,
        config.police.database_url,
        config.gateway.audit.database_url,
    )
    assert all(url.startswith("sqlite:///") for url in urls)
    assert config.justice.administrators == ("admin",)
    assert config.justice.grace_window_hours == 24


def test_each_route_names_its_upstreams_address_and_identity() -> None:
    config = load_config(DEV, environ={})
    service = "lienthong.population.v1.CitizenService"
    assert config.gateway.routes[service] == Route(
        "127.0.0.1:50071", "spiffe://lienthong.local/mps/population"
    )
    assert all(route.identity for route in config.gateway.routes.values())


def test_environment_variables_override_the_file() -> None:
    """Each service's database, a nested table and a number, by LIENTHONG__… variables."""
    environ = {
        "LIENTHONG__JUSTICE__DATABASE_URL": "postgresql+psycopg://registry@db/justice",
        "LIENTHONG__GATEWAY__AUDIT__DATABASE_URL": "postgresql+psycopg://gw@db/audit",
        "LIENTHONG__JUSTICE__GRACE_WINDOW_HOURS": "2",
        "LIENTHONG__GATEWAY__LIMITS__BURST": "10",
        "LIENTHONG__GATEWAY__AUDIT__COMMIT_DELAY": "0",
        "OTHER__JUSTICE__LISTEN": "ignored",
    }

    config = load_config(DEV, environ=environ)

    assert config.justice.database_url == "postgresql+psycopg://registry@db/justice"
    assert config.gateway.audit.database_url == "postgresql+psycopg://gw@db/audit"
    assert config.justice.grace_window_hours == 2
    assert config.gateway.limits.burst == 10
    assert config.gateway.audit.commit_delay == 0
    assert config.police.database_url.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LIENTHONG__JUSTICE__GRACE_WINDOW_HOURS": "-1"}, "justice.grace_window_hours"),
        ({"LIENTHONG__JUSTICE__LISTEN": ""}, "justice.listen"),
        ({"LIENTHONG__JUSTICE__LISTEN__PORT": "1"}, "listen is not a table"),
        ({"LIENTHONG____LISTEN": "x"}, "empty part"),
        ({"LIENTHONG__JUSTICE__ADMINISTRATORS": "[1]"}, "justice.administrators"),
        (
            {"LIENTHONG__GATEWAY__ROUTES__LIENTHONG.POPULATION.V1.CITIZENSERVICE": "h:1"},
            "gateway.routes.lienthong.population.v1.citizenservice must be .* needs an identity",
        ),
        (
            {"LIENTHONG__GATEWAY__ROUTES__A.B": '{ address = "h:1", identity = "x" }'},
            "gateway.routes.a.b.identity",
        ),
        (
            {"LIENTHONG__GATEWAY__ROUTES__A.B": '{ address = "h:1" }'},
            "gateway.routes.a.b must be",
        ),
        # A limit that would admit everything, or nothing: TOML has nan and inf.
        ({"LIENTHONG__GATEWAY__LIMITS__RATE_PER_SECOND": "nan"}, "limits.rate_per_second"),
        ({"LIENTHONG__GATEWAY__LIMITS__RATE_PER_SECOND": "inf"}, "limits.rate_per_second"),
        ({"LIENTHONG__GATEWAY__LIMITS__RATE_PER_SECOND": "-1.0"}, "limits.rate_per_second"),
        ({"LIENTHONG__GATEWAY__LIMITS__BURST": "0"}, "limits.burst"),
        ({"LIENTHONG__GATEWAY__LIMITS__MAX_CONCURRENT": "0"}, "limits.max_concurrent"),
        # A commit delay is a fraction of a call's latency, never a second.
        ({"LIENTHONG__GATEWAY__AUDIT__COMMIT_DELAY": "1"}, "audit.commit_delay .* 0 to 0.1"),
        ({"LIENTHONG__GATEWAY__AUDIT__COMMIT_DELAY": "-0.001"}, "audit.commit_delay"),
        *(
            ({"LIENTHONG__GATEWAY__METRICS_LISTEN": address}, "gateway.metrics_listen")
            for address in ("127.0.0.1", ":9464", "127.0.0.1:http", "127.0.0.1:70000", "[::1")
        ),
    ],
)
def test_a_bad_override_is_refused_with_the_key_named(
    environ: dict[str, str], message: str
) -> None:
    """A bad value from the environment stops the start as a bad file would."""
    with pytest.raises(ConfigError, match=message):
        load_config(DEV, environ=environ)


def test_a_missing_file_is_named() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Path("/nonexistent/lienthong.toml"), environ={})


def test_a_postgresql_database_named_by_the_configuration_is_created_once(
    postgres_server: str,
) -> None:
    """A service started on an empty server creates its database; a second start reuses it."""
    name = "lienthong_config_test_db"
    url = sqlalchemy.make_url(postgres_server).set(database=name)
    admin = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        ensure_database(url.render_as_string(hide_password=False))
        ensure_database(url.render_as_string(hide_password=False))
        with admin.connect() as connection:
            found = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_database WHERE datname = %(n)s", {"n": name}
            ).scalar()
        assert found == 1
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
