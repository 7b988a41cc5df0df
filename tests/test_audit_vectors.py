"""The audit core vectors that the Rust data plane reproduces: Merkle tree, notes, entries.

tests/vectors/audit.json is written by tools/audit_vectors.py and read by the Rust unit tests
of gateway/dataplane/src/{merkle,note,entry}.rs; here it must be what Python writes now.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.audit import merkle
from gateway.audit.entry import AuditEntry
from lienthong.signed_note import NoteVerifier, parse_checkpoint, parse_receipt

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors" / "audit.json"


def _vectors() -> dict[str, Any]:
    vectors: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return vectors


def test_the_committed_vectors_are_what_python_computes_now(tmp_path: Path) -> None:
    """Regenerate with `python tools/audit_vectors.py` after changing the audit core."""
    fresh = tmp_path / "audit.json"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "audit_vectors.py"), "--out", str(fresh)],
        check=True,
        capture_output=True,
    )
    assert fresh.read_bytes() == VECTORS.read_bytes(), "regenerate: tools/audit_vectors.py"


def test_the_vectors_stay_modest_and_ascii() -> None:
    data = VECTORS.read_bytes()
    assert len(data) < 600_000
    assert data.isascii()


def test_the_merkle_vectors_cover_every_size_and_both_verdicts() -> None:
    tree = _vectors()["merkle"]
    sizes = {t["size"] for t in tree["trees"]}
    assert set(range(41)) | {127, 128, 129, 1000} <= sizes
    assert {case["size"] for case in tree["inclusion"]} == sizes - {0}
    assert {case["second"] for case in tree["consistency"]} == sizes - {0}
    for kind in ("verify_inclusion", "verify_consistency"):
        assert {case["valid"] for case in tree[kind]} == {True, False}
    pinned = [c for c in tree["verify_inclusion"] if c["why"].startswith("RFC: a size-4")]
    assert [c["valid"] for c in pinned] == [True]
    assert tree["empty_root"] == merkle.EMPTY_ROOT.hex()


def test_the_note_vectors_open_and_parse_with_python() -> None:
    notes = _vectors()["note"]
    assert "TEST" in notes["key"]["about"]
    verifier = NoteVerifier(notes["key"]["verifier_key"])
    for case in notes["checkpoints"]:
        checkpoint = parse_checkpoint(verifier.open(case["note"]))
        assert (checkpoint.origin, checkpoint.tree_size) == (case["origin"], case["tree_size"])
        assert checkpoint.root_hash.hex() == case["root_hash"]
    for case in notes["receipts"]:
        receipt = parse_receipt(verifier.open(case["note"]))
        assert (receipt.leaf_index, receipt.exchange_id) == (
            case["leaf_index"],
            case["exchange_id"],
        )
    reasons = {case["reason"] for case in notes["refused_notes"]}
    assert reasons == {
        "malformed",
        "invalid key name",
        "invalid signature",
        "note has no signature",
    }


def test_the_entry_vectors_round_trip_with_python() -> None:
    entries = _vectors()["entry"]
    for case in entries["entries"]:
        encoded = bytes.fromhex(case["encoded"])
        assert AuditEntry(**case["entry"]).encode() == encoded, case["why"]
        assert merkle.leaf_hash(encoded).hex() == case["leaf_hash"]
    whys = {case["why"] for case in entries["entries"]}
    assert {"every control character", "Vietnamese", "emoji and the last code point"} <= whys
