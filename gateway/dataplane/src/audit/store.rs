//! The audit log's entries as RFC 9162 Merkle tree leaves, group-committed.
//!
//! Callers append from many threads (or tasks) and each waits until its entry is durable. One
//! writer thread takes every entry waiting, reserves consecutive leaf indices by growing
//! `audit_head.tree_size`, and writes the entries and the tree nodes they complete in one
//! transaction with one sync; only then does it answer each waiter. Throughput comes from
//! batching, never from weaker durability (`SQLite` runs WAL with `synchronous=FULL`, `PostgreSQL`
//! commits synchronously).
//!
//! The head row is locked by each batch's first statement, so several gateway processes — Rust
//! or Python — sharing one database append to one tree: a writer whose tree size is stale
//! rebuilds the right edge from the stored nodes before appending.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tokio::sync::oneshot;

use crate::entry::AuditEntry;
use crate::merkle::{self, Frontier, Hash, MerkleError, NodeId, Nodes};
use crate::note::{Checkpoint, NoteError, NoteSigner};

/// The widths of `audit_entry`'s text columns, in characters (store.py's `String(n)`).
///
/// Python checks caller, method and `request_id` (`_check_fits`); exchange id and status are
/// checked too, since `PostgreSQL` would refuse them as well, with the whole batch.
pub const COLUMN_WIDTHS: [(&str, usize); 5] = [
    ("exchange_id", 36),
    ("caller", 2048),
    ("method", 512),
    ("status", 32),
    ("request_id", 256),
];

/// Where an entry landed in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its index among the leaves.
    pub leaf_index: u64,
    /// `SHA-256(0x00 || entry bytes)`.
    pub leaf_hash: Hash,
}

/// A checkpoint as stored: the tree head and its signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The number of leaves signed.
    pub tree_size: u64,
    /// The root of the tree of that size.
    pub root_hash: Hash,
    /// The signed note (c2sp.org/tlog-checkpoint).
    pub note: String,
}

/// Why the log could not do what was asked; an exchange must not proceed on an append error.
///
/// Cloneable, so that one failed commit can be told to every waiter of its batch.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuditError {
    /// The store was closed.
    #[error("the audit log is closed")]
    Closed,
    /// A text column's value is longer than the column holds; refused before queueing.
    #[error("audit entry {column} is longer than {width} characters")]
    TooLong {
        /// The column.
        column: &'static str,
        /// Its width in characters.
        width: usize,
    },
    /// No answer from the writer within the append timeout (the entry may still land).
    #[error("audit entry not recorded within {0:?}")]
    Timeout(Duration),
    /// The database failed (the text of its error, without the statement's parameters).
    #[error("audit entry not recorded: {0}")]
    Database(String),
    /// What the database holds is not a tree the log wrote (a node missing, a bad hash).
    #[error("the stored audit tree is inconsistent: {0}")]
    Corrupt(String),
    /// A proof or root that cannot be computed from the arguments.
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// A checkpoint that cannot be signed.
    #[error(transparent)]
    Note(#[from] NoteError),
}

impl AuditError {
    pub(crate) fn database(error: &impl std::fmt::Display) -> Self {
        Self::Database(error.to_string())
    }
}

/// How the store batches, waits and signs.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The most entries committed in one transaction (Python's `max_batch`).
    pub max_batch: usize,
    /// How long a commit waits for more entries after one that held several, as
    /// `PostgreSQL`'s `commit_delay`: under load, one sync then serves more callers; alone,
    /// an entry is committed at once. Zero: never wait.
    pub commit_delay: Duration,
    /// How long a blocking [`AuditStore::append`] waits for its commit.
    pub append_timeout: Duration,
    /// How often a background thread signs a checkpoint if the tree grew; `None`: never.
    pub checkpoint_interval: Option<Duration>,
}

impl Default for StoreOptions {
    /// Python's defaults: 512 entries, 10 s, a checkpoint every 0.5 s; no commit delay.
    fn default() -> Self {
        Self {
            max_batch: 512,
            commit_delay: Duration::ZERO,
            append_timeout: Duration::from_secs(10),
            checkpoint_interval: Some(Duration::from_millis(500)),
        }
    }
}

/// One entry's row of `audit_entry`, as a batch writes it.
#[derive(Debug)]
pub struct EntryRow<'a> {
    /// Its leaf index.
    pub leaf_index: u64,
    /// The canonical bytes.
    pub data: &'a [u8],
    /// The entry, for the indexed columns.
    pub entry: &'a AuditEntry,
}

/// What a transaction can do; each database implements it over its own connection.
pub trait Transaction {
    /// Grow `audit_head.tree_size` by `count`, locking the head row; return the new size.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    fn reserve(&mut self, count: u64) -> Result<u64, AuditError>;

    /// `audit_head.tree_size`.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    fn tree_size(&mut self) -> Result<u64, AuditError>;

    /// The stored hashes of those of `ids` that are stored, in one query.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`], or [`AuditError::Corrupt`] for a hash not 32 bytes long.
    fn fetch_nodes(&mut self, ids: &[NodeId]) -> Result<Nodes, AuditError>;

    /// Insert entries, all recorded at `recorded_at`.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    fn insert_entries(
        &mut self,
        rows: &[EntryRow<'_>],
        recorded_at: SystemTime,
    ) -> Result<(), AuditError>;

    /// Insert completed nodes.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    fn insert_nodes(&mut self, nodes: &[(NodeId, Hash)]) -> Result<(), AuditError>;

    /// The checkpoint of the largest size stored.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`] or [`AuditError::Corrupt`].
    fn latest_checkpoint(&mut self) -> Result<Option<SignedCheckpoint>, AuditError>;

    /// Store a checkpoint unless one of its size is stored (another process signed it first).
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    fn insert_checkpoint(
        &mut self,
        checkpoint: &SignedCheckpoint,
        signed_at: SystemTime,
    ) -> Result<(), AuditError>;

    /// The stored bytes of entries `[start, end)`, in leaf order.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    fn entries(&mut self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, AuditError>;

    /// The stored bytes of the completions `query` asks for, in leaf order.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    fn completions(&mut self, query: &CompletionQuery) -> Result<Vec<(u64, Vec<u8>)>, AuditError>;
}

/// Which completion entries to list: one caller's, the other filters when given, after a
/// leaf, at most `limit` of them (as `gateway/audit/store.py`'s `CompletionQuery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionQuery {
    /// The caller whose exchanges they are.
    pub caller: String,
    /// Only this method's.
    pub method: Option<String>,
    /// Only this request id's.
    pub request_id: Option<String>,
    /// Only those recorded at or after.
    pub recorded_from: Option<SystemTime>,
    /// Only those recorded before.
    pub recorded_to: Option<SystemTime>,
    /// Only leaves after this one (`None`: from the first).
    pub after_leaf: Option<u64>,
    /// At most this many.
    pub limit: u32,
}

/// Whether a transaction writes: on `SQLite` a writing one takes the write lock at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: a snapshot, queueing behind no writer.
    Read,
    /// Writes: serialised with every other writer from its first statement.
    Write,
}

/// The work a transaction runs; committed when it returns `Ok`, rolled back otherwise.
pub type Work<'a> = dyn FnMut(&mut dyn Transaction) -> Result<(), AuditError> + 'a;

/// One connection to the log's database.
pub trait Database: Send {
    /// Create the audit tables and the head row if they do not exist.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    fn create_schema(&mut self) -> Result<(), AuditError>;

    /// Run `work` in one transaction.
    ///
    /// # Errors
    ///
    /// What `work` returns, or [`AuditError::Database`] if the transaction fails.
    fn transaction(&mut self, access: Access, work: &mut Work<'_>) -> Result<(), AuditError>;
}

/// Opens connections: the writer, the checkpointer and readers each have their own.
pub trait Connector: Send + Sync {
    /// A new connection, configured.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    fn connect(&self) -> Result<Box<dyn Database>, AuditError>;
}

/// A connection opened on first use and dropped after an error, so that a database that went
/// away and came back is reached again by the next call, without a restart.
struct Link {
    connector: Arc<dyn Connector>,
    database: Option<Box<dyn Database>>,
}

impl Link {
    fn new(connector: Arc<dyn Connector>) -> Self {
        Self {
            connector,
            database: None,
        }
    }

    fn run<R>(
        &mut self,
        access: Access,
        work: impl FnOnce(&mut dyn Transaction) -> Result<R, AuditError>,
    ) -> Result<R, AuditError> {
        let database = match &mut self.database {
            Some(database) => database,
            empty => empty.insert(self.connector.connect()?),
        };
        let mut work = Some(work);
        let mut result = None;
        let outcome = database.transaction(access, &mut |transaction| {
            let work = work
                .take()
                .ok_or_else(|| AuditError::Database("a transaction ran twice".into()))?;
            result = Some(work(transaction)?);
            Ok(())
        });
        match (outcome, result) {
            (Ok(()), Some(result)) => Ok(result),
            (Ok(()), None) => Err(AuditError::Database("a transaction did not run".into())),
            (Err(error), _) => {
                if matches!(error, AuditError::Database(_)) {
                    self.database = None;
                }
                Err(error)
            }
        }
    }
}

type Reply = Result<Appended, AuditError>;

enum Waiter {
    Blocking(SyncSender<Reply>),
    Async(oneshot::Sender<Reply>),
}

impl Waiter {
    fn answer(self, reply: Reply) {
        // A waiter that gave up (timed out, dropped its future) has nobody left to tell.
        match self {
            Waiter::Blocking(sender) => drop(sender.try_send(reply)),
            Waiter::Async(sender) => drop(sender.send(reply)),
        }
    }
}

struct Pending {
    entry: AuditEntry,
    data: Vec<u8>,
    waiter: Waiter,
}

/// An append queued by [`AuditStore::submit`]: a future of its durable place in the tree.
#[derive(Debug)]
pub struct PendingAppend(oneshot::Receiver<Reply>);

impl Future for PendingAppend {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Reply> {
        Pin::new(&mut self.0)
            .poll(context)
            .map(|reply| reply.unwrap_or(Err(AuditError::Closed)))
    }
}

struct Shared {
    signer: NoteSigner,
    reader: Mutex<Link>,
    /// Held around every writing transaction of this process (a batch, a checkpoint), so
    /// that on `SQLite` they queue here rather than in `SQLite`'s busy handler, which sleeps
    /// (1, 2, 5, 10 ms and more) before it looks again: each call waits on its commit.
    writing: Mutex<()>,
}

impl Shared {
    fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Shared {
    fn reader(&self) -> MutexGuard<'_, Link> {
        // A panic while holding the link leaves nothing half-written: the transaction rolled
        // back with the panic, and the link is reusable.
        self.reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        let mut reader = self.reader();
        let _writing = self.writing();
        reader.run(Access::Write, |transaction| {
            let size = transaction.tree_size()?;
            let latest = transaction.latest_checkpoint()?;
            if size == 0 || latest.as_ref().is_some_and(|l| l.tree_size >= size) {
                return Ok(latest);
            }
            let nodes = transaction.fetch_nodes(&merkle::root_nodes(size))?;
            let root_hash = merkle::root_hash(size, &nodes).map_err(corrupt)?;
            let text = Checkpoint::new(self.signer.name(), size, root_hash)?.text();
            let signed = SignedCheckpoint {
                tree_size: size,
                root_hash,
                note: self.signer.sign(&text)?,
            };
            transaction.insert_checkpoint(&signed, SystemTime::now())?;
            Ok(Some(signed))
        })
    }
}

/// The append-only, verifiable log of every exchange.
///
/// Every method but [`AuditStore::submit`] blocks on the database; from async code call them
/// in `spawn_blocking` (the `postgres` client runs a runtime of its own, which cannot start
/// inside another). Dropping the store writes what is queued and stops its threads.
pub struct AuditStore {
    shared: Arc<Shared>,
    options: StoreOptions,
    queue: Mutex<Option<Sender<Pending>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    // Dropping the sender stops the checkpointer at once.
    checkpointer: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuditStore")
            .field("origin", &self.origin())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl AuditStore {
    /// Log into the database `connector` reaches, creating the schema if needed; sign
    /// checkpoints as `signer`, whose name is the log's origin.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`] if the database cannot be reached or the schema created.
    pub fn open(
        connector: Arc<dyn Connector>,
        signer: NoteSigner,
        options: StoreOptions,
    ) -> Result<Self, AuditError> {
        let mut database = connector.connect()?;
        database.create_schema()?;
        let shared = Arc::new(Shared {
            signer,
            reader: Mutex::new(Link {
                connector: Arc::clone(&connector),
                database: Some(database),
            }),
            writing: Mutex::new(()),
        });
        let (sender, receiver) = mpsc::channel();
        let batching = Batching {
            max: options.max_batch.max(1),
            delay: options.commit_delay,
        };
        let link = Link::new(connector);
        let writing = Arc::clone(&shared);
        let writer = thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(link, &receiver, &batching, &writing))
            .map_err(|error| AuditError::database(&error))?;
        let checkpointer = match options.checkpoint_interval {
            None => None,
            Some(interval) => {
                let (stop, stopped) = mpsc::channel::<()>();
                let shared = Arc::clone(&shared);
                let handle = thread::Builder::new()
                    .name("audit-checkpointer".into())
                    .spawn(move || {
                        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                            // A failure is retried at the next tick, once the database is back.
                            drop(shared.checkpoint());
                        }
                    })
                    .map_err(|error| AuditError::database(&error))?;
                Some((stop, handle))
            }
        };
        Ok(Self {
            shared,
            options,
            queue: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(checkpointer),
        })
    }

    /// The log's origin: the signer's name.
    #[must_use]
    pub fn origin(&self) -> &str {
        self.shared.signer.name()
    }

    /// Append `entry` and return once it is durable.
    ///
    /// # Errors
    ///
    /// [`AuditError::TooLong`] for an entry whose text overflows its column (refused alone),
    /// [`AuditError::Closed`], [`AuditError::Timeout`], or the batch's commit error.
    pub fn append(&self, entry: &AuditEntry) -> Result<Appended, AuditError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.enqueue(entry, Waiter::Blocking(sender))?;
        let timeout = self.options.append_timeout;
        match receiver.recv_timeout(timeout) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => Err(AuditError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(AuditError::Closed),
        }
    }

    /// Queue `entry` without blocking; the future resolves once it is durable (or failed).
    ///
    /// The caller bounds the wait (`tokio::time::timeout`); dropping the future does not
    /// withdraw the entry.
    ///
    /// # Errors
    ///
    /// [`AuditError::TooLong`] or [`AuditError::Closed`], at once.
    pub fn submit(&self, entry: &AuditEntry) -> Result<PendingAppend, AuditError> {
        let (sender, receiver) = oneshot::channel();
        self.enqueue(entry, Waiter::Async(sender))?;
        Ok(PendingAppend(receiver))
    }

    fn enqueue(&self, entry: &AuditEntry, waiter: Waiter) -> Result<(), AuditError> {
        check_fits(entry)?;
        let pending = Pending {
            entry: entry.clone(),
            data: entry.encode(),
            waiter,
        };
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        queue
            .as_ref()
            .ok_or(AuditError::Closed)?
            .send(pending)
            .map_err(|_| AuditError::Closed)
    }

    /// Sign and store a checkpoint of the current tree if it grew; return the latest.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`], or [`AuditError::Corrupt`] if a root node is missing.
    pub fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        self.shared.checkpoint()
    }

    /// The latest signed checkpoint, or `None` before the first.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        self.read(|transaction| transaction.latest_checkpoint())
    }

    /// The leaf hash and its RFC 9162 inclusion proof in the tree of `tree_size`.
    ///
    /// # Errors
    ///
    /// [`AuditError::Merkle`] for a leaf outside the tree or a node not (yet) stored.
    pub fn inclusion_proof(
        &self,
        leaf_index: u64,
        tree_size: u64,
    ) -> Result<(Hash, Vec<Hash>), AuditError> {
        let mut ids = merkle::inclusion_nodes(leaf_index, tree_size)?;
        ids.push((0, leaf_index));
        let nodes = self.read(|transaction| transaction.fetch_nodes(&ids))?;
        let leaf = *nodes
            .get(&(0, leaf_index))
            .ok_or(MerkleError::MissingNode((0, leaf_index)))?;
        Ok((
            leaf,
            merkle::inclusion_proof(leaf_index, tree_size, &nodes)?,
        ))
    }

    /// The RFC 9162 consistency proof between two tree sizes.
    ///
    /// # Errors
    ///
    /// [`AuditError::Merkle`] for sizes without a proof or a node not (yet) stored.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, AuditError> {
        let ids = merkle::consistency_nodes(first, second)?;
        let nodes = self.read(|transaction| transaction.fetch_nodes(&ids))?;
        Ok(merkle::consistency_proof(first, second, &nodes)?)
    }

    /// The root of the tree of `tree_size` (at most the current size), from stored nodes.
    ///
    /// # Errors
    ///
    /// [`AuditError::Merkle`] for a size beyond what is stored.
    pub fn root_hash(&self, tree_size: u64) -> Result<Hash, AuditError> {
        let ids = merkle::root_nodes(tree_size);
        let nodes = self.read(|transaction| transaction.fetch_nodes(&ids))?;
        Ok(merkle::root_hash(tree_size, &nodes)?)
    }

    /// The stored bytes of entries `[start, end)`, in leaf order.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        self.read(|transaction| transaction.entries(start, end))
    }

    /// The completions `query` asks for, in leaf order, as stored.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    pub fn completions(&self, query: &CompletionQuery) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        self.read(|transaction| transaction.completions(query))
    }

    /// The number of entries durably appended (by every process sharing the database).
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    pub fn tree_size(&self) -> Result<u64, AuditError> {
        self.read(|transaction| transaction.tree_size())
    }

    fn read<R>(
        &self,
        work: impl FnOnce(&mut dyn Transaction) -> Result<R, AuditError>,
    ) -> Result<R, AuditError> {
        self.shared.reader().run(Access::Read, work)
    }

    /// Write what is queued, stop, and sign a last checkpoint (as Python's `close`).
    ///
    /// Appends after this fail with [`AuditError::Closed`]; a second call only signs.
    ///
    /// # Errors
    ///
    /// The last checkpoint's error.
    pub fn close(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        self.stop();
        self.checkpoint()
    }

    fn stop(&self) {
        // Dropping the only sender lets the writer drain the queue and then end.
        drop(
            self.queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            drop(writer.join());
        }
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((stop, handle)) = checkpointer {
            drop(stop);
            drop(handle.join());
        }
    }
}

impl Drop for AuditStore {
    /// Write what is queued and stop the threads (no last checkpoint: see [`Self::close`]).
    fn drop(&mut self) {
        self.stop();
    }
}

/// Refuse an entry whose text overflows its column, before it is queued: in a batch it would
/// fail the commit of every entry beside it (`PostgreSQL` enforces varchar lengths).
fn check_fits(entry: &AuditEntry) -> Result<(), AuditError> {
    for (column, width) in COLUMN_WIDTHS {
        let value = match column {
            "exchange_id" => Some(entry.exchange_id.as_str()),
            "caller" => entry.caller.as_deref(),
            "method" => Some(entry.method.as_str()),
            "status" => entry.status.as_deref(),
            _ => entry.request_id.as_deref(),
        };
        // Characters, as Python's len and PostgreSQL's varchar count them; not bytes.
        if value.is_some_and(|text| text.chars().count() > width) {
            return Err(AuditError::TooLong { column, width });
        }
    }
    Ok(())
}

/// How the writer groups entries into commits.
struct Batching {
    max: usize,
    delay: Duration,
}

impl Batching {
    /// `first` and what else is queued, up to `max`; if `busy` (the last commit held several
    /// entries), also what arrives within `delay`.
    fn gather(&self, queue: &Receiver<Pending>, first: Pending, busy: bool) -> Vec<Pending> {
        let mut batch = vec![first];
        let until = (busy && !self.delay.is_zero()).then(|| Instant::now() + self.delay);
        while batch.len() < self.max {
            let next = match until {
                None => queue.try_recv().ok(),
                Some(until) => match until.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => queue.recv_timeout(left).ok(),
                    _ => queue.try_recv().ok(),
                },
            };
            match next {
                Some(pending) => batch.push(pending),
                None => break,
            }
        }
        batch
    }
}

fn write_loop(mut link: Link, queue: &Receiver<Pending>, batching: &Batching, shared: &Shared) {
    let mut frontier: Option<Frontier> = None;
    let mut busy = false;
    // Ends once every sender is gone and the queue is drained.
    while let Ok(first) = queue.recv() {
        let batch = batching.gather(queue, first, busy);
        busy = batch.len() > 1;
        let committed = {
            let _writing = shared.writing();
            commit(&mut link, frontier.take(), &batch)
        };
        match committed {
            Ok((results, grown)) => {
                frontier = Some(grown);
                for (pending, result) in batch.into_iter().zip(results) {
                    pending.waiter.answer(Ok(result));
                }
            }
            Err(error) => {
                // The frontier is dropped: the next batch reloads the right edge from what
                // was committed. What queued while this batch failed fails with it: the
                // database was just found failing, and a new attempt per batch would make
                // each caller wait for all those queued before it.
                // Drained before anyone is answered: an entry queued after a waiter learned
                // of the failure (it may retry at once) belongs to the next attempt.
                let queued: Vec<Pending> = queue.try_iter().collect();
                for pending in batch.into_iter().chain(queued) {
                    pending.waiter.answer(Err(error.clone()));
                }
            }
        }
    }
}

/// Commit `batch` in one transaction; return each entry's place and the grown frontier.
fn commit(
    link: &mut Link,
    frontier: Option<Frontier>,
    batch: &[Pending],
) -> Result<(Vec<Appended>, Frontier), AuditError> {
    let now = SystemTime::now();
    link.run(Access::Write, |transaction| {
        let count = u64::try_from(batch.len()).map_err(|e| AuditError::database(&e))?;
        // One statement locks the head row and reserves the batch's leaf indices.
        let grown = transaction.reserve(count)?;
        let size = grown
            .checked_sub(count)
            .ok_or_else(|| AuditError::Corrupt(format!("tree size {grown} after growing")))?;
        let mut frontier = match frontier {
            Some(frontier) if frontier.size() == size => frontier,
            // First batch, or another process appended since: rebuild the right edge.
            _ => {
                let nodes = transaction.fetch_nodes(&merkle::root_nodes(size))?;
                Frontier::from_nodes(size, &nodes).map_err(corrupt)?
            }
        };
        let mut rows = Vec::with_capacity(batch.len());
        let mut nodes = Vec::with_capacity(batch.len() * 2);
        let mut results = Vec::with_capacity(batch.len());
        for pending in batch {
            let leaf_hash = merkle::leaf_hash(&pending.data);
            let leaf_index = frontier.size();
            nodes.extend(frontier.append(leaf_hash)?);
            rows.push(EntryRow {
                leaf_index,
                data: &pending.data,
                entry: &pending.entry,
            });
            results.push(Appended {
                leaf_index,
                leaf_hash,
            });
        }
        transaction.insert_entries(&rows, now)?;
        transaction.insert_nodes(&nodes)?;
        Ok((results, frontier))
    })
}

/// A node the stored tree must have and does not: the database was altered or truncated.
#[allow(clippy::needless_pass_by_value)] // map_err hands the error over by value
fn corrupt(error: MerkleError) -> AuditError {
    AuditError::Corrupt(error.to_string())
}

/// The stored form of a hash, refused unless 32 bytes.
pub(crate) fn to_hash(value: &[u8]) -> Result<Hash, AuditError> {
    value
        .try_into()
        .map_err(|_| AuditError::Corrupt(format!("a stored hash of {} bytes", value.len())))
}

/// A size or index as the `BIGINT` columns hold it.
pub(crate) fn to_i64(value: u64) -> Result<i64, AuditError> {
    i64::try_from(value).map_err(|_| AuditError::Corrupt(format!("{value} exceeds BIGINT")))
}

/// A `BIGINT` column's value as a size or index.
pub(crate) fn to_u64(value: i64) -> Result<u64, AuditError> {
    u64::try_from(value).map_err(|_| AuditError::Corrupt(format!("a stored negative {value}")))
}
