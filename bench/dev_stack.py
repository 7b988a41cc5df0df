"""The whole stack as `make run` runs it, on fresh databases, for the benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy

PROJECT = Path(__file__).resolve().parent.parent
CONFIG = PROJECT / "config" / "dev.toml"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
DATABASES = ("justice", "police", "audit")


@contextmanager
def dev_stack(backend: str, directory: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """`lienthong run` with fresh ``backend`` databases; the environment and the database URLs.

    The development ports (50051, 50061, 50071) must be free. Stopped with SIGINT on exit.
    """
    environ = dict(os.environ, GRPC_VERBOSITY="ERROR")
    environ["LIENTHONG__LOG_DIRECTORY"] = str(directory / "log")
    urls = {name: _database(backend, name, directory) for name in DATABASES}
    environ["LIENTHONG__JUSTICE__DATABASE_URL"] = urls["justice"]
    environ["LIENTHONG__POLICE__DATABASE_URL"] = urls["police"]
    environ["LIENTHONG__GATEWAY__AUDIT__DATABASE_URL"] = urls["audit"]
    stack = subprocess.Popen(  # noqa: S603 - the project's own command
        [sys.executable, "-m", "lienthong.cli", "run", "--config", str(CONFIG)],
        cwd=PROJECT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for(stack, "press Ctrl-C")
        yield environ, urls
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(timeout=60)


def _database(backend: str, name: str, directory: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{directory / f'{name}.db'}"
    database = f"lienthong_bench_{name}"
    admin = sqlalchemy.create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    admin.dispose()
    return f"{POSTGRES}/{database}"  # the services create it at start


def _wait_for(process: subprocess.Popen[str], marker: str, timeout: float = 120.0) -> None:
    if process.stdout is None:
        raise ValueError("the process's output is not piped")
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if marker in line:
            return
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"the stack did not start: {process.poll()}")
