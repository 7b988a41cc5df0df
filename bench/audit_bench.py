"""Audit log benchmark: durable appends per second with group commit, and proof times.

Usage: .venv/bin/python bench/audit_bench.py [--entries-for-proofs 1000000] [--postgres URL]

Appends go through AuditLog.append exactly as the gateway's exchanges do: each caller waits
until its entry is committed (SQLite WAL with synchronous=FULL; PostgreSQL synchronous
commit). Proofs are timed on a log of --entries-for-proofs entries, loaded through the same
writer in large batches.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.audit import merkle
from gateway.audit.entry import AuditEntry
from gateway.audit.store import AuditLog
from lienthong.db import make_engine
from lienthong.signed_note import NoteSigner

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _entry(n: int) -> AuditEntry:
    return AuditEntry(
        kind="completion",
        exchange_id=str(uuid.uuid4()),
        caller="spiffe://lienthong.local/moj/civil-registry",
        upstream="127.0.0.1:50071",
        method="/lienthong.population.v1.CitizenService/IssuePersonalIdentificationNumber",
        purpose="birth-registration",
        on_behalf_of=None,
        request_id=str(uuid.uuid4()),
        start_time="2016-04-27T08:00:00.000000Z",
        end_time="2016-04-27T08:00:00.012000Z",
        status_code=0,
        status="OK",
        request_bytes=209 + n % 7,
        response_bytes=16,
        request_sha256=secrets.token_hex(32),
        response_sha256=secrets.token_hex(32),
        request_leaf=max(n - 1, 0),
    )


def _log(url: str) -> AuditLog:
    signer = NoteSigner("bench.lienthong.local/audit", ed25519.Ed25519PrivateKey.generate())
    log = AuditLog(make_engine(url), signer, checkpoint_interval=0.5)
    log.start()
    return log


def appends(url: str, callers: int, total: int) -> float:
    """Durable appends per second with ``callers`` threads appending ``total`` entries."""
    log = _log(url)
    entries = [_entry(n) for n in range(total)]
    per_caller = total // callers
    barrier = threading.Barrier(callers + 1)

    def run(offset: int) -> None:
        barrier.wait()
        for entry in entries[offset : offset + per_caller]:
            log.append(entry)

    threads = [threading.Thread(target=run, args=(i * per_caller,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    log.close()
    return per_caller * callers / elapsed


def proofs(url: str, size: int, samples: int = 1000) -> dict[str, float]:
    """Median and p99 milliseconds of inclusion and consistency proofs at ``size`` entries."""
    log = _log(url)
    batch = 20_000
    loaded = log.tree_size()
    while loaded < size:  # the writer's own commit path, in large batches
        count = min(batch, size - loaded)
        log._commit([_pending(_entry(n)) for n in range(count)])  # noqa: SLF001
        loaded += count
    checkpoint = log.checkpoint()
    if checkpoint is None:
        raise RuntimeError("no checkpoint after loading")
    timings: dict[str, list[float]] = {"inclusion": [], "consistency": []}
    for _ in range(samples):
        index = secrets.randbelow(size)
        started = time.perf_counter()
        leaf, path = log.inclusion_proof(index, size)
        timings["inclusion"].append(time.perf_counter() - started)
        if not merkle.verify_inclusion(leaf, index, size, path, checkpoint.root_hash):
            raise RuntimeError(f"the proof of leaf {index} does not verify")
        first = 1 + secrets.randbelow(size - 1)
        started = time.perf_counter()
        log.consistency_proof(first, size)
        timings["consistency"].append(time.perf_counter() - started)
    log.close()
    result = {}
    for name, values in timings.items():
        values.sort()
        result[f"{name}_p50_ms"] = statistics.median(values) * 1000
        result[f"{name}_p99_ms"] = values[int(len(values) * 0.99) - 1] * 1000
    return result


def _pending(entry: AuditEntry):  # noqa: ANN202 - the writer's private batch item
    from concurrent.futures import Future  # noqa: PLC0415

    from gateway.audit.store import _Pending  # noqa: PLC0415

    return _Pending(entry, entry.encode(), Future())


_CREATED: list[str] = []


def _postgres_database(admin_url: str) -> str:
    name = f"lienthong_bench_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    _CREATED.append(name)
    return sqlalchemy.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop_databases(admin_url: str) -> None:
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in _CREATED:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def main() -> None:
    """Run every measurement and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries-for-proofs", type=int, default=1_000_000)
    parser.add_argument(
        "--postgres", default=os.environ.get("LIENTHONG_TEST_POSTGRES_URL", POSTGRES)
    )
    arguments = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    try:
        _measure(arguments)
    finally:
        _drop_databases(arguments.postgres)


def _measure(arguments: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as directory:
        backends = {"SQLite": lambda name: f"sqlite:///{Path(directory) / name}.db"}
        backends["PostgreSQL"] = lambda _name: _postgres_database(arguments.postgres)
        print("\n| backend | concurrent callers | durable appends/s |\n|---|---|---|")
        for backend, url in backends.items():
            for callers in (1, 16, 64):
                total = 2_000 if callers == 1 else 20_000
                rate = appends(url(f"append{callers}"), callers, total)
                print(f"| {backend} | {callers} | {rate:,.0f} |", flush=True)
        print("\n| backend | entries | inclusion p50 / p99 ms | consistency p50 / p99 ms |")
        print("|---|---|---|---|")
        for backend, url in backends.items():
            result = proofs(url("proofs"), arguments.entries_for_proofs)
            print(
                f"| {backend} | {arguments.entries_for_proofs:,} | "
                f"{result['inclusion_p50_ms']:.2f} / {result['inclusion_p99_ms']:.2f} | "
                f"{result['consistency_p50_ms']:.2f} / {result['consistency_p99_ms']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
