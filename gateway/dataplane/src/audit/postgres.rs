//! The audit store on `PostgreSQL`, as the Python store uses it through `SQLAlchemy`.
//!
//! Transactions run at `PostgreSQL`'s default READ COMMITTED: a batch's first statement locks the
//! head row, and every statement after it sees what the previous holder committed, so stale
//! frontiers are rebuilt from current nodes. Commits are synchronous (the server's default).
//! The schema is created under the advisory lock `lienthong/db.py`'s `schema_transaction`
//! takes, so Rust and Python processes starting together create it one at a time. Batches go
//! to the server as arrays (`UNNEST`): one round trip per table, not one per row.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use postgres::{Client, Config, NoTls};

use super::store::{
    to_hash, to_i64, to_u64, Access, AuditError, CompletionQuery, Connector, Database, EntryRow,
    SignedCheckpoint, Transaction, Work,
};
use crate::merkle::{Hash, NodeId, Nodes};

/// db.py's `CONNECT_TIMEOUT`: how long to wait for a server to answer a new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// db.py's `_SCHEMA_LOCK` ("lien"): serialises schema changes of every lienthong service.
const SCHEMA_LOCK: i64 = 0x6C69_656E;

/// The tables store.py's `metadata.create_all` creates on `PostgreSQL`, in `SQLAlchemy`'s DDL.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_checkpoint (
	tree_size BIGINT NOT NULL,
	root_hash BYTEA NOT NULL,
	note TEXT NOT NULL,
	signed_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (tree_size)
);
CREATE TABLE IF NOT EXISTS audit_entry (
	leaf_index BIGINT NOT NULL,
	entry BYTEA NOT NULL,
	kind VARCHAR(16) NOT NULL,
	exchange_id VARCHAR(36) NOT NULL,
	caller VARCHAR(2048),
	method VARCHAR(512) NOT NULL,
	status VARCHAR(32),
	request_id VARCHAR(256),
	recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (leaf_index)
);
CREATE INDEX IF NOT EXISTS audit_entry_caller ON audit_entry (caller, leaf_index);
CREATE INDEX IF NOT EXISTS audit_entry_exchange ON audit_entry (exchange_id);
CREATE INDEX IF NOT EXISTS audit_entry_method ON audit_entry (method, leaf_index);
CREATE INDEX IF NOT EXISTS audit_entry_request ON audit_entry (request_id);
CREATE INDEX IF NOT EXISTS audit_entry_time ON audit_entry (recorded_at);
CREATE TABLE IF NOT EXISTS audit_head (
	id SMALLSERIAL NOT NULL,
	tree_size BIGINT NOT NULL,
	PRIMARY KEY (id)
);
CREATE TABLE IF NOT EXISTS audit_node (
	level SMALLINT NOT NULL,
	idx BIGINT NOT NULL,
	hash BYTEA NOT NULL,
	PRIMARY KEY (level, idx)
);
INSERT INTO audit_head (id, tree_size) SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM audit_head);
";

/// Opens connections to one `PostgreSQL` database, without TLS (loopback or the service's own
/// network, as the Python gateway's `postgresql+psycopg://` URLs).
#[derive(Debug, Clone)]
pub struct PostgresConnector {
    config: Config,
    /// An attempt that outlived its wait, still under way: the next connection waits for it
    /// rather than starting another, so that a server that never answers costs one thread.
    pending: Arc<Mutex<Option<Attempt>>>,
}

/// A connection attempt under way on its own thread, and when it began.
type Attempt = (Instant, Receiver<Result<Client, postgres::Error>>);

impl PostgresConnector {
    /// Connections as `url` says: `postgresql://user@host:port/database` or a libpq
    /// key=value string; a `SQLAlchemy` URL's driver (`postgresql+psycopg://`) is ignored, so the
    /// gateway's configured URL works as it is. Without a `connect_timeout`, 3 s.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`] for a URL that cannot be read.
    pub fn new(url: &str) -> Result<Self, AuditError> {
        let url = match url.split_once("://") {
            Some((scheme, rest)) if scheme.starts_with("postgresql+") => {
                format!("postgresql://{rest}")
            }
            _ => url.to_owned(),
        };
        let mut config: Config = url.parse().map_err(|e| AuditError::database(&e))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(Self {
            config,
            pending: Arc::default(),
        })
    }

    /// A connection of its own (the store's are private to it), within the connect timeout.
    ///
    /// The driver's `connect_timeout` bounds only the socket's connect: a server (or a proxy)
    /// that accepts the connection and never answers the startup would hold the caller for
    /// good. The attempt runs on a thread of its own and is waited for that long at most.
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`], also when no connection came within the timeout.
    pub fn open(&self) -> Result<Client, AuditError> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let wait = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT);
        // An earlier attempt still under way is waited for; one that ended meanwhile gives
        // its connection; one that failed (during the outage it outlived), or that has hung
        // for two timeouts, is replaced by a new one (a hung thread ends with its socket).
        let earlier = pending
            .take()
            .and_then(|(started, attempt)| match attempt.try_recv() {
                Ok(Ok(client)) => Some(Ok(client)),
                Err(TryRecvError::Empty) if started.elapsed() < 2 * wait => {
                    Some(Err((started, attempt)))
                }
                Ok(Err(_)) | Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
            });
        let (started, attempt) = match earlier {
            Some(Ok(client)) => return Ok(client),
            Some(Err(attempt)) => attempt,
            None => {
                let (sender, attempt) = mpsc::channel();
                let config = self.config.clone();
                thread::Builder::new()
                    .name("audit-connect".into())
                    .spawn(move || drop(sender.send(config.connect(NoTls))))
                    .map_err(|e| AuditError::database(&e))?;
                (Instant::now(), attempt)
            }
        };
        match attempt.recv_timeout(wait) {
            Ok(connected) => connected.map_err(|e| failed(&e)),
            Err(RecvTimeoutError::Timeout) => {
                *pending = Some((started, attempt));
                Err(AuditError::Database(format!(
                    "no PostgreSQL connection within {wait:?}"
                )))
            }
            Err(RecvTimeoutError::Disconnected) => Err(AuditError::Database(
                "the connection attempt ended without an answer".into(),
            )),
        }
    }
}

impl Connector for PostgresConnector {
    fn connect(&self) -> Result<Box<dyn Database>, AuditError> {
        Ok(Box::new(PostgresDatabase(self.open()?)))
    }
}

struct PostgresDatabase(Client);

fn failed(error: &postgres::Error) -> AuditError {
    // The driver's own Display is only "db error": the server's message says what failed.
    match error.as_db_error() {
        Some(server) => {
            AuditError::Database(format!("{}: {}", server.code().code(), server.message()))
        }
        None => AuditError::database(error),
    }
}

impl Database for PostgresDatabase {
    fn create_schema(&mut self) -> Result<(), AuditError> {
        let mut transaction = self.0.transaction().map_err(|e| failed(&e))?;
        // Released at commit.
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .map_err(|e| failed(&e))?;
        transaction.batch_execute(SCHEMA).map_err(|e| failed(&e))?;
        transaction.commit().map_err(|e| failed(&e))
    }

    fn transaction(&mut self, access: Access, work: &mut Work<'_>) -> Result<(), AuditError> {
        let mut transaction = self
            .0
            .build_transaction()
            .read_only(access == Access::Read)
            .start()
            .map_err(|e| failed(&e))?;
        // Rolled back when dropped, if work failed.
        work(&mut PostgresTransaction(&mut transaction))?;
        transaction.commit().map_err(|e| failed(&e))
    }
}

struct PostgresTransaction<'a, 'b>(&'a mut postgres::Transaction<'b>);

impl Transaction for PostgresTransaction<'_, '_> {
    fn reserve(&mut self, count: u64) -> Result<u64, AuditError> {
        let row = self
            .0
            .query_one(
                "UPDATE audit_head SET tree_size = tree_size + $1 WHERE id = 1 \
                 RETURNING tree_size",
                &[&to_i64(count)?],
            )
            .map_err(|e| failed(&e))?;
        to_u64(row.get(0))
    }

    fn tree_size(&mut self) -> Result<u64, AuditError> {
        let row = self
            .0
            .query_one("SELECT tree_size FROM audit_head WHERE id = 1", &[])
            .map_err(|e| failed(&e))?;
        to_u64(row.get(0))
    }

    fn fetch_nodes(&mut self, ids: &[NodeId]) -> Result<Nodes, AuditError> {
        if ids.is_empty() {
            return Ok(Nodes::new());
        }
        let mut levels = Vec::with_capacity(ids.len());
        let mut indices = Vec::with_capacity(ids.len());
        for &(level, index) in ids {
            levels.push(level_column(level)?);
            indices.push(to_i64(index)?);
        }
        // A join with the wanted ids, each found through the primary key.
        let rows = self
            .0
            .query(
                "SELECT n.level, n.idx, n.hash FROM audit_node n \
                 JOIN UNNEST($1::smallint[], $2::bigint[]) AS w(level, idx) \
                 ON n.level = w.level AND n.idx = w.idx",
                &[&levels, &indices],
            )
            .map_err(|e| failed(&e))?;
        let mut nodes = Nodes::new();
        for row in rows {
            let level: i16 = row.get(0);
            let level = u32::try_from(level)
                .map_err(|_| AuditError::Corrupt(format!("a node of level {level}")))?;
            nodes.insert((level, to_u64(row.get(1))?), to_hash(row.get(2))?);
        }
        Ok(nodes)
    }

    fn insert_entries(
        &mut self,
        rows: &[EntryRow<'_>],
        recorded_at: SystemTime,
    ) -> Result<(), AuditError> {
        let mut leaf_indices = Vec::with_capacity(rows.len());
        for row in rows {
            leaf_indices.push(to_i64(row.leaf_index)?);
        }
        let data: Vec<&[u8]> = rows.iter().map(|row| row.data).collect();
        let kinds: Vec<&str> = rows.iter().map(|row| row.entry.kind.as_str()).collect();
        let exchanges: Vec<&str> = rows.iter().map(|r| r.entry.exchange_id.as_str()).collect();
        let callers: Vec<Option<&str>> = rows.iter().map(|r| r.entry.caller.as_deref()).collect();
        let methods: Vec<&str> = rows.iter().map(|r| r.entry.method.as_str()).collect();
        let statuses: Vec<Option<&str>> = rows.iter().map(|r| r.entry.status.as_deref()).collect();
        let requests: Vec<Option<&str>> =
            rows.iter().map(|r| r.entry.request_id.as_deref()).collect();
        self.0
            .execute(
                "INSERT INTO audit_entry (leaf_index, entry, kind, exchange_id, caller, method, \
                 status, request_id, recorded_at) \
                 SELECT leaf_index, entry, kind, exchange_id, caller, method, status, request_id, \
                 $9::timestamptz \
                 FROM UNNEST($1::bigint[], $2::bytea[], $3::varchar[], $4::varchar[], \
                 $5::varchar[], $6::varchar[], $7::varchar[], $8::varchar[]) \
                 AS t(leaf_index, entry, kind, exchange_id, caller, method, status, request_id)",
                &[
                    &leaf_indices,
                    &data,
                    &kinds,
                    &exchanges,
                    &callers,
                    &methods,
                    &statuses,
                    &requests,
                    &recorded_at,
                ],
            )
            .map(drop)
            .map_err(|e| failed(&e))
    }

    fn insert_nodes(&mut self, nodes: &[(NodeId, Hash)]) -> Result<(), AuditError> {
        let mut levels = Vec::with_capacity(nodes.len());
        let mut indices = Vec::with_capacity(nodes.len());
        let mut hashes: Vec<&[u8]> = Vec::with_capacity(nodes.len());
        for ((level, index), hash) in nodes {
            levels.push(level_column(*level)?);
            indices.push(to_i64(*index)?);
            hashes.push(hash);
        }
        self.0
            .execute(
                "INSERT INTO audit_node (level, idx, hash) \
                 SELECT * FROM UNNEST($1::smallint[], $2::bigint[], $3::bytea[])",
                &[&levels, &indices, &hashes],
            )
            .map(drop)
            .map_err(|e| failed(&e))
    }

    fn latest_checkpoint(&mut self) -> Result<Option<SignedCheckpoint>, AuditError> {
        let row = self
            .0
            .query_opt(
                "SELECT tree_size, root_hash, note FROM audit_checkpoint \
                 ORDER BY tree_size DESC LIMIT 1",
                &[],
            )
            .map_err(|e| failed(&e))?;
        row.map(|row| {
            Ok(SignedCheckpoint {
                tree_size: to_u64(row.get(0))?,
                root_hash: to_hash(row.get(1))?,
                note: row.get(2),
            })
        })
        .transpose()
    }

    fn insert_checkpoint(
        &mut self,
        checkpoint: &SignedCheckpoint,
        signed_at: SystemTime,
    ) -> Result<(), AuditError> {
        // DO NOTHING: another gateway process signed this size first (Python's IntegrityError).
        self.0
            .execute(
                "INSERT INTO audit_checkpoint (tree_size, root_hash, note, signed_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tree_size) DO NOTHING",
                &[
                    &to_i64(checkpoint.tree_size)?,
                    &&checkpoint.root_hash[..],
                    &checkpoint.note,
                    &signed_at,
                ],
            )
            .map(drop)
            .map_err(|e| failed(&e))
    }

    fn entries(&mut self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        let rows = self
            .0
            .query(
                "SELECT leaf_index, entry FROM audit_entry \
                 WHERE leaf_index >= $1 AND leaf_index < $2 ORDER BY leaf_index",
                &[&to_i64(start)?, &to_i64(end)?],
            )
            .map_err(|e| failed(&e))?;
        rows.into_iter()
            .map(|row| Ok((to_u64(row.get(0))?, row.get(1))))
            .collect()
    }

    fn completions(&mut self, query: &CompletionQuery) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        let after = match query.after_leaf {
            Some(leaf) => to_i64(leaf)?,
            None => -1,
        };
        let rows = self
            .0
            .query(
                "SELECT leaf_index, entry FROM audit_entry \
                 WHERE kind = 'completion' AND caller = $1 AND leaf_index > $2 \
                 AND ($3::text IS NULL OR method = $3) AND ($4::text IS NULL OR request_id = $4) \
                 AND ($5::timestamptz IS NULL OR recorded_at >= $5) \
                 AND ($6::timestamptz IS NULL OR recorded_at < $6) \
                 ORDER BY leaf_index LIMIT $7",
                &[
                    &query.caller,
                    &after,
                    &query.method,
                    &query.request_id,
                    &query.recorded_from,
                    &query.recorded_to,
                    &i64::from(query.limit),
                ],
            )
            .map_err(|e| failed(&e))?;
        rows.into_iter()
            .map(|row| Ok((to_u64(row.get(0))?, row.get(1))))
            .collect()
    }
}

/// A node level as the `SMALLINT` column holds it.
fn level_column(level: u32) -> Result<i16, AuditError> {
    i16::try_from(level).map_err(|_| AuditError::Corrupt(format!("a node of level {level}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_accepts_and_never_answers_costs_one_timeout_not_the_caller_for_good() {
        // Accepts connections (the backlog does) and never says a word.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = silent.local_addr().expect("an address").port();
        let connector = PostgresConnector::new(&format!(
            "postgresql://postgres@127.0.0.1:{port}/audit?connect_timeout=1"
        ))
        .expect("a URL");
        for _ in 0..2 {
            let began = Instant::now();
            let Err(error) = connector.open() else {
                panic!("a connection to a server that never answers");
            };
            assert!(
                began.elapsed() < Duration::from_secs(3),
                "{:?}",
                began.elapsed()
            );
            assert!(error.to_string().contains("within"), "{error}");
        }
        drop(silent);
    }
}
