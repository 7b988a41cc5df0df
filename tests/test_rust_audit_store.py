"""The Rust audit store (gateway/dataplane/src/audit) writes what the Python tools read.

A small Rust program (examples/audit_fill.rs) appends entries to a log; Python then replays
it with `verify_log`, decodes every entry, searches it and exports it, on SQLite and on
PostgreSQL, whichever side created the schema, and with Python appending in between.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.audit import merkle
from gateway.audit.entry import AuditEntry
from gateway.audit.store import AuditLog, CompletionQuery, create_schema
from gateway.audit.tools import export, verify_export, verify_log
from lienthong.db import make_engine
from lienthong.signed_note import NoteSigner, NoteVerifier, load_signer, parse_checkpoint

REPOSITORY = Path(__file__).resolve().parent.parent
ORIGIN = "lienthong.local/audit"

# The first test may build the example (a no-op once `make test`'s cargo test built it).
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def audit_fill() -> Path:
    """The example, built; CARGO_BUILD_JOBS=1 unless set, not to crowd the parallel tests."""
    environment = {"CARGO_BUILD_JOBS": "1", **os.environ}
    subprocess.run(
        ["cargo", "build", "--quiet", "--locked", "--example", "audit_fill"],
        cwd=REPOSITORY,
        env=environment,
        check=True,
    )
    return REPOSITORY / "target" / "debug" / "examples" / "audit_fill"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A fresh Ed25519 signing key as PKCS#8 PEM, as `lienthong certs init` writes one."""
    path = tmp_path / "audit-log.key"
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _signer(key_file: Path) -> NoteSigner:
    return load_signer(ORIGIN, key_file.read_bytes())


def _fill(binary: Path, url: str, key_file: Path, count: int) -> tuple[int, str]:
    """Append ``count`` entries with Rust; its tree size and last signed note."""
    done = subprocess.run(
        [str(binary), url, str(key_file), str(count), ORIGIN],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    size, _, note = done.stdout.partition("\n")
    return int(size), note


def _append_with_python(url: str, signer: NoteSigner, count: int) -> None:
    log = AuditLog(make_engine(url), signer, checkpoint_interval=3600)
    log.start()
    try:
        for n in range(count):
            log.append(
                AuditEntry(
                    kind="completion",
                    exchange_id=f"python-{n}",
                    caller="spiffe://lienthong.local/mps/population",
                    upstream=None,
                    method="/a.v1.S/M",
                    purpose="audit",
                    on_behalf_of=None,
                    request_id=None,
                    start_time="2026-11-25T13:04:57.120311Z",
                    status_code=7,
                    status="PERMISSION_DENIED",
                )
            )
    finally:
        log.close()


def _check(url: str, signer: NoteSigner, size: int, tmp_path: Path) -> None:
    """The whole log verifies, decodes, searches and exports with the Python tools."""
    engine = make_engine(url)
    verifier = NoteVerifier(signer.verifier_key())
    try:
        result = verify_log(engine, verifier)
        assert result.ok, result.problems
        assert result.entries == size
        assert result.checkpoints >= 1
    finally:
        engine.dispose()
    log = AuditLog(make_engine(url), signer)
    try:
        assert log.tree_size() == size
        entries = [AuditEntry.decode(data) for _, data in log.entries(0, size)]
        assert len(entries) == size
        rust = [entry for entry in entries if entry.upstream == "127.0.0.1:50071"]
        assert rust, "no entry written by Rust"
        assert all(entry.purpose and "đăng ký khai sinh" in entry.purpose for entry in rust)
        # Each Rust completion names a request entry of its own exchange.
        for entry in rust:
            if entry.kind == "completion":
                assert entry.request_leaf is not None
                assert entries[entry.request_leaf].exchange_id == entry.exchange_id
        # recorded_at is read back and compared as the Python store writes it.
        hour = dt.timedelta(hours=1)
        now = dt.datetime.now(dt.UTC)
        found = log.completions(CompletionQuery(recorded_from=now - hour, limit=size))
        assert len(found) == sum(entry.kind == "completion" for entry in entries)
        assert not log.completions(CompletionQuery(recorded_from=now + hour))
        caller = "spiffe://lienthong.local/moj/civil-registry-1"
        assert log.completions(CompletionQuery(caller=caller, limit=size))
        checkpoint = log.latest_checkpoint()
        assert checkpoint is not None
        assert checkpoint.tree_size == size
        signed = parse_checkpoint(verifier.open(checkpoint.note))
        assert (signed.origin, signed.tree_size) == (ORIGIN, size)
        leaf, proof = log.inclusion_proof(size // 2, size)
        assert merkle.verify_inclusion(leaf, size // 2, size, proof, signed.root_hash)
        path = tmp_path / "export.json"
        assert export(log, 0, size, path) == size
        exported = verify_export(path, verifier)
        assert exported.ok, exported.problems
    finally:
        log.close()


def test_a_log_rust_created_and_wrote_verifies_with_python(
    audit_fill: Path, database_url: str, key_file: Path, tmp_path: Path
) -> None:
    size, note = _fill(audit_fill, database_url, key_file, 301)
    assert size == 301
    signer = _signer(key_file)
    signed = parse_checkpoint(NoteVerifier(signer.verifier_key()).open(note))
    assert signed.tree_size == 301
    _check(database_url, signer, 301, tmp_path)
    # Python opens the schema Rust made (create_schema finds it all) and appends after Rust.
    _append_with_python(database_url, signer, 3)
    assert _fill(audit_fill, database_url, key_file, 10)[0] == 314
    _check(database_url, signer, 314, tmp_path)


def test_rust_and_python_append_to_one_tree_whichever_created_the_schema(
    audit_fill: Path, database_url: str, key_file: Path, tmp_path: Path
) -> None:
    signer = _signer(key_file)
    engine = make_engine(database_url)
    create_schema(engine)
    engine.dispose()
    _append_with_python(database_url, signer, 7)
    assert _fill(audit_fill, database_url, key_file, 50)[0] == 57
    _append_with_python(database_url, signer, 5)
    assert _fill(audit_fill, database_url, key_file, 33)[0] == 95
    _check(database_url, signer, 95, tmp_path)
