"""Database sessions: writers serialised on SQLite, readers never queued behind them."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text

from lienthong.db import make_engine, read_session_factory, session_factory


def test_a_read_does_not_wait_for_a_writer_holding_the_lock(tmp_path: Path) -> None:
    """Authenticating a caller must not queue behind registrations being written."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with session_factory(engine).begin() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    writer = engine.connect()
    transaction = writer.begin()  # BEGIN IMMEDIATE: the write lock is held from here
    writer.execute(text("INSERT INTO t VALUES (1)"))
    try:
        started = time.monotonic()
        with read_session_factory(engine)() as session:
            seen = session.execute(text("SELECT count(*) FROM t")).scalar()
        waited = time.monotonic() - started
    finally:
        transaction.rollback()
        writer.close()
        engine.dispose()
    assert seen == 0  # the committed snapshot, not the writer's uncommitted row
    assert waited < 5  # the busy timeout is 30 s: a queued reader would wait it out
