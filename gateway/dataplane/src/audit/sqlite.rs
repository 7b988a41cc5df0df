//! The audit store on `SQLite`, configured as `lienthong/db.py` configures it.
//!
//! Every connection runs WAL with `synchronous=FULL` and `foreign_keys=ON`, and waits up to
//! 30 s for a lock (Python's `sqlite3.connect(timeout=30)`). A writing transaction begins
//! `IMMEDIATE`, as db.py's `_begin_sqlite` does, so that writers are serialised before they
//! read what they update; a reading one begins `DEFERRED`: a snapshot that queues for nothing.
//! Timestamps are stored as `SQLAlchemy`'s `SQLite` dialect stores `DateTime`: UTC text
//! `YYYY-MM-DD HH:MM:SS.ffffff`, which it reads back and compares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use super::store::{
    to_hash, to_i64, to_u64, Access, AuditError, CompletionQuery, Connector, Database, EntryRow,
    SignedCheckpoint, Transaction, Work,
};
use crate::merkle::{Hash, NodeId, Nodes};

/// db.py's `connect_args={"timeout": 30}`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The tables store.py's `metadata.create_all` creates on `SQLite`, in `SQLAlchemy`'s own DDL,
/// each only if missing: either side may have created them first.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_head (
	id SMALLINT NOT NULL,
	tree_size BIGINT NOT NULL,
	PRIMARY KEY (id)
);
CREATE TABLE IF NOT EXISTS audit_entry (
	leaf_index BIGINT NOT NULL,
	entry BLOB NOT NULL,
	kind VARCHAR(16) NOT NULL,
	exchange_id VARCHAR(36) NOT NULL,
	caller VARCHAR(2048),
	method VARCHAR(512) NOT NULL,
	status VARCHAR(32),
	request_id VARCHAR(256),
	recorded_at DATETIME NOT NULL,
	PRIMARY KEY (leaf_index)
);
CREATE INDEX IF NOT EXISTS audit_entry_caller ON audit_entry (caller, leaf_index);
CREATE INDEX IF NOT EXISTS audit_entry_exchange ON audit_entry (exchange_id);
CREATE INDEX IF NOT EXISTS audit_entry_method ON audit_entry (method, leaf_index);
CREATE INDEX IF NOT EXISTS audit_entry_request ON audit_entry (request_id);
CREATE INDEX IF NOT EXISTS audit_entry_time ON audit_entry (recorded_at);
CREATE TABLE IF NOT EXISTS audit_node (
	level SMALLINT NOT NULL,
	idx BIGINT NOT NULL,
	hash BLOB NOT NULL,
	PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS audit_checkpoint (
	tree_size BIGINT NOT NULL,
	root_hash BLOB NOT NULL,
	note TEXT NOT NULL,
	signed_at DATETIME NOT NULL,
	PRIMARY KEY (tree_size)
);
INSERT INTO audit_head (id, tree_size) SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM audit_head);
";

/// Opens connections to one `SQLite` file.
#[derive(Debug, Clone)]
pub struct SqliteConnector {
    path: PathBuf,
}

impl SqliteConnector {
    /// Connections to the file at `path`, created (with its folder) on first use.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A configured connection of its own (the store's are private to it).
    ///
    /// # Errors
    ///
    /// [`AuditError::Database`].
    pub fn open(&self) -> Result<Connection, AuditError> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| AuditError::database(&e))?;
        }
        let connection = Connection::open(&self.path).map_err(|e| AuditError::database(&e))?;
        configure(&connection).map_err(|e| AuditError::database(&e))?;
        Ok(connection)
    }
}

fn configure(connection: &Connection) -> rusqlite::Result<()> {
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode answers with the mode now in force; WAL persists in the file.
    connection.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl Connector for SqliteConnector {
    fn connect(&self) -> Result<Box<dyn Database>, AuditError> {
        Ok(Box::new(SqliteDatabase(self.open()?)))
    }
}

struct SqliteDatabase(Connection);

impl Database for SqliteDatabase {
    fn create_schema(&mut self) -> Result<(), AuditError> {
        // IMMEDIATE: processes starting together create what is missing one at a time.
        let transaction = self
            .0
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| AuditError::database(&e))?;
        transaction
            .execute_batch(SCHEMA)
            .map_err(|e| AuditError::database(&e))?;
        transaction.commit().map_err(|e| AuditError::database(&e))
    }

    fn transaction(&mut self, access: Access, work: &mut Work<'_>) -> Result<(), AuditError> {
        let behavior = match access {
            Access::Read => TransactionBehavior::Deferred,
            Access::Write => TransactionBehavior::Immediate,
        };
        let transaction = self
            .0
            .transaction_with_behavior(behavior)
            .map_err(|e| AuditError::database(&e))?;
        // Rolled back when dropped, if work failed.
        work(&mut SqliteTransaction(&transaction))?;
        transaction.commit().map_err(|e| AuditError::database(&e))
    }
}

struct SqliteTransaction<'a>(&'a Connection);

fn failed(error: &rusqlite::Error) -> AuditError {
    AuditError::database(error)
}

impl Transaction for SqliteTransaction<'_> {
    fn reserve(&mut self, count: u64) -> Result<u64, AuditError> {
        let count = to_i64(count)?;
        let grown: i64 = self
            .0
            .prepare_cached(
                "UPDATE audit_head SET tree_size = tree_size + ?1 WHERE id = 1 \
                 RETURNING tree_size",
            )
            .and_then(|mut statement| statement.query_row([count], |row| row.get(0)))
            .map_err(|e| failed(&e))?;
        to_u64(grown)
    }

    fn tree_size(&mut self) -> Result<u64, AuditError> {
        let size: i64 = self
            .0
            .prepare_cached("SELECT tree_size FROM audit_head WHERE id = 1")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(|e| failed(&e))?;
        to_u64(size)
    }

    fn fetch_nodes(&mut self, ids: &[NodeId]) -> Result<Nodes, AuditError> {
        let mut by_level: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for &(level, index) in ids {
            by_level.entry(level).or_default().insert(index);
        }
        if by_level.is_empty() {
            return Ok(Nodes::new());
        }
        // One IN list per level, as store.py's fetch_nodes: answered from the primary key
        // (SQLite uses no index for a row-value IN).
        let mut clauses = Vec::with_capacity(by_level.len());
        let mut values: Vec<i64> = Vec::with_capacity(ids.len() + by_level.len());
        for (level, indices) in &by_level {
            values.push(i64::from(*level));
            for &index in indices {
                values.push(to_i64(index)?);
            }
            let marks = vec!["?"; indices.len()].join(",");
            clauses.push(format!("(level = ? AND idx IN ({marks}))"));
        }
        let sql = format!(
            "SELECT level, idx, hash FROM audit_node WHERE {}",
            clauses.join(" OR ")
        );
        let mut statement = self.0.prepare(&sql).map_err(|e| failed(&e))?;
        let rows = statement
            .query_map(params_from_iter(values), |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get(2)?))
            })
            .map_err(|e| failed(&e))?;
        let mut nodes = Nodes::new();
        for row in rows {
            let (level, index, hash): (i64, i64, Vec<u8>) = row.map_err(|e| failed(&e))?;
            let level = u32::try_from(level)
                .map_err(|_| AuditError::Corrupt(format!("a node of level {level}")))?;
            nodes.insert((level, to_u64(index)?), to_hash(&hash)?);
        }
        Ok(nodes)
    }

    fn insert_entries(
        &mut self,
        rows: &[EntryRow<'_>],
        recorded_at: SystemTime,
    ) -> Result<(), AuditError> {
        let recorded_at = timestamp(recorded_at);
        let mut statement = self
            .0
            .prepare_cached(
                "INSERT INTO audit_entry (leaf_index, entry, kind, exchange_id, caller, method, \
                 status, request_id, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(|e| failed(&e))?;
        for row in rows {
            let entry = row.entry;
            statement
                .execute(params![
                    to_i64(row.leaf_index)?,
                    row.data,
                    entry.kind.as_str(),
                    entry.exchange_id,
                    entry.caller,
                    entry.method,
                    entry.status,
                    entry.request_id,
                    recorded_at,
                ])
                .map_err(|e| failed(&e))?;
        }
        Ok(())
    }

    fn insert_nodes(&mut self, nodes: &[(NodeId, Hash)]) -> Result<(), AuditError> {
        let mut statement = self
            .0
            .prepare_cached("INSERT INTO audit_node (level, idx, hash) VALUES (?1, ?2, ?3)")
            .map_err(|e| failed(&e))?;
        for &((level, index), hash) in nodes {
            statement
                .execute(params![level, to_i64(index)?, &hash[..]])
                .map_err(|e| failed(&e))?;
        }
        Ok(())
    }

    fn latest_checkpoint(&mut self) -> Result<Option<SignedCheckpoint>, AuditError> {
        let row: Option<(i64, Vec<u8>, String)> = self
            .0
            .prepare_cached(
                "SELECT tree_size, root_hash, note FROM audit_checkpoint \
                 ORDER BY tree_size DESC LIMIT 1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .optional()
            })
            .map_err(|e| failed(&e))?;
        row.map(|(tree_size, root_hash, note)| {
            Ok(SignedCheckpoint {
                tree_size: to_u64(tree_size)?,
                root_hash: to_hash(&root_hash)?,
                note,
            })
        })
        .transpose()
    }

    fn insert_checkpoint(
        &mut self,
        checkpoint: &SignedCheckpoint,
        signed_at: SystemTime,
    ) -> Result<(), AuditError> {
        let tree_size = to_i64(checkpoint.tree_size)?;
        // DO NOTHING: another gateway process signed this size first (Python's IntegrityError).
        self.0
            .prepare_cached(
                "INSERT INTO audit_checkpoint (tree_size, root_hash, note, signed_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tree_size) DO NOTHING",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    tree_size,
                    &checkpoint.root_hash[..],
                    checkpoint.note,
                    timestamp(signed_at),
                ])
            })
            .map(drop)
            .map_err(|e| failed(&e))
    }

    fn entries(&mut self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        let mut statement = self
            .0
            .prepare_cached(
                "SELECT leaf_index, entry FROM audit_entry \
                 WHERE leaf_index >= ?1 AND leaf_index < ?2 ORDER BY leaf_index",
            )
            .map_err(|e| failed(&e))?;
        let rows = statement
            .query_map([to_i64(start)?, to_i64(end)?], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| failed(&e))?;
        leaf_rows(rows)
    }

    fn completions(&mut self, query: &CompletionQuery) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        let mut statement = self
            .0
            .prepare_cached(
                "SELECT leaf_index, entry FROM audit_entry \
                 WHERE kind = 'completion' AND caller = ?1 AND leaf_index > ?2 \
                 AND (?3 IS NULL OR method = ?3) AND (?4 IS NULL OR request_id = ?4) \
                 AND (?5 IS NULL OR recorded_at >= ?5) AND (?6 IS NULL OR recorded_at < ?6) \
                 ORDER BY leaf_index LIMIT ?7",
            )
            .map_err(|e| failed(&e))?;
        let after = match query.after_leaf {
            Some(leaf) => to_i64(leaf)?,
            None => -1,
        };
        let rows = statement
            .query_map(
                params![
                    query.caller,
                    after,
                    query.method,
                    query.request_id,
                    query.recorded_from.map(timestamp),
                    query.recorded_to.map(timestamp),
                    i64::from(query.limit),
                ],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
            )
            .map_err(|e| failed(&e))?;
        leaf_rows(rows)
    }
}

/// (leaf index, entry bytes) rows as the store hands them out.
fn leaf_rows(
    rows: impl Iterator<Item = rusqlite::Result<(i64, Vec<u8>)>>,
) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
    rows.map(|row| {
        let (index, data) = row.map_err(|e| failed(&e))?;
        Ok((to_u64(index)?, data))
    })
    .collect()
}

/// `moment` as `SQLAlchemy`'s `SQLite` `DateTime` stores it: UTC, `YYYY-MM-DD HH:MM:SS.ffffff`.
#[must_use]
pub fn timestamp(moment: SystemTime) -> String {
    let since = moment.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let time = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        time / 3600,
        time % 3600 / 60,
        time % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March is 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_sqlalchemy_writes_them() {
        // Expected values from sqlalchemy.dialects.sqlite.DATETIME's bind processor.
        let at = |seconds: u64, micros: u32| UNIX_EPOCH + Duration::new(seconds, micros * 1000);
        assert_eq!(
            timestamp(at(1_700_000_000, 123_456)),
            "2023-11-14 22:13:20.123456"
        );
        assert_eq!(
            timestamp(at(951_782_400, 500_000)),
            "2000-02-29 00:00:00.500000"
        );
        assert_eq!(timestamp(at(0, 0)), "1970-01-01 00:00:00.000000");
        assert_eq!(
            timestamp(at(4_107_542_399, 999_999)),
            "2100-02-28 23:59:59.999999"
        );
    }
}
