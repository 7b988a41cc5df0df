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
import sys
import tempfile
import time
from pathlib import Path

from dev_stack import CONFIG, dev_stack

from lienthong import pilot, replay
from lienthong.config import load_config
from lienthong.demo import statistics_of
from lienthong.reference import code_lists
from lienthong.tls import secure_channel


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
    with (
        tempfile.TemporaryDirectory(prefix="replay_bench-") as directory,
        dev_stack(backend, Path(directory)) as (environ, _urls),
    ):
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


if __name__ == "__main__":
    sys.exit(main())
