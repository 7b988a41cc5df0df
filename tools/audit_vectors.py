"""Write the audit vectors the data plane must reproduce: tests/vectors/audit.json.

Run with the project's virtual environment: ``python tools/audit_vectors.py``; ``--out PATH``
writes elsewhere, which tests/test_audit_vectors.py uses to compare with what is committed.

Everything is computed by the Python implementation from fixed inputs, so every run writes the
same file:

- ``merkle`` (gateway/audit/merkle.py) over the leaves ``leaf-0``, ``leaf-1``, ...: roots and
  root nodes of many tree sizes, inclusion and consistency proofs with the nodes they read,
  verifications of altered proofs with Python's verdict, and arguments Python refuses;
- ``note`` (lienthong/signed_note.py) with a fixed, public TEST key: its verifier key,
  checkpoints, receipts and other texts with their signed notes (Ed25519 signatures are
  deterministic), and the notes, keys, names and texts Python refuses, with the kind of error;
- ``entry`` (gateway/audit/entry.py): entries with awkward strings, their canonical bytes and
  leaf hashes, bytes ``AuditEntry.decode`` refuses, and bytes it accepts only because it does
  not check the fields' types (the Rust decoder does, and refuses them).

The Rust data plane (gateway/dataplane/src/merkle.rs, note.rs and entry.rs) must agree with
every vector.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import merkle
from gateway.audit.entry import AuditEntry
from gateway.audit.merkle import EMPTY_ROOT, Frontier, NodeId, leaf_hash
from lienthong import signed_note
from lienthong.signed_note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    Receipt,
    checkpoint_text,
    receipt_text,
)

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors" / "audit.json"
ABOUT = (
    "Written by tools/audit_vectors.py: do not edit. Each value is computed by gateway/audit"
    " (merkle.py, entry.py) and lienthong/signed_note.py, and gateway/dataplane must agree."
)

# --- Merkle tree -------------------------------------------------------------------------------

SIZES = (*range(41), 127, 128, 129, 1000)
LEAF_DATA = "leaf-{index}"
HUGE = 2**64 - 1  # the largest tree size a u64 holds
Json = dict[str, Any]


class VectorError(AssertionError):
    """The Python implementation did not behave as a vector says it does."""


def leaf_data(index: int) -> bytes:
    """The entry bytes of leaf ``index`` of the vectors' tree."""
    return LEAF_DATA.format(index=index).encode("ascii")


def tree_nodes(size: int) -> dict[NodeId, bytes]:
    """Every node stored for the vectors' tree of ``size``, as Frontier.append returns them."""
    frontier = Frontier()
    nodes: dict[NodeId, bytes] = {}
    for index in range(size):
        nodes.update(frontier.append(leaf_hash(leaf_data(index))))
    return nodes


NODES = tree_nodes(max(SIZES))


def only(ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
    """The stored nodes ``ids`` and no other: what a proof may read."""
    return {node_id: NODES[node_id] for node_id in ids}


def root(size: int) -> bytes:
    """The root of the vectors' tree of ``size``."""
    return merkle.root_hash(size, only(merkle.root_nodes(size)))


def hexes(values: Iterable[bytes]) -> list[str]:
    """Hashes as hex strings."""
    return [value.hex() for value in values]


def ids(nodes: Iterable[NodeId]) -> list[list[int]]:
    """Node ids as ``[level, index]`` pairs."""
    return [[level, index] for level, index in nodes]


def flip(value: bytes, bit: int = 0) -> bytes:
    """``value`` with one bit changed."""
    changed = bytearray(value)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


def samples(size: int, low: int) -> list[int]:
    """A few positions from ``low`` to ``size``: the ends, one past the start, the middle."""
    picked = {low, low + 1, size // 2, size}
    return sorted(p for p in picked if low <= p <= size)


def inclusion_vectors() -> list[Json]:
    """Proofs of a few leaves of every size, each from only the nodes asked for."""
    found = []
    for size in SIZES:
        for index in samples(size - 1, 0) if size else []:
            needed = merkle.inclusion_nodes(index, size)
            proof = merkle.inclusion_proof(index, size, only(needed))
            leaf = leaf_hash(leaf_data(index))
            expect(merkle.verify_inclusion(leaf, index, size, proof, root(size)), (index, size))
            found.append(
                {"index": index, "size": size, "nodes": ids(needed), "proof": hexes(proof)}
            )
    return found


def consistency_vectors() -> list[Json]:
    """Proofs from a few first sizes to every second size, from only the nodes asked for."""
    found = []
    for second in SIZES:
        for first in samples(second, 1):
            needed = merkle.consistency_nodes(first, second)
            proof = merkle.consistency_proof(first, second, only(needed))
            verified = merkle.verify_consistency(first, second, root(first), root(second), proof)
            expect(verified, (first, second))
            found.append(
                {"first": first, "second": second, "nodes": ids(needed), "proof": hexes(proof)}
            )
    return found


def inclusion_verdicts() -> list[Json]:
    """Proofs changed in every way, with whether Python's verify_inclusion accepts them."""
    cases: list[tuple[str, bytes, int, int, list[bytes], bytes]] = []
    for size, index in [(1, 0), (3, 2), (7, 3), (8, 5), (13, 12), (129, 64)]:
        leaf, top = leaf_hash(leaf_data(index)), root(size)
        proof = merkle.inclusion_proof(index, size, NODES)
        cases += [
            ("as proven", leaf, index, size, proof, top),
            ("another leaf", flip(leaf, 7), index, size, proof, top),
            ("another root", leaf, index, size, proof, flip(top, 255)),
            ("another index", leaf, index ^ 1, size, proof, top),
            ("index beyond the size", leaf, size, size, proof, top),
            ("one size more", leaf, index, size + 1, proof, top),
            ("one size less", leaf, index, size - 1, proof, top),
            ("twice the size", leaf, index, 2 * size, proof, top),
            ("the largest size", leaf, index, HUGE, proof, top),
            ("a node appended", leaf, index, size, [*proof, top], top),
            ("a zero node prepended", leaf, index, size, [bytes(32), *proof], top),
            ("a 31-byte leaf", leaf[:31], index, size, proof, top),
            ("a 33-byte root", leaf, index, size, proof, top + b"\x00"),
        ]
        for position in range(len(proof)):
            flipped = [*proof[:position], flip(proof[position], 3), *proof[position + 1 :]]
            cases.append((f"node {position} altered", leaf, index, size, flipped, top))
            missing = proof[:position] + proof[position + 1 :]
            cases.append((f"node {position} missing", leaf, index, size, missing, top))
        if proof:  # a malformed node anywhere is refused alike: the last one stands for all
            short = [*proof[:-1], proof[-1][:31]]
            cases.append(("the last node of 31 bytes", leaf, index, size, short, top))
            cases.append(("the last node empty", leaf, index, size, [*proof[:-1], b""], top))
    four = merkle.inclusion_proof(0, 4, NODES)
    first = leaf_hash(leaf_data(0))
    cases += [
        ("RFC: a size-4 path has the shape of a size-3 one", first, 0, 3, four, root(4)),
        ("RFC: but not with the size-3 root", first, 0, 3, four, root(3)),
        ("a one-leaf tree with a non-empty path", first, 0, 1, [first], first),
        ("the empty tree", first, 0, 0, [], EMPTY_ROOT),
    ]
    return [
        {
            "why": why,
            "leaf": leaf.hex(),
            "index": index,
            "size": size,
            "proof": hexes(proof),
            "root": top.hex(),
            "valid": merkle.verify_inclusion(leaf, index, size, proof, top),
        }
        for why, leaf, index, size, proof, top in cases
    ]


def consistency_verdicts() -> list[Json]:
    """Proofs changed in every way, with whether Python's verify_consistency accepts them."""
    cases: list[tuple[str, int, int, bytes, bytes, list[bytes]]] = []
    for first, second in [(1, 2), (3, 5), (4, 8), (6, 8), (7, 13), (64, 129), (5, 5)]:
        old, new = root(first), root(second)
        proof = merkle.consistency_proof(first, second, NODES)
        cases += [
            ("as proven", first, second, old, new, proof),
            ("another first root", first, second, flip(old, 9), new, proof),
            ("another second root", first, second, old, flip(new, 200), proof),
            ("the roots swapped", first, second, new, old, proof),
            ("no proof", first, second, old, new, []),
            ("first size one less", first - 1, second, old, new, proof),
            ("first size one more", first + 1, second, old, new, proof),
            ("second size one less", first, second - 1, old, new, proof),
            ("second size one more", first, second + 1, old, new, proof),
            ("twice the second size", first, 2 * second, old, new, proof),
            ("the largest second size", first, HUGE, old, new, proof),
            ("a node appended", first, second, old, new, [*proof, new]),
            ("the first root prepended", first, second, old, new, [old, *proof]),
            ("a 31-byte first root", first, second, old[:31], new, proof),
            ("a 33-byte second root", first, second, old, new + b"\x01", proof),
        ]
        for position in range(len(proof)):
            flipped = [*proof[:position], flip(proof[position], 100), *proof[position + 1 :]]
            cases.append((f"node {position} altered", first, second, old, new, flipped))
            missing = proof[:position] + proof[position + 1 :]
            cases.append((f"node {position} missing", first, second, old, new, missing))
        if proof:
            short = [*proof[:-1], proof[-1][1:]]
            cases.append(("the last node of 31 bytes", first, second, old, new, short))
    cases += [
        ("from the empty tree", 0, 5, EMPTY_ROOT, root(5), []),
        ("the empty tree to itself", 0, 0, EMPTY_ROOT, EMPTY_ROOT, []),
        ("first beyond second", 6, 5, root(3), root(5), merkle.consistency_proof(3, 5, NODES)),
        ("equal sizes, another root", 5, 5, root(5), flip(root(5)), []),
        ("equal sizes, a non-empty proof", 5, 5, root(5), root(5), [root(5)]),
    ]
    return [
        {
            "why": why,
            "first": first,
            "second": second,
            "first_root": old.hex(),
            "second_root": new.hex(),
            "proof": hexes(proof),
            "valid": merkle.verify_consistency(first, second, old, new, proof),
        }
        for why, first, second, old, new, proof in cases
    ]


def expect(value: object, what: object) -> None:
    """Fail loudly unless ``value`` holds: a vector the Python does not produce is no vector."""
    if not value:
        raise VectorError(f"not as expected: {what!r}")


def refused(call: Callable[..., object], *args: object) -> bool:
    """Whether ``call(*args)`` raises ValueError, as Python does for a bad argument."""
    try:
        call(*args)
    except ValueError:
        return True
    return False


def merkle_vectors() -> Json:
    """The tree section."""
    data = [b"", b"\x00", b"\x01" * 64, "nhật ký".encode()]
    hashes = [leaf_hash(value) for value in data]
    huge_nodes = [
        (2**40 + 12345, 2**41 + 999),
        (2**63 - 1, 2**63),
        (HUGE - 1, HUGE),
        (0, HUGE),
        (12345678901, 2**62 + 3),
    ]
    bad_subtrees = [(0, 0), (3, 3), (5, 4), (1, 3), (2, 6), (4, 12), (5, 7), (1, HUGE)]
    bad_inclusion = [(5, 5), (0, 0), (6, 5), (HUGE, HUGE)]
    bad_consistency = [(0, 5), (0, 0), (6, 5), (HUGE, HUGE - 1)]
    for s in bad_subtrees:
        expect(refused(merkle.subtree_nodes, *s), s)
    for a in bad_inclusion:
        expect(refused(merkle.inclusion_nodes, *a), a)
    for a in bad_consistency:
        expect(refused(merkle.consistency_nodes, *a), a)
    subtrees = [(0, 1), (0, 7), (0, 8), (8, 11), (12, 13), (256, 300), (2**63, HUGE)]
    parents = [*range(17), 1023, 1024, 2**40 - 1, 2**63 - 1, HUGE]
    return {
        "leaf_data": LEAF_DATA,
        "empty_root": EMPTY_ROOT.hex(),
        "leaf_hashes": [
            {"data": d.hex(), "hash": h.hex()} for d, h in zip(data, hashes, strict=True)
        ],
        "node_hashes": [
            {"left": left.hex(), "right": right.hex(), "hash": merkle.node_hash(left, right).hex()}
            for left, right in [(hashes[0], hashes[1]), (hashes[1], hashes[0])]
        ],
        "parents_completed": [
            {"index": index, "parents": ids(merkle.parents_completed(index))} for index in parents
        ],
        "subtree_nodes": [
            {"start": start, "end": end, "nodes": ids(merkle.subtree_nodes(start, end))}
            for start, end in subtrees
        ],
        "trees": [
            {"size": size, "root": root(size).hex(), "nodes": ids(merkle.root_nodes(size))}
            for size in SIZES
        ],
        "inclusion": inclusion_vectors(),
        "consistency": consistency_vectors(),
        "huge_node_lists": [
            {
                "index": index,
                "size": size,
                "inclusion_nodes": ids(merkle.inclusion_nodes(index, size)),
                "consistency_nodes": ids(merkle.consistency_nodes(index or 1, size)),
                "root_nodes": ids(merkle.root_nodes(size)),
            }
            for index, size in huge_nodes
        ],
        "refused_subtree_ranges": [list(s) for s in bad_subtrees],
        "refused_inclusion_arguments": [list(a) for a in bad_inclusion],
        "refused_consistency_arguments": [list(a) for a in bad_consistency],
        "verify_inclusion": inclusion_verdicts(),
        "verify_consistency": consistency_verdicts(),
    }


# --- Signed notes ------------------------------------------------------------------------------

KEY_NAME = "test.lienthong.local/audit"
WITNESS_NAME = "witness.test/w1"
ERROR_REASONS = (
    "malformed",
    "invalid signature",
    "note has no signature",
    "invalid key name",
    "unsupported verifier key algorithm",
    "invalid",
    "not an unencrypted PEM private key",
    "the note signing key must be an Ed25519 key",
)


def test_key(purpose: str) -> tuple[bytes, Ed25519PrivateKey]:
    """A TEST key whose seed is public (SHA-256 of a sentence saying so): never a real key."""
    seed = hashlib.sha256(f"lienthong PUBLIC TEST KEY, {purpose}: never use it".encode()).digest()
    return seed, Ed25519PrivateKey.from_private_bytes(seed)


def reason(call: Callable[..., object], *args: object) -> str:
    """The kind of NoteError ``call(*args)`` raises: the start of Python's message."""
    try:
        call(*args)
    except NoteError as error:
        message = str(error)
        return next(r for r in ERROR_REASONS if message.startswith(r))
    raise VectorError("a vector that must be refused was accepted")


def key_vector(name: str, purpose: str) -> tuple[Json, NoteSigner]:
    """A test key as the vectors hold it, and its signer."""
    seed, key = test_key(purpose)
    signer = NoteSigner(name, key)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    expect(signed_note.load_signer(name, pem).verifier_key() == signer.verifier_key(), pem)
    public = key.public_key().public_bytes_raw()
    return {
        "about": "a PUBLIC TEST key: its seed is here; never trust anything it signs",
        "name": name,
        "seed": seed.hex(),
        "public_key": public.hex(),
        "pkcs8_pem": pem.decode("ascii"),
        "key_id": signer.key_id.hex(),
        "verifier_key": signer.verifier_key(),
    }, signer


def non_point_key() -> str:
    """A verifier key whose 32 bytes are no curve point: Python reads it, nothing verifies."""
    raw = b"\x01" + (2).to_bytes(32, "little")  # y = 2 has no x on edwards25519
    key_id = hashlib.sha256(b"nonpoint.test/key\n" + raw).digest()[:4]
    return f"nonpoint.test/key+{key_id.hex()}+{base64.b64encode(raw).decode()}"


def signature_line(note: str) -> str:
    """The last signature line of a note, with its newline."""
    return note[note.rindex("\n\n") + 2 :]


def malformed_notes(signer: NoteSigner, witness: NoteSigner) -> dict[str, str]:
    """Notes the main key's verifier must refuse (tests/test_note.py's, and more)."""
    text = checkpoint_text(Checkpoint(signer.name, 7, bytes(range(32))))
    note = signer.sign(text)
    line = signature_line(note)
    encoded = line[:-1].rsplit(" ", 1)[1]
    raw = base64.b64decode(encoded)

    def with_signature(signature: bytes) -> str:
        return note.replace(encoded, base64.b64encode(signature).decode())

    altered_text = note.replace("\n7\n", "\n8\n", 1)
    impostor = NoteSigner(signer.name, test_key("impostor")[1])
    bad_copy = encoded[:40] + ("A" if encoded[40] != "A" else "B") + encoded[41:]
    url = b"\xfb\xff" + raw[2:]  # "+/8..." in the standard alphabet, "-_8..." in the URL one
    return {
        "text only": text,
        "text and blank line": text + "\n",
        "no blank line": text + line,
        "no final newline": note[:-1],
        "control character": "\x01" + note,
        "escape": note.replace("audit\n7", "audit\x1b7"),
        "carriage return": note.replace("\n\n", "\r\n\n"),
        "tab in the signature line": note.replace(f"{signer.name} ", f"{signer.name}\t"),
        "bad base64": note.replace(encoded, encoded[:-2] + "!="),
        "base64 without padding": note.replace(encoded, encoded.rstrip("=")),
        "base64 not canonical": note.replace(encoded, encoded[:-2] + "B="),
        "base64 url alphabet": note.replace(encoded, base64.urlsafe_b64encode(url).decode()),
        "name with a space": note.replace(f"— {signer.name}", "— test lienthong/audit"),
        "name with a plus": note.replace(f"— {signer.name}", "— test+lienthong/audit"),
        "name with a no-break space": note.replace(f"— {signer.name}", "— test\u00a0x"),
        "no name": note.replace(f"— {signer.name} ", "—  "),
        "no signature": note.replace(" " + encoded, ""),
        "signature too short": with_signature(signer.key_id),
        "hyphen for em dash": note.replace("— ", "- "),
        "line after signatures": note + "Unexpected line.\n",
        "blank line after signatures": note + "\n",
        "too many signatures": note + line * 100,
        "signed only by another key": witness.sign(text),
        "signed only by a key of the same name": impostor.sign(text),
        "the signature of another text": altered_text,
        "a bad copy beside a good signature": note + line.replace(encoded, bad_copy),
        "key ID altered": with_signature(flip(raw, 0)),
        "signature's first byte altered": with_signature(flip(raw, 32)),
        "signature's last byte altered": with_signature(flip(raw, 8 * len(raw) - 1)),
        "signature one byte short": with_signature(raw[:-1]),
        "signature one byte long": with_signature(raw + b"\x00"),
        "a character of the text altered": note.replace("test.", "tesT.", 1),
    }


def note_vectors() -> Json:
    """The signed-note section."""
    key, signer = key_vector(KEY_NAME, "audit log")
    witness_key, witness = key_vector(WITNESS_NAME, "witness")
    verifier = NoteVerifier(signer.verifier_key())
    roots = {size: root(size) for size in (0, 1, 7, 1000)}
    spec_root = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    checkpoints = [
        *(Checkpoint(KEY_NAME, size, value) for size, value in roots.items()),
        Checkpoint(KEY_NAME, 2**63 - 1, hashlib.sha256(b"max").digest()),
        Checkpoint("a log with spaces+plus", 5, roots[7]),
        Checkpoint("nhật ký kiểm toán/Bộ Tư pháp", 42, roots[1]),
        Checkpoint("example.com/behind-the-sofa", 20852163, spec_root),
        Checkpoint("lienthong receipt v1", 3, roots[1]),
    ]
    receipts = [
        Receipt(KEY_NAME, 0, leaf_hash(leaf_data(0)), "exchange-1"),
        Receipt(KEY_NAME, 17, leaf_hash(leaf_data(17)), "0f6a7c52-1bd9-4f0e-9d1c-0c8c1b5e7a11"),
        Receipt(KEY_NAME, 2**63 - 1, bytes(32), "an id with spaces, ü and 🇻🇳"),
        Receipt("a log with spaces+plus", 5, leaf_hash(b""), "+"),
    ]
    texts = [
        "first\n\n— looks like a signature line\n\n",
        "Giấy khai sinh\nNguyễn Thị Hương\n",
        "del \x7f, next line \x85, line separator \u2028, BOM \ufeff, 🧑‍⚖️\n",
        "\n",
    ]
    note = signer.sign(checkpoint_text(checkpoints[2]))
    witnessed = witness.sign(checkpoint_text(checkpoints[2]))
    impostor = NoteSigner(KEY_NAME, test_key("impostor")[1]).sign(checkpoint_text(checkpoints[2]))
    garbage = f"— {WITNESS_NAME} {base64.b64encode(bytes(68)).decode()}\n"
    opens = [
        ("cosigned by a witness", "key", note + signature_line(witnessed)),
        ("cosigned, the witness's signature first", "key", witnessed + signature_line(note)),
        ("cosigned, opened by the witness", "witness", note + signature_line(witnessed)),
        ("beside an unknown key's garbage", "key", note + garbage),
        ("beside a key of the same name", "key", note + signature_line(impostor)),
        ("beside a key of the same name, after it", "key", impostor + signature_line(note)),
        ("a hundred signatures", "key", note + signature_line(note) * 99),
    ]
    verifiers = {"key": verifier, "witness": NoteVerifier(witness.verifier_key())}
    name, key_id, encoded = signer.verifier_key().split("+", 2)
    bad_keys = [
        "",
        "+++",
        "name",
        "name+c74f20a3",
        f"{name}+{key_id[:7]}+{encoded}",
        f"{name}+0x{key_id[:6]}+{encoded}",
        f"{name}+{key_id}+{encoded} ",
        f" {name}+{key_id}+{encoded}",
        f"{name}+{int(key_id, 16) ^ 1:08x}+{encoded}",
        f"other.example/log+{key_id}+{encoded}",
        f"{name}+{key_id}+{encoded[:-1]}",
        f"{name}+{key_id}++{encoded}",
        f"has space+{key_id}+{encoded}",
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ]
    public = base64.b64decode(encoded)
    for wrong in [public[:-1], public + b"\x00", b"\x02" + public[1:]]:
        wrong_id = hashlib.sha256(name.encode() + b"\n" + wrong).digest()[:4].hex()
        bad_keys.append(f"{name}+{wrong_id}+{base64.b64encode(wrong).decode()}")
    good_keys = [
        signer.verifier_key(),
        f"{name}+{key_id.upper()}+{encoded}",
        witness.verifier_key(),
        non_point_key(),
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ]
    non_point = NoteVerifier(non_point_key())
    non_point_note = (
        f"hello\n\n— {non_point.name} "
        + base64.b64encode(non_point.key_id + bytes(64)).decode()
        + "\n"
    )
    bad_names = ["", "has space", "a+b", "tab\tname", "nbsp\u00a0name", "x\n", "nel\x85", "\u3000"]
    bad_names += ["\x1c", "line\u2028separator", "bell\x07"]
    bad_texts = ["no final newline", "", "bell\x07\n", "tab\there\n", "cr\r\n", "unit\x1f\n"]
    hash64 = base64.b64encode(hashlib.sha256(b"leaf").digest()).decode()
    spec = f"example.com/behind-the-sofa\n20852163\n{base64.b64encode(spec_root).decode()}\n"
    bad_checkpoints = {
        "empty": "",
        "one line": "example.com/log\n",
        "two lines": "example.com/log\n5\n",
        "no final newline": f"example.com/log\n5\n{hash64}",
        "empty origin": f"\n5\n{hash64}\n",
        "leading zero": f"example.com/log\n05\n{hash64}\n",
        "zero with leading zero": f"example.com/log\n00\n{hash64}\n",
        "negative": f"example.com/log\n-1\n{hash64}\n",
        "plus sign": f"example.com/log\n+5\n{hash64}\n",
        "space": f"example.com/log\n 5\n{hash64}\n",
        "trailing space": f"example.com/log\n5 \n{hash64}\n",
        "underscore": f"example.com/log\n1_000\n{hash64}\n",
        "arabic-indic digit": f"example.com/log\n\u0665\n{hash64}\n",
        "fullwidth digit": f"example.com/log\n\uff15\n{hash64}\n",
        "hexadecimal": f"example.com/log\n0x10\n{hash64}\n",
        "empty size": f"example.com/log\n\n{hash64}\n",
        "size beyond int64": f"example.com/log\n{2**63}\n{hash64}\n",
        "size beyond uint64": f"example.com/log\n{2**64}\n{hash64}\n",
        "twenty digits": f"example.com/log\n{'0' * 19}1\n{hash64}\n",
        "huge size": f"example.com/log\n{'9' * 5000}\n{hash64}\n",
        "bad base64": "example.com/log\n5\nnot base64!\n",
        "missing padding": f"example.com/log\n5\n{hash64.rstrip('=')}\n",
        "non-canonical base64": f"example.com/log\n5\n{hash64[:-2]}B=\n",
        "space before hash": f"example.com/log\n5\n {hash64}\n",
        "31-byte hash": f"example.com/log\n5\n{base64.b64encode(bytes(31)).decode()}\n",
        "33-byte hash": f"example.com/log\n5\n{base64.b64encode(bytes(33)).decode()}\n",
        "empty hash": "example.com/log\n5\n\n",
        "empty extension line": f"example.com/log\n5\n{hash64}\n\n",
        "empty line between": f"example.com/log\n5\n{hash64}\next\n\nmore\n",
        "carriage return": f"example.com/log\r\n5\n{hash64}\n",
        "nul": f"example.com/log\x00\n5\n{hash64}\n",
        "a receipt": receipt_text(receipts[0]),
    }
    good_receipt = f"lienthong receipt v1\nexample.com/log\n3\n{hash64}\nexchange-1\n"
    bad_receipts = {
        "empty": "",
        "no final newline": good_receipt[:-1],
        "other version": good_receipt.replace("v1", "v2"),
        "four lines": good_receipt.replace("\nexchange-1\n", "\n"),
        "six lines": good_receipt + "extra\n",
        "empty origin": good_receipt.replace("example.com/log", ""),
        "leading zero": good_receipt.replace("\n3\n", "\n03\n"),
        "negative index": good_receipt.replace("\n3\n", "\n-3\n"),
        "index beyond int64": good_receipt.replace("\n3\n", f"\n{2**63}\n"),
        "non-canonical": good_receipt.replace(hash64, hash64[:-2] + "B="),
        "short hash": good_receipt.replace(hash64, base64.b64encode(bytes(16)).decode()),
        "empty exchange id": good_receipt.replace("exchange-1", ""),
        "tab": good_receipt.replace("exchange-1", "ex\tchange"),
        "a checkpoint": checkpoint_text(checkpoints[-1]),
    }
    unbuildable = [("", 1), ("two\nlines", 1), ("control\x07", 1), ("example.com/log", 2**63)]
    for origin, size in unbuildable:
        reason(Checkpoint, origin, size, bytes(32))
    bad_exchange_ids = ["", "two\nlines", "tab\there"]
    for exchange_id in bad_exchange_ids:
        reason(Receipt, KEY_NAME, 1, bytes(32), exchange_id)
    pkcs8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8)
    ec_key = ec.derive_private_key(20240501, ec.SECP256R1())  # fixed: a public TEST key too
    ec_pem = ec_key.private_bytes(*pkcs8, serialization.NoEncryption())
    bad_pems = {"a P-256 key": ec_pem, "garbage": b"not a key"}
    extended = [spec + "extension one\nextension two\n", f"a log\n0\n{hash64}\n \n"]
    return {
        "key": key,
        "witness": witness_key,
        "checkpoints": [
            {
                "origin": c.origin,
                "tree_size": c.tree_size,
                "root_hash": c.root_hash.hex(),
                "text": checkpoint_text(c),
                "note": signer.sign(checkpoint_text(c)),
            }
            for c in checkpoints
        ],
        "checkpoints_with_extensions": [
            {
                "text": text,
                "origin": c.origin,
                "tree_size": c.tree_size,
                "root_hash": c.root_hash.hex(),
            }
            for text in extended
            for c in [signed_note.parse_checkpoint(text)]
        ],
        "receipts": [
            {
                "origin": r.origin,
                "leaf_index": r.leaf_index,
                "leaf_hash": r.leaf_hash.hex(),
                "exchange_id": r.exchange_id,
                "text": receipt_text(r),
                "note": signer.sign(receipt_text(r)),
            }
            for r in receipts
        ],
        "texts": [{"text": text, "note": signer.sign(text)} for text in texts],
        "opens": [
            {"why": why, "verifier": who, "note": n, "text": verifiers[who].open(n)}
            for why, who, n in opens
        ],
        "refused_notes": [
            {"why": why, "note": n, "reason": reason(verifier.open, n)}
            for why, n in malformed_notes(signer, witness).items()
        ]
        + [
            {
                "why": "a key that is no curve point",
                "verifier_key": non_point_key(),
                "note": non_point_note,
                "reason": reason(non_point.open, non_point_note),
            }
        ],
        "verifier_keys": [
            {"verifier_key": k, "name": v.name, "key_id": v.key_id.hex()}
            for k in good_keys
            for v in [NoteVerifier(k)]
        ],
        "refused_verifier_keys": [
            {"verifier_key": k, "reason": reason(NoteVerifier, k)} for k in bad_keys
        ],
        "refused_key_names": [
            {"name": n, "reason": reason(NoteSigner, n, test_key("audit log")[1])}
            for n in bad_names
        ],
        "refused_texts": [{"text": t, "reason": reason(signer.sign, t)} for t in bad_texts],
        "refused_checkpoints": [
            {"why": why, "text": t, "reason": reason(signed_note.parse_checkpoint, t)}
            for why, t in bad_checkpoints.items()
        ],
        "refused_receipts": [
            {"why": why, "text": t, "reason": reason(signed_note.parse_receipt, t)}
            for why, t in bad_receipts.items()
        ],
        "refused_signing_keys": [
            {
                "why": why,
                "pem": pem.decode("ascii"),
                "reason": reason(signed_note.load_signer, KEY_NAME, pem),
            }
            for why, pem in bad_pems.items()
        ],
        "unbuildable_checkpoints": [{"origin": o, "tree_size": s} for o, s in unbuildable],
        "unbuildable_exchange_ids": bad_exchange_ids,
        "python_space_characters": [c for c in range(0x110000) if chr(c).isspace()],
    }


# --- Entries -----------------------------------------------------------------------------------

BASE = AuditEntry(
    kind="request",
    exchange_id="0f6a7c52-1bd9-4f0e-9d1c-0c8c1b5e7a11",
    caller="spiffe://lienthong.local/moj/civil-registry",
    upstream="police",
    method="/lienthong.population.v1.CitizenService/GetCitizen",
    purpose="civil-status-correction",
    on_behalf_of="spiffe://lienthong.local/moj/officers/alice",
    request_id="req-1",
    start_time="2024-05-01T08:30:00.123456Z",
)
EVERY_BYTE = "".join(chr(c) for c in range(0x100))


def entries() -> dict[str, AuditEntry]:
    """Entries whose encodings exercise every rule of the canonical form."""
    replace = dataclasses.replace
    return {
        "a request": BASE,
        "a request, nothing optional": replace(
            BASE, caller=None, upstream=None, purpose=None, on_behalf_of=None, request_id=None
        ),
        "a completion": replace(
            BASE,
            kind="completion",
            end_time="2024-05-01T08:30:00.234567Z",
            status_code=0,
            status="OK",
            request_bytes=123,
            response_bytes=4567,
            request_sha256=hashlib.sha256(b"request").hexdigest(),
            response_sha256=hashlib.sha256(b"response").hexdigest(),
            request_leaf=41,
        ),
        "a refused call": replace(
            BASE,
            kind="completion",
            end_time="2024-05-01T08:30:00.123999Z",
            status_code=7,
            status="PERMISSION_DENIED",
            request_bytes=0,
        ),
        "quotes and backslashes": replace(BASE, caller='say "hi" \\ C:\\path\\', status='"'),
        "every control character": replace(BASE, purpose="".join(map(chr, range(0x20)))),
        "every code point below 256": replace(BASE, request_id=EVERY_BYTE),
        "separators and specials": replace(
            BASE,
            method="\u2028\u2029\ufeff\ufffe\uffff\u200d\u00ad",
            status="/ </script> & < > ' \x7f \x85",
        ),
        "Vietnamese": replace(
            BASE,
            on_behalf_of="Nguyễn Văn An",
            status="Không tìm thấy công dân",
            purpose="Nguye\u0302\u0303n (decomposed)",
        ),
        "emoji and the last code point": replace(
            BASE, request_id="🇻🇳👍🏽🧑‍⚖️", upstream="\U0010ffff\U00010000"
        ),
        "empty strings": replace(
            BASE,
            exchange_id="",
            caller="",
            upstream="",
            method="",
            purpose="",
            on_behalf_of="",
            request_id="",
            start_time="",
            end_time="",
            status="",
        ),
        "the largest integers": replace(
            BASE,
            kind="completion",
            status_code=2**63 - 1,
            request_bytes=2**64 - 1,
            response_bytes=2**63,
            request_leaf=2**64 - 1,
        ),
        "a negative status code": replace(BASE, status_code=-(2**63), request_leaf=0),
        "another version": replace(BASE, version=2),
    }


def non_canonical(entry: AuditEntry) -> dict[str, bytes]:
    """Bytes of ``entry`` that AuditEntry.decode must refuse: each is not its encoding."""
    fields = dataclasses.asdict(entry)
    good = entry.encode()

    def dumps(value: object, **options: Any) -> bytes:  # noqa: ANN401 - json.dumps' own
        return json.dumps(value, **options).encode("utf-8")

    compact: dict[str, Any] = {"sort_keys": True, "separators": (",", ":")}
    unsorted = dict(reversed(fields.items()))
    missing = {k: v for k, v in fields.items() if k != "upstream"}
    return {
        "spaces": dumps(fields, sort_keys=True, ensure_ascii=False),
        "indented": dumps(fields, sort_keys=True, indent=1, ensure_ascii=False),
        "unsorted keys": dumps(unsorted, separators=(",", ":"), ensure_ascii=False),
        "escaped non-ASCII": dumps(fields, **compact),
        "a trailing newline": good + b"\n",
        "a leading byte order mark": b"\xef\xbb\xbf" + good,
        "an escaped slash": good.replace(b"/", b"\\/", 1),
        "an upper-case escape": good.replace(b"\\u001f", b"\\u001F", 1),
        "a long escape for backspace": good.replace(b"\\b", b"\\u0008", 1),
        "an escaped letter": good.replace(b'"kind":"request"', b'"kind":"\\u0072equest"'),
        "a missing field": dumps(missing, **compact, ensure_ascii=False),
        "an extra field": dumps({**fields, "zzz": None}, **compact, ensure_ascii=False),
        "a duplicate field": good[:-1] + b',"version":1}',
        "invalid UTF-8": good.replace(b"req-1", b"req-\xff", 1),
        "a lone surrogate escape": good.replace(b"req-1", b"req-\\udc80", 1),
        "an exponent": good.replace(b'"version":1', b'"version":1e0'),
        "a negative zero": good.replace(b'"version":1', b'"version":-0'),
        "a leading zero": good.replace(b'"version":1', b'"version":01'),
        "a raw control character": good.replace(b"\\u001f", b"\x1f", 1),
        "not an object": b"[]",
        "null": b"null",
        "nothing": b"",
    }


def python_only(entry: AuditEntry) -> dict[str, bytes]:
    """Canonical bytes Python's decode accepts only because it does not check field types."""
    good = entry.encode()
    return {
        "a float": good.replace(b'"version":1', b'"version":1.0'),
        "NaN": good.replace(b'"version":1', b'"version":NaN'),
        "a number for a string": good.replace(b'"request_id":"req-1"', b'"request_id":5'),
        "a list for a string": good.replace(b'"request_id":"req-1"', b'"request_id":["x"]'),
        "a boolean for an integer": good.replace(b'"version":1', b'"version":true'),
        "an unknown kind": good.replace(b'"kind":"request"', b'"kind":"bogus"'),
        "a null for a string": good.replace(
            b'"method":"%s"' % BASE.method.encode(), b'"method":null'
        ),
        "a negative size": good.replace(b'"request_bytes":null', b'"request_bytes":-1'),
        "an integer beyond 64 bits": good.replace(b'"version":1', b'"version":%d' % 2**64),
    }


def entry_vectors() -> Json:
    """The entry section."""
    # Control characters, a slash and non-ASCII text: each has one canonical form.
    sample = dataclasses.replace(entries()["every control character"], status="Không tìm thấy")
    refused_bytes = non_canonical(sample)
    accepted_bytes = python_only(sample)
    for data in refused_bytes.values():
        expect(refused(AuditEntry.decode, data), data)
    for data in accepted_bytes.values():
        AuditEntry.decode(data)
    cases = []
    for why, entry in entries().items():
        encoded = entry.encode()
        expect(AuditEntry.decode(encoded) == entry, why)
        cases.append(
            {
                "why": why,
                "entry": dataclasses.asdict(entry),
                "encoded": encoded.hex(),
                "leaf_hash": leaf_hash(encoded).hex(),
            }
        )
    return {
        "entries": cases,
        "refused": [{"why": why, "bytes": data.hex()} for why, data in refused_bytes.items()],
        "accepted_by_python_only": [
            {"why": why, "bytes": data.hex()} for why, data in accepted_bytes.items()
        ],
    }


# --- Output ------------------------------------------------------------------------------------


def render_value(value: object, depth: int) -> str:
    """Sections and their objects on their own lines, and each list of cases one case a line."""
    pad = "  " * (depth + 1)
    end = "  " * depth
    if isinstance(value, dict) and depth < 2:  # noqa: PLR2004 - the document and its sections
        rows = [
            f"{pad}{json.dumps(key)}: {render_value(item, depth + 1)}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(rows) + f"\n{end}}}"
    if isinstance(value, list) and value and isinstance(value[0], dict | list):
        return "[\n" + ",\n".join(pad + json.dumps(item) for item in value) + f"\n{end}]"
    return json.dumps(value)


def render() -> str:
    """The vectors file: ASCII JSON, one case a line."""
    document = {
        "about": ABOUT,
        "merkle": merkle_vectors(),
        "note": note_vectors(),
        "entry": entry_vectors(),
    }
    return render_value(document, 0) + "\n"


def main() -> None:
    """Parse the command line and write the vectors."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=VECTORS, help=f"default: {VECTORS}")
    out: Path = parser.parse_args().out
    text = render()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
