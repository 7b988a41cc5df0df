"""The audit log through the gateway: durability order, receipts proven by inclusion in a
signed checkpoint, the AuditService's errors, and `lienthong audit` verifying, naming the
first bad index, detecting truncation, and exporting."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import sqlalchemy
from cryptography.hazmat.primitives.asymmetric import ed25519
from dev_config import write_dev_config
from echo_upstream import UNARY
from gateway_fixtures import PURPOSE, Setup

from certs.pki import init_dev_pki
from gateway.audit import merkle
from gateway.audit.entry import AuditEntry
from gateway.audit.store import AuditLog, entry_table, head_table, node_table
from gateway.audit.tools import export, verify_export, verify_log
from lienthong import metadata
from lienthong.config import GatewayLimits
from lienthong.db import make_engine
from lienthong.gateway.v1 import audit_service_pb2, audit_service_pb2_grpc
from lienthong.signed_note import (
    NoteSigner,
    NoteVerifier,
    load_signer,
    parse_checkpoint,
    parse_receipt,
)

AUDIT = ((metadata.PURPOSE, "audit"),)


def _verifier(setup: Setup) -> NoteVerifier:
    return NoteVerifier(
        (setup.pki.directory / "audit-log.vkey").read_text(encoding="utf-8").strip()
    )


def _call_with_receipt(channel: grpc.Channel, payload: bytes) -> bytes:
    response, call = channel.unary_unary(UNARY).with_call(payload, timeout=30, metadata=PURPOSE)
    assert response == payload
    receipts = [value for key, value in call.trailing_metadata() if key == metadata.RECEIPT]
    assert len(receipts) == 1
    return receipts[0]


@pytest.mark.timeout(300)  # 46 s among three busy workers
def test_a_thousand_receipts_are_each_proven_by_inclusion_in_a_signed_checkpoint(
    make_setup,
) -> None:
    """Acceptance 3 of issue 4, with nothing but the gateway's public key."""
    setup = make_setup(GatewayLimits(rate_per_second=1e6, burst=1_000_000))
    verifier = _verifier(setup)
    with setup.channel() as channel:
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            receipts = list(pool.map(lambda n: _call_with_receipt(channel, b"%d" % n), range(1000)))
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        checkpoint = audit.GetLatestCheckpoint(
            audit_service_pb2.GetLatestCheckpointRequest(), timeout=10, metadata=AUDIT
        ).checkpoint
        signed = parse_checkpoint(verifier.open(checkpoint.signed_note))
        assert signed.tree_size == checkpoint.tree_size >= 2000
        assert signed.root_hash == checkpoint.root_hash
        indices = set()
        for note in receipts:
            receipt = parse_receipt(verifier.open(note.decode("utf-8")))
            assert receipt.origin == signed.origin
            indices.add(receipt.leaf_index)
            proof = audit.GetInclusionProof(
                audit_service_pb2.GetInclusionProofRequest(
                    leaf_index=receipt.leaf_index, tree_size=signed.tree_size
                ),
                timeout=10,
                metadata=AUDIT,
            )
            assert proof.leaf_hash == receipt.leaf_hash
            assert merkle.verify_inclusion(
                receipt.leaf_hash,
                receipt.leaf_index,
                signed.tree_size,
                list(proof.hashes),
                signed.root_hash,
            )
    assert len(indices) == 1000


def test_the_request_entry_is_durable_before_forwarding_and_the_completion_before_the_answer(
    setup: Setup,
) -> None:
    engine = make_engine(f"sqlite:///{setup.gateway.audit._engine.url.database}")
    seen_by_upstream: list[list[str]] = []

    def kinds(exchange_id: str) -> list[str]:
        with engine.connect() as connection:
            return [
                row.kind
                for row in connection.execute(
                    sqlalchemy.select(entry_table.c.kind).where(
                        entry_table.c.exchange_id == exchange_id
                    )
                )
            ]

    def checking(context: grpc.ServicerContext) -> None:
        exchange_id = dict(context.invocation_metadata())[metadata.EXCHANGE_ID]
        seen_by_upstream.append(kinds(exchange_id))

    setup.echo.on_call = checking
    with setup.channel() as channel:
        note = _call_with_receipt(channel, b"payload")
    exchange_id = parse_receipt(_verifier(setup).open(note.decode())).exchange_id
    assert seen_by_upstream == [["request"]]
    assert sorted(kinds(exchange_id)) == ["completion", "request"]
    engine.dispose()


def test_refused_calls_are_recorded_and_get_a_receipt(setup: Setup) -> None:
    with setup.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(UNARY)(b"x", timeout=10)  # no purpose
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    receipts = [v for k, v in raised.value.trailing_metadata() if k == metadata.RECEIPT]
    receipt = parse_receipt(_verifier(setup).open(receipts[0].decode()))
    ((_, data),) = setup.gateway.audit.entries(receipt.leaf_index, receipt.leaf_index + 1)
    entry = AuditEntry.decode(data)
    assert (entry.kind, entry.status, entry.request_leaf) == (
        "completion",
        "PERMISSION_DENIED",
        None,
    )
    assert merkle.leaf_hash(data) == receipt.leaf_hash


def test_proofs_beyond_the_signed_tree_are_out_of_range(setup: Setup) -> None:
    with setup.channel() as channel:
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        size = audit.GetLatestCheckpoint(
            audit_service_pb2.GetLatestCheckpointRequest(), timeout=10, metadata=AUDIT
        ).checkpoint.tree_size
        with pytest.raises(grpc.RpcError) as beyond:
            audit.GetConsistencyProof(
                audit_service_pb2.GetConsistencyProofRequest(
                    first_tree_size=1, second_tree_size=size + 1000
                ),
                timeout=10,
                metadata=AUDIT,
            )
        with pytest.raises(grpc.RpcError) as backwards:
            audit.GetInclusionProof(
                audit_service_pb2.GetInclusionProofRequest(leaf_index=5, tree_size=3),
                timeout=10, metadata=AUDIT,
            )  # fmt: skip
    assert beyond.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert backwards.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_consistency_proof_from_the_service_verifies_between_two_checkpoints(
    setup: Setup,
) -> None:
    verifier = _verifier(setup)
    with setup.channel() as channel:
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        latest = lambda: parse_checkpoint(verifier.open(audit.GetLatestCheckpoint(  # noqa: E731
            audit_service_pb2.GetLatestCheckpointRequest(), timeout=10, metadata=AUDIT
        ).checkpoint.signed_note))  # fmt: skip
        first = latest()
        for n in range(5):
            _call_with_receipt(channel, b"%d" % n)
        second = latest()
        proof = audit.GetConsistencyProof(
            audit_service_pb2.GetConsistencyProofRequest(
                first_tree_size=first.tree_size, second_tree_size=second.tree_size
            ),
            timeout=10, metadata=AUDIT,
        )  # fmt: skip
    assert merkle.verify_consistency(
        first.tree_size, second.tree_size, first.root_hash, second.root_hash, list(proof.hashes)
    )


def test_a_caller_lists_its_own_exchanges_only(
    database_url: str, make_setup: Callable[..., Setup]
) -> None:
    # database_url first: the database outlives the gateway that writes to it.
    setup = make_setup(audit_url=database_url)
    request_id = str(uuid.uuid4())
    with setup.channel() as channel:
        channel.unary_unary(UNARY)(
            b"x", timeout=10, metadata=(*PURPOSE, (metadata.REQUEST_ID, request_id))
        )
        audit = audit_service_pb2_grpc.AuditServiceStub(channel)
        found = audit.ListExchanges(
            audit_service_pb2.ListExchangesRequest(request_id=request_id),
            timeout=10,
            metadata=AUDIT,
        ).exchanges
        with pytest.raises(grpc.RpcError) as raised:
            audit.ListExchanges(
                audit_service_pb2.ListExchangesRequest(caller="spiffe://lienthong.local/moj/civil-registry"),
                timeout=10, metadata=AUDIT,
            )  # fmt: skip
    (exchange,) = found
    assert (exchange.method, exchange.status_code, exchange.request_id) == (UNARY, 0, request_id)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# Verification of a stored log ---------------------------------------------------------------


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner("lienthong.local/audit", ed25519.Ed25519PrivateKey.generate())


def _filled_log(tmp_path: Path, signer: NoteSigner, entries: int = 60) -> AuditLog:
    log = AuditLog(
        make_engine(f"sqlite:///{tmp_path / 'audit.db'}"), signer, checkpoint_interval=3600
    )
    log.start()
    for n in range(entries):
        log.append(
            AuditEntry(
                "completion",
                f"x-{n}",
                "spiffe://lienthong.local/a",
                None,
                "/a.B/C",
                "t",
                None,
                None,
                "2016-01-01T00:00:00.000000Z",
            )
        )
        if n in (19, 39, entries - 1):
            log.checkpoint()
    return log


def _execute(log: AuditLog, *statements) -> None:
    with log._engine.begin() as connection:
        for statement in statements:
            connection.execute(statement)


def test_verify_passes_on_an_untouched_log(tmp_path: Path, signer: NoteSigner) -> None:
    log = _filled_log(tmp_path, signer)
    result = verify_log(log._engine, NoteVerifier(signer.verifier_key()))
    assert result.ok, result.problems
    assert (result.entries, result.checkpoints) == (60, 3)


def _entry_bytes(log: AuditLog, index: int) -> bytes:
    ((_, data),) = log.entries(index, index + 1)
    return data


@pytest.mark.parametrize("tamper", ["change", "delete", "reorder"])
def test_verify_names_the_first_bad_index_of_a_tampered_entry(
    tmp_path: Path, signer: NoteSigner, tamper: str
) -> None:
    log = _filled_log(tmp_path, signer)
    entries = entry_table.c
    if tamper == "change":
        forged = _entry_bytes(log, 17).replace(b"x-17", b"x-99")
        _execute(
            log, sqlalchemy.update(entry_table).where(entries.leaf_index == 17).values(entry=forged)
        )
    elif tamper == "delete":
        _execute(log, sqlalchemy.delete(entry_table).where(entries.leaf_index == 17))
    else:
        first, second = _entry_bytes(log, 17), _entry_bytes(log, 42)
        _execute(
            log,
            sqlalchemy.update(entry_table).where(entries.leaf_index == 17).values(entry=second),
            sqlalchemy.update(entry_table).where(entries.leaf_index == 42).values(entry=first),
        )
    result = verify_log(log._engine, NoteVerifier(signer.verifier_key()))
    assert not result.ok
    assert result.first_bad_index == 17


def test_verify_detects_a_rewritten_entry_even_with_its_stored_hashes_rewritten(
    tmp_path: Path, signer: NoteSigner
) -> None:
    """Only the signed checkpoints are trusted: recomputed leaf hashes do not help a forger."""
    log = _filled_log(tmp_path, signer)
    forged = _entry_bytes(log, 25).replace(b"x-25", b"x-77")
    _execute(
        log,
        sqlalchemy.update(entry_table).where(entry_table.c.leaf_index == 25).values(entry=forged),
        sqlalchemy.update(node_table)
        .where(node_table.c.level == 0, node_table.c.idx == 25)
        .values(hash=merkle.leaf_hash(forged)),
    )
    result = verify_log(log._engine, NoteVerifier(signer.verifier_key()))
    assert not result.ok
    assert any("root signed at size 40" in problem for problem in result.problems)


def test_truncation_is_detected_against_a_kept_checkpoint(
    tmp_path: Path, signer: NoteSigner
) -> None:
    log = _filled_log(tmp_path, signer)
    kept = log.checkpoint()
    assert kept is not None
    assert kept.tree_size == 60
    _execute(
        log,
        sqlalchemy.delete(entry_table).where(entry_table.c.leaf_index >= 30),
        sqlalchemy.delete(node_table),
        sqlalchemy.update(head_table).values(tree_size=0),
        sqlalchemy.text("DELETE FROM audit_checkpoint"),
        sqlalchemy.delete(entry_table),
    )
    log._frontier = None
    for n in range(70):
        log.append(
            AuditEntry(
                "completion",
                f"y-{n}",
                None,
                None,
                "/a.B/C",
                None,
                None,
                None,
                "2016-01-01T00:00:00.000000Z",
            )
        )
    log.checkpoint()
    verifier = NoteVerifier(signer.verifier_key())
    assert verify_log(log._engine, verifier).ok
    result = verify_log(log._engine, verifier, kept_checkpoint=kept.note)
    assert not result.ok  # ...but not with what a ministry kept
    assert any(
        "not consistent with the checkpoint kept at size 60" in problem
        for problem in result.problems
    )


def test_an_export_verifies_with_the_public_key_alone_and_fails_when_altered(
    tmp_path: Path, signer: NoteSigner
) -> None:
    log = _filled_log(tmp_path, signer)
    path = tmp_path / "export.json"
    assert export(log, 10, 30, path) == 20
    verifier = NoteVerifier(signer.verifier_key())
    result = verify_export(path, verifier)
    assert result.ok
    assert result.entries == 20
    path.write_text(
        path.read_text().replace(_b64(_entry_bytes(log, 12)), _b64(_entry_bytes(log, 13)))
    )
    altered = verify_export(path, verifier)
    assert altered.first_bad_index == 12


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _cli_log(tmp_path: Path) -> tuple[Path, AuditLog]:
    """A config file and a closed log of 30 exchanges, every third one refused."""
    pki = init_dev_pki(tmp_path / "pki")
    config = write_dev_config(tmp_path, tmp_path / "pki", {})  # its audit.db is the one below
    log = AuditLog(
        make_engine(f"sqlite:///{tmp_path / 'audit.db'}"),
        load_signer("lienthong.local/audit", pki.directory.joinpath("audit-log.key").read_bytes()),
    )
    log.start()
    for n in range(30):
        refused = n % 3 == 0
        log.append(
            AuditEntry(
                kind="completion",
                exchange_id=f"x-{n}",
                caller="spiffe://lienthong.local/moj/officer-portal",
                upstream=None,
                method="/a.B/C",
                purpose=None,
                on_behalf_of=None,
                request_id=f"r-{n}",
                start_time="2016-01-01T00:00:00.000000Z",
                status="PERMISSION_DENIED" if refused else "OK",
                status_code=7 if refused else 0,
            )
        )
    log.close()
    return config, log


def _cli(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lienthong.cli", "audit", *arguments, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_cli_verify_names_the_first_bad_index(tmp_path: Path) -> None:
    config, log = _cli_log(tmp_path)
    good = _cli(config, "verify")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "OK: 30 entries" in good.stdout
    forged = _entry_bytes(log, 7).replace(b"x-7", b"x-8")
    _execute(
        log,
        sqlalchemy.update(entry_table).where(entry_table.c.leaf_index == 7).values(entry=forged),
    )
    bad = _cli(config, "verify")
    assert bad.returncode == 1
    assert "first bad index: 7" in bad.stdout


def test_the_cli_searches_tails_and_exports(tmp_path: Path) -> None:
    config, _ = _cli_log(tmp_path)
    found = [
        json.loads(line)
        for line in _cli(config, "search", "--status", "PERMISSION_DENIED").stdout.splitlines()
    ]
    assert [item["exchange_id"] for item in found] == [f"x-{n}" for n in range(0, 30, 3)]
    by_request = _cli(config, "search", "--request-id", "r-4").stdout.splitlines()
    assert [json.loads(line)["leaf_index"] for line in by_request] == [4]
    tail = [
        json.loads(line)["leaf_index"]
        for line in _cli(config, "tail", "-n", "3").stdout.splitlines()
    ]
    assert tail == [27, 28, 29]
    out = tmp_path / "export.json"
    assert _cli(config, "export", "--start", "5", "--end", "15", "--out", str(out)).returncode == 0
    checked = _cli(config, "verify", "--export", str(out))
    assert checked.returncode == 0, checked.stdout
    assert "OK: 10 entries" in checked.stdout


def test_two_gateway_processes_share_one_tree_on_postgresql(
    postgres_url: str, signer: NoteSigner
) -> None:
    """Two logs on one database (as two gateway processes) append to one verifiable tree."""
    logs = [AuditLog(make_engine(postgres_url), signer, checkpoint_interval=0.2) for _ in range(2)]
    for log in logs:
        log.start()

    def append(job: tuple[int, int]) -> tuple[int, bytes, bytes]:
        which, n = job
        entry = AuditEntry(
            "completion",
            f"{which}-{n}",
            None,
            None,
            "/a.B/C",
            None,
            None,
            None,
            "2016-01-01T00:00:00.000000Z",
        )
        appended = logs[which].append(entry)
        return appended.leaf_index, appended.leaf_hash, entry.encode()

    jobs = [(n % 2, n) for n in range(2000)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(append, jobs))
    checkpoint = logs[0].checkpoint()
    for log in logs:
        log.close()
    assert sorted(index for index, _, _ in results) == list(range(2000))
    assert all(merkle.leaf_hash(data) == leaf for _, leaf, data in results)
    assert checkpoint is not None
    assert checkpoint.tree_size == 2000
    engine = make_engine(postgres_url)
    verification = verify_log(engine, NoteVerifier(signer.verifier_key()))
    engine.dispose()
    assert verification.ok, verification.problems
    assert verification.entries == 2000
