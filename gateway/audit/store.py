"""The durable audit log: entries as RFC 9162 Merkle tree leaves, group-committed.

Callers append from many threads and each waits until its entry is durable. One writer
thread takes every entry waiting, assigns consecutive leaf indices, and writes the entries,
the tree nodes they complete and the new tree size in one transaction with one sync — group
commit: throughput from batching, never from weaker durability (SQLite runs WAL with
synchronous=FULL; PostgreSQL commits synchronously).

The tree is kept as complete aligned subtrees (node (level, index) covers 2^level leaves), so
a proof reads O(log n) nodes in one query and nothing is ever rehashed. The head row is
locked for each batch, so several gateway processes sharing one PostgreSQL database append
to one tree: a writer whose tree size is stale reloads the right edge before appending.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway.audit import merkle
from gateway.audit.entry import AuditEntry
from lienthong.db import schema_transaction
from lienthong.signed_note import Checkpoint, NoteSigner, checkpoint_text

log = structlog.get_logger(__name__)

metadata = MetaData()
head_table = Table(
    "audit_head",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("tree_size", BigInteger, nullable=False),
)
entry_table = Table(
    "audit_entry",
    metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("entry", LargeBinary, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("exchange_id", String(36), nullable=False),
    Column("caller", String(2048)),
    Column("method", String(512), nullable=False),
    Column("status", String(32)),
    Column("request_id", String(256)),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("audit_entry_exchange", "exchange_id"),
    Index("audit_entry_caller", "caller", "leaf_index"),
    Index("audit_entry_method", "method", "leaf_index"),
    Index("audit_entry_request", "request_id"),
    Index("audit_entry_time", "recorded_at"),
)
node_table = Table(
    "audit_node",
    metadata,
    Column("level", SmallInteger, primary_key=True),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)
checkpoint_table = Table(
    "audit_checkpoint",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
)


class AuditUnavailableError(RuntimeError):
    """The entry could not be made durable; the exchange must not proceed."""


@dataclass(frozen=True)
class Appended:
    """Where an entry landed in the tree."""

    leaf_index: int
    leaf_hash: bytes


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint as stored: the tree head and its signed note."""

    tree_size: int
    root_hash: bytes
    note: str


@dataclass(frozen=True)
class CompletionQuery:
    """Filters of a listing of exchanges; empty values do not filter."""

    caller: str | None = None
    method: str | None = None
    request_id: str | None = None
    status: str | None = None
    recorded_from: dt.datetime | None = None
    recorded_to: dt.datetime | None = None
    after_leaf: int = -1
    limit: int = 100
    newest_first: bool = False


@dataclass
class _Pending:
    entry: AuditEntry
    data: bytes
    future: Future[Appended]


def create_schema(engine: Engine) -> None:
    """Create the audit tables and the head row if they do not exist.

    Several gateway processes may start together on one database: the schema transaction
    lets one create what is missing while the others wait, then find it there.
    """
    with schema_transaction(engine) as connection:
        metadata.create_all(connection)
        if connection.execute(select(head_table.c.id)).first() is None:
            connection.execute(insert(head_table).values(id=1, tree_size=0))


def fetch_nodes(connection: Connection, ids: Iterable[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
    """The stored hashes of ``ids``, in one query."""
    by_level: dict[int, set[int]] = {}
    for level, index in ids:
        by_level.setdefault(level, set()).add(index)
    if not by_level:
        return {}
    # One IN list per level: both databases answer it from the primary key (SQLite does not
    # use an index for a row-value IN).
    rows = connection.execute(
        select(node_table.c.level, node_table.c.idx, node_table.c.hash).where(
            or_(
                *(
                    and_(node_table.c.level == level, node_table.c.idx.in_(sorted(indices)))
                    for level, indices in by_level.items()
                )
            )
        )
    )
    return {(row.level, row.idx): bytes(row.hash) for row in rows}


class AuditLog:
    """The append-only, verifiable log of every exchange."""

    def __init__(
        self,
        engine: Engine,
        signer: NoteSigner,
        *,
        max_batch: int = 512,
        checkpoint_interval: float = 0.5,
    ) -> None:
        """Log into ``engine``'s database; sign checkpoints as ``signer``, named as the origin."""
        self._engine = engine
        self._signer = signer
        self.origin = signer.name
        self._max_batch = max_batch
        self._checkpoint_interval = checkpoint_interval
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._frontier: merkle.Frontier | None = None
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="audit-checkpointer", daemon=True
        )

    # Life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Create the schema if needed and start the writer and the checkpointer."""
        create_schema(self._engine)
        self._writer.start()
        self._checkpointer.start()

    def close(self) -> None:
        """Write what is queued, sign a last checkpoint, stop, and release the engine."""
        self._stop.set()
        self._queue.put(None)
        if self._writer.is_alive():
            self._writer.join(timeout=10)
        if self._checkpointer.is_alive():
            self._checkpointer.join(timeout=10)
        self.checkpoint()
        self._engine.dispose()

    # Appending ----------------------------------------------------------------------------

    def append(self, entry: AuditEntry, *, timeout: float = 10.0) -> Appended:
        """Append ``entry`` and return once it is durable; AuditUnavailableError otherwise."""
        if self._stop.is_set():
            raise AuditUnavailableError("the audit log is closed")
        _check_fits(entry)
        pending = _Pending(entry, entry.encode(), Future())
        self._queue.put(pending)
        try:
            return pending.future.result(timeout=timeout)
        except AuditUnavailableError:
            raise
        except Exception as error:
            raise AuditUnavailableError(f"audit entry not recorded: {error}") from error

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._write(batch)
                    return
                batch.append(item)
            if not self._write(batch):
                return

    def _write(self, batch: Sequence[_Pending]) -> bool:
        """Commit ``batch`` and answer its waiters; False when told to stop meanwhile."""
        try:
            results = self._commit(batch)
        except Exception as error:  # noqa: BLE001 - every waiter must learn of the failure
            self._frontier = None  # reload the right edge from what was committed
            # What queued while this batch failed fails with it: the database was just found
            # unreachable, and a connection attempt per batch (up to the connect timeout
            # each, lienthong.db) would make each caller wait for all those queued before it.
            failed, running = self._waiting()
            log.error(  # noqa: TRY400
                "audit_write_failed", entries=len(batch) + len(failed), error=str(error)
            )
            for pending in (*batch, *failed):
                pending.future.set_exception(AuditUnavailableError(str(error)))
            return running
        for pending, result in zip(batch, results, strict=True):
            pending.future.set_result(result)
        return True

    def _waiting(self) -> tuple[list[_Pending], bool]:
        """Everything queued now, and False if that included the request to stop."""
        waiting: list[_Pending] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return waiting, True
            if item is None:
                return waiting, False
            waiting.append(item)

    def _commit(self, batch: Sequence[_Pending]) -> list[Appended]:
        now = dt.datetime.now(dt.UTC)
        with self._engine.begin() as connection:
            # One statement locks the head row and reserves the batch's leaf indices.
            grown = connection.execute(
                update(head_table)
                .where(head_table.c.id == 1)
                .values(tree_size=head_table.c.tree_size + len(batch))
                .returning(head_table.c.tree_size)
            ).scalar_one()
            size = grown - len(batch)
            frontier = self._frontier
            if frontier is None or frontier.size != size:
                # First batch, or another process appended since: rebuild the right edge.
                frontier = merkle.Frontier(size, fetch_nodes(connection, merkle.root_nodes(size)))
            entries: list[dict[str, object]] = []
            nodes: list[dict[str, object]] = []
            results: list[Appended] = []
            for pending in batch:
                leaf = merkle.leaf_hash(pending.data)
                index = frontier.size
                nodes.extend(
                    {"level": level, "idx": idx, "hash": value}
                    for (level, idx), value in frontier.append(leaf)
                )
                entry = pending.entry
                entries.append(
                    {
                        "leaf_index": index,
                        "entry": pending.data,
                        "kind": entry.kind,
                        "exchange_id": entry.exchange_id,
                        "caller": entry.caller,
                        "method": entry.method,
                        "status": entry.status,
                        "request_id": entry.request_id,
                        "recorded_at": now,
                    }
                )
                results.append(Appended(index, leaf))
            connection.execute(insert(entry_table), entries)
            connection.execute(insert(node_table), nodes)
        self._frontier = frontier
        return results

    # Checkpoints --------------------------------------------------------------------------

    def _checkpoint_loop(self) -> None:
        while not self._stop.wait(self._checkpoint_interval):
            try:
                self.checkpoint()
            except Exception as error:  # noqa: BLE001 - keep signing once the database is back
                log.error("audit_checkpoint_failed", error=str(error))  # noqa: TRY400

    def checkpoint(self) -> SignedCheckpoint | None:
        """Sign and store a checkpoint of the current tree if it grew; return the latest."""
        with self._engine.begin() as connection:
            size = connection.execute(select(head_table.c.tree_size)).scalar_one()
            latest = _latest(connection)
            if size == 0 or (latest is not None and latest.tree_size >= size):
                return latest
            root = merkle.root_hash(size, fetch_nodes(connection, merkle.root_nodes(size)))
            note = self._signer.sign(checkpoint_text(Checkpoint(self.origin, size, root)))
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(checkpoint_table).values(
                            tree_size=size,
                            root_hash=root,
                            note=note,
                            signed_at=dt.datetime.now(dt.UTC),
                        )
                    )
            except IntegrityError:
                pass  # another gateway process signed this size first
            return SignedCheckpoint(size, root, note)

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The latest signed checkpoint, or None before the first entry."""
        with self._engine.connect() as connection:
            return _latest(connection)

    # Proofs -------------------------------------------------------------------------------

    def inclusion_proof(self, leaf_index: int, tree_size: int) -> tuple[bytes, list[bytes]]:
        """The leaf hash and its RFC 9162 inclusion proof in the tree of ``tree_size``."""
        ids = [*merkle.inclusion_nodes(leaf_index, tree_size), (0, leaf_index)]
        with self._engine.connect() as connection:
            nodes = fetch_nodes(connection, ids)
        return nodes[(0, leaf_index)], merkle.inclusion_proof(leaf_index, tree_size, nodes)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """The RFC 9162 consistency proof between two tree sizes."""
        with self._engine.connect() as connection:
            nodes = fetch_nodes(connection, merkle.consistency_nodes(first, second))
        return merkle.consistency_proof(first, second, nodes)

    def completions(self, query: CompletionQuery) -> list[tuple[int, AuditEntry]]:
        """Completion entries matching ``query``, in leaf order, after ``query.after_leaf``."""
        table = entry_table.c
        conditions = [table.kind == "completion", table.leaf_index > query.after_leaf]
        for column, value in (
            (table.caller, query.caller),
            (table.method, query.method),
            (table.request_id, query.request_id),
            (table.status, query.status),
        ):
            if value:
                conditions.append(column == value)
        if query.recorded_from is not None:
            conditions.append(table.recorded_at >= query.recorded_from)
        if query.recorded_to is not None:
            conditions.append(table.recorded_at < query.recorded_to)
        order = table.leaf_index.desc() if query.newest_first else table.leaf_index
        statement = (
            select(table.leaf_index, table.entry)
            .where(*conditions)
            .order_by(order)
            .limit(query.limit)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(statement).all()
        return [(int(row.leaf_index), AuditEntry.decode(bytes(row.entry))) for row in rows]

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """The stored bytes of entries [start, end), in leaf order."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(entry_table.c.leaf_index, entry_table.c.entry)
                .where(entry_table.c.leaf_index >= start, entry_table.c.leaf_index < end)
                .order_by(entry_table.c.leaf_index)
            ).all()
        return [(int(row.leaf_index), bytes(row.entry)) for row in rows]

    def tree_size(self) -> int:
        """The number of entries durably appended."""
        with self._engine.connect() as connection:
            return int(connection.execute(select(head_table.c.tree_size)).scalar_one())


def _check_fits(entry: AuditEntry) -> None:
    """Refuse an entry whose text overflows its column, before it is queued.

    In a batch it would fail the commit of every entry beside it (PostgreSQL enforces varchar
    lengths); the gateway bounds caller text first (entry.bounded), so this is a last guard.
    """
    for name in ("caller", "method", "request_id"):
        value = getattr(entry, name)
        column_type = entry_table.c[name].type
        width = column_type.length if isinstance(column_type, String) else None
        if value is not None and width is not None and len(value) > width:
            raise AuditUnavailableError(f"audit entry {name} is longer than {width} characters")


def _latest(connection: Connection) -> SignedCheckpoint | None:
    row = connection.execute(
        select(checkpoint_table).order_by(checkpoint_table.c.tree_size.desc()).limit(1)
    ).first()
    if row is None:
        return None
    return SignedCheckpoint(int(row.tree_size), bytes(row.root_hash), str(row.note))
