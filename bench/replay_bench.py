"""Pilot replay throughput on SQLite and on PostgreSQL (issue 7, benchmark (b)).

Runs the whole stack as `make run` does (`lienthong run`, three processes, the development
configuration and certificates), with fresh databases of the chosen backend given by
environment overrides, then replays ``--count`` pilot registrations through the gateway and
waits for the last PIN. The officers' enrolment is not timed; the figure is registrations
answered per second, every one through gateway -> Justice -> gateway -> Police and back,
each exchange durably audited. The development ports (50051, 50061, 50071) must be free.

    .venv/bin/python bench/replay_bench.py [--count 5000] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy

from lienthong import pilot, replay
from lienthong.config import load_config
from lienthong.demo import statistics_of
from lienthong.reference import code_lists
from lienthong.tls import secure_channel

PROJECT = Path(__file__).resolve().parent.parent
CONFIG = PROJECT / "config" / "dev.toml"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
DATABASES = ("justice", "police", "audit")


def main() -> int:
    """Run the benchmark for each backend asked for and print one line each."""
    arguments = _parser().parse_args()
    backends = ("sqlite", "postgresql") if arguments.backend == "both" else (arguments.backend,)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}")
    print(f"replaying {arguments.count:,} pilot registrations, {arguments.concurrency} in flight")
    for backend in backends:
        seconds, pending = _run(backend, arguments.count, arguments.concurrency)
        print(
            f"{backend}: {arguments.count:,} registrations in {seconds:.1f} s, "
            f"{arguments.count / seconds:,.0f}/s; pending at the end: {pending}"
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    return parser


def _run(backend: str, count: int, concurrency: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="replay_bench-") as directory:
        environ = dict(os.environ, GRPC_VERBOSITY="ERROR")
        environ["LIENTHONG__LOG_DIRECTORY"] = str(Path(directory) / "log")
        urls = {name: _database(backend, name, Path(directory)) for name in DATABASES}
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
            config = load_config(CONFIG, environ)
            codes = code_lists()
            outcome = replay.replay(
                config.gateway.listen,
                config.demo_tls,
                config.pki_directory,
                codes,
                count=count,
                concurrency=concurrency,
                seed=time.time_ns() % 1_000_000,
                out=io.StringIO(),
            )
            with secure_channel(config.gateway.listen, config.demo_tls.read()) as channel:
                started = time.monotonic()
                pending = replay.wait_for_pins(channel)
                drained = time.monotonic() - started
                total = statistics_of(channel, replay.LOCALITIES).total
            if set(outcome.codes) != {"OK"} or total.registrations < count:
                raise SystemExit(f"{backend}: replay failed: {dict(outcome.codes)}")
            expected = pilot.expected_counts(count)
            print(f"  {backend}: answers {dict(outcome.codes)}, expected {expected}")
            return outcome.seconds + drained, pending
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


if __name__ == "__main__":
    sys.exit(main())
