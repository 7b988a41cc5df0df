"""Operators' tools over the audit log: verify, tail and search, export and verify an export.

Verification replays every entry from its stored bytes — it trusts no stored hash — and
checks the tree against every signed checkpoint, naming the first bad index. A checkpoint
kept from earlier (by a ministry, say) is checked through a consistency proof, which
detects a truncated or rewritten log.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select

from gateway.audit import merkle
from gateway.audit.entry import AuditEntry
from gateway.audit.store import (
    AuditLog,
    checkpoint_table,
    entry_table,
    fetch_nodes,
    head_table,
    node_table,
)
from lienthong.signed_note import NoteError, NoteVerifier, parse_checkpoint

EXPORT_FORMAT = "lienthong-audit-export/1"
_CHUNK = 10_000


@dataclass
class Verification:
    """The outcome of verifying a log or an export."""

    entries: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    first_bad_index: int | None = None

    @property
    def ok(self) -> bool:
        """Whether nothing was wrong."""
        return not self.problems

    def fail(self, message: str, index: int | None = None) -> None:
        """Record a problem, keeping the lowest bad index."""
        self.problems.append(message)
        if index is not None and (self.first_bad_index is None or index < self.first_bad_index):
            self.first_bad_index = index


def _rows(engine: Engine) -> Iterator[tuple[int, bytes, bytes | None]]:
    """(leaf index, entry bytes, stored leaf hash) in leaf order, read in chunks."""
    after = -1
    while True:
        with engine.connect() as connection:
            rows = connection.execute(
                select(entry_table.c.leaf_index, entry_table.c.entry, node_table.c.hash)
                .outerjoin(
                    node_table,
                    (node_table.c.level == 0) & (node_table.c.idx == entry_table.c.leaf_index),
                )
                .where(entry_table.c.leaf_index > after)
                .order_by(entry_table.c.leaf_index)
                .limit(_CHUNK)
            ).all()
        if not rows:
            return
        for row in rows:
            yield (
                int(row.leaf_index),
                bytes(row.entry),
                None if row.hash is None else bytes(row.hash),
            )
        after = int(rows[-1].leaf_index)


def verify_log(
    engine: Engine, verifier: NoteVerifier, *, kept_checkpoint: str | None = None
) -> Verification:
    """Replay the whole log and check it against its checkpoints (and one kept elsewhere)."""
    result = Verification()
    with engine.connect() as connection:
        size = int(connection.execute(select(head_table.c.tree_size)).scalar_one())
        checkpoints = {
            int(row.tree_size): (bytes(row.root_hash), str(row.note))
            for row in connection.execute(select(checkpoint_table))
        }
    kept = _open_kept(verifier, kept_checkpoint, result)
    roots: dict[int, bytes] = {}
    frontier = merkle.Frontier()
    wanted = set(checkpoints) | ({kept[0]} if kept else set())
    expected = 0
    for index, data, stored_leaf in _rows(engine):
        if index != expected:
            result.fail(f"entry {expected} is missing (next stored entry is {index})", expected)
            break
        try:
            AuditEntry.decode(data)
        except ValueError as error:
            result.fail(f"entry {index} is malformed: {error}", index)
        leaf = merkle.leaf_hash(data)
        if stored_leaf != leaf:
            result.fail(f"entry {index} does not match its leaf hash", index)
        frontier.append(leaf)
        expected += 1
        if frontier.size in wanted:
            roots[frontier.size] = frontier.root()
    result.entries = expected
    if expected != size and not result.problems:
        result.fail(f"the log holds {expected} entries but its head says {size}", expected)
    for tree_size in sorted(checkpoints):
        root, note = checkpoints[tree_size]
        result.checkpoints += 1
        _check_checkpoint(result, verifier, tree_size, root, note, roots.get(tree_size))
    if kept is not None:
        _check_kept(result, engine, kept, size, roots)
    return result


def _open_kept(
    verifier: NoteVerifier, note: str | None, result: Verification
) -> tuple[int, bytes] | None:
    if note is None:
        return None
    try:
        checkpoint = parse_checkpoint(verifier.open(note))
    except NoteError as error:
        result.fail(f"the kept checkpoint does not verify: {error}")
        return None
    return checkpoint.tree_size, checkpoint.root_hash


def _check_checkpoint(  # noqa: PLR0913, PLR0917 - one checkpoint's facts, all needed
    result: Verification,
    verifier: NoteVerifier,
    tree_size: int,
    root: bytes,
    note: str,
    replayed: bytes | None,
) -> None:
    try:
        signed = parse_checkpoint(verifier.open(note))
    except NoteError as error:
        result.fail(f"checkpoint {tree_size} is not signed by the log's key: {error}")
        return
    if (signed.tree_size, signed.root_hash) != (tree_size, root):
        result.fail(f"checkpoint {tree_size}: the stored head differs from the signed note")
    if replayed is None:
        result.fail(f"checkpoint {tree_size} is beyond the entries replayed", result.entries)
    elif replayed != signed.root_hash:
        result.fail(f"the entries do not hash to the root signed at size {tree_size}")


def _check_kept(
    result: Verification,
    engine: Engine,
    kept: tuple[int, bytes],
    size: int,
    roots: dict[int, bytes],
) -> None:
    kept_size, kept_root = kept
    if kept_size > size:
        result.fail(f"the log was truncated: {size} entries, a checkpoint kept at {kept_size}")
        return
    with engine.connect() as connection:
        nodes = fetch_nodes(
            connection,
            [*merkle.consistency_nodes(kept_size, size), *merkle.root_nodes(size)]
            if kept_size < size
            else merkle.root_nodes(size),
        )
    current_root = merkle.root_hash(size, nodes)
    proof = merkle.consistency_proof(kept_size, size, nodes) if kept_size < size else []
    if not merkle.verify_consistency(kept_size, size, kept_root, current_root, proof):
        result.fail(f"the log is not consistent with the checkpoint kept at size {kept_size}")
    elif roots.get(kept_size) not in (None, kept_root):
        result.fail(f"the entries do not hash to the root kept at size {kept_size}")


def export(log: AuditLog, start: int, end: int, path: Path) -> int:
    """Write entries [start, end) with a signed checkpoint and their inclusion proofs."""
    checkpoint = log.checkpoint()
    if checkpoint is None or not 0 <= start < end <= checkpoint.tree_size:
        raise ValueError("the range must lie within the latest signed checkpoint")
    entries = []
    for index, data in log.entries(start, end):
        _, proof = log.inclusion_proof(index, checkpoint.tree_size)
        entries.append(
            {
                "leaf_index": index,
                "entry": base64.b64encode(data).decode(),
                "inclusion_proof": [base64.b64encode(node).decode() for node in proof],
            }
        )
    document = {
        "format": EXPORT_FORMAT,
        "origin": log.origin,
        "checkpoint": checkpoint.note,
        "entries": entries,
    }
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return len(entries)


def verify_export(path: Path, verifier: NoteVerifier) -> Verification:
    """Check an export with nothing but the log's public key."""
    result = Verification()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        checkpoint = parse_checkpoint(verifier.open(document["checkpoint"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        result.fail(f"not a verifiable export: {error}")
        return result
    result.checkpoints = 1
    previous = None
    for item in document.get("entries", []):
        index = item.get("leaf_index")
        try:
            data = base64.b64decode(item["entry"], validate=True)
            proof = [base64.b64decode(node, validate=True) for node in item["inclusion_proof"]]
        except (KeyError, TypeError, ValueError):
            result.fail(f"entry {index} is malformed", index)
            continue
        if previous is not None and index != previous + 1:
            result.fail(f"entry {previous + 1} is missing from the export", previous + 1)
        previous = index
        if not merkle.verify_inclusion(
            merkle.leaf_hash(data), index, checkpoint.tree_size, proof, checkpoint.root_hash
        ):
            result.fail(f"entry {index} is not in the signed tree", index)
        result.entries += 1
    return result
