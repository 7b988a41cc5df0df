"""Database engines through SQLAlchemy: SQLite by default, PostgreSQL in production."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session, sessionmaker


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database ``url`` names if it does not exist yet.

    Connects to the server's ``postgres`` maintenance database with the same credentials;
    the role must be allowed to create databases. SQLite files are created on first use and
    need nothing here.
    """
    parsed = make_url(url)
    if not parsed.get_backend_name().startswith("postgresql") or not parsed.database:
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.exec_driver_sql(
                "SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": parsed.database}
            ).first()
            if exists is None:
                name = parsed.database.replace('"', '""')
                try:
                    connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
                except ProgrammingError as error:
                    # Another service creating the same database at the same moment won.
                    if "already exists" not in str(error.orig):
                        raise
    finally:
        admin.dispose()


_READ_ONLY = "lienthong_read_only"
# The advisory lock that serialises schema changes of every lienthong service on a server.
_SCHEMA_LOCK = 0x6C69656E  # "lien"


@contextmanager
def schema_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction in which to create or migrate a schema, one process at a time.

    Replicas starting together on one PostgreSQL database would otherwise both see a table
    missing and both create it, and the second would fail. The transaction-scoped advisory
    lock is released at commit. SQLite's BEGIN IMMEDIATE (make_engine) already serialises.
    """
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        yield connection


def make_engine(url: str) -> Engine:
    """An engine for ``url``, ready for a database that goes away and comes back.

    SQLite gets WAL, full sync, foreign keys and a busy timeout; PostgreSQL gets pre-ping and
    a connect timeout (CONNECT_TIMEOUT). Errors never carry the statement's parameters:
    they would put names and dates of birth into logs.
    """
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT}, hide_parameters=True
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take it over so that BEGIN
        # IMMEDIATE serialises writers before they read what they will update. Reads
        # (read_session_factory) begin DEFERRED: a snapshot, without queueing for the lock.
        event.listen(engine, "begin", _SqliteWriters(engine).begin)
        return engine
    # pool_pre_ping replaces connections the server or the network closed (after a restart or
    # an outage) before a call uses them, so a service recovers without a restart.
    return create_engine(
        url, pool_pre_ping=True, hide_parameters=True, connect_args=_postgres_connect_args(url)
    )


# Seconds to wait for a PostgreSQL server to answer a new connection. Without a limit psycopg
# waits 130 s for a server that accepts the TCP connection and never answers (a hung host, a
# dead route, a stuck proxy): every call needing a new connection, and the audit log's
# single writer, would be held long past any caller's deadline. Reaching a database on the
# service's own network takes milliseconds; the gateway may wait twice (an exchange's request
# and completion entries) within an officer's 10 s.
CONNECT_TIMEOUT = 3


def _postgres_connect_args(url: str) -> dict[str, Any]:
    """``connect_timeout`` unless the URL sets its own (``?connect_timeout=N``)."""
    if "connect_timeout" in make_url(url).query:
        return {}
    return {"connect_timeout": CONNECT_TIMEOUT}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:  # noqa: ANN401
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reading only: on SQLite they do not take the write lock.

    For hot read paths (authenticating a caller, answering a repeated request) that would
    otherwise wait behind every writer. Writing in one is an error on SQLite.
    """
    return sessionmaker(engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False)


# Seconds a SQLite writer waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT = 30.0


class _SqliteWriters:
    """The writers of one SQLite engine, queued in the process rather than by SQLite.

    A writer that finds the database locked is put to sleep by SQLite's busy handler for 1,
    2, 5 ... 100 ms before it tries again, so with a dozen threads writing the lock mostly
    sits free while they sleep. A lock of our own hands the database to the next writer the
    moment the last one commits or rolls back. It only orders this process's writers: other
    processes (a second service, the CLI) are still kept out by SQLite's lock and its busy
    timeout, and a writer that waited a whole busy timeout for ours goes on to SQLite's.
    """

    def __init__(self, engine: Engine) -> None:
        self._lock = threading.Lock()
        self._holder: object | None = None  # the DBAPI connection in a write transaction
        dialect = engine.dialect
        dialect.do_commit = self._ending(dialect.do_commit)  # type: ignore[method-assign,assignment]
        dialect.do_rollback = self._ending(dialect.do_rollback)  # type: ignore[method-assign,assignment]
        event.listen(
            engine.pool, "invalidate", lambda dbapi_connection, *_: self._release(dbapi_connection)
        )

    def begin(self, connection: Connection) -> None:
        """BEGIN: DEFERRED for reads; IMMEDIATE for writes, once no writer of ours is left."""
        if connection.get_execution_options().get(_READ_ONLY, False):
            connection.exec_driver_sql("BEGIN DEFERRED")
            return
        holder = connection.connection.dbapi_connection
        if self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT):
            self._holder = holder
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self._release(holder)
            raise

    def _ending(self, end: Callable[[Any], None]) -> Callable[[Any], None]:
        """``end`` (the dialect's commit or rollback), then the next writer's turn."""

        def ending(proxied: Any) -> None:  # noqa: ANN401 - the pool's connection proxy
            try:
                end(proxied)
            finally:
                self._release(proxied.dbapi_connection)

        return ending

    def _release(self, holder: object) -> None:
        if holder is not None and self._holder is holder:
            self._holder = None
            self._lock.release()
