//! The audit store on `SQLite` and `PostgreSQL`: group commit from many threads into one tree,
//! refusals that fail nobody else, reopening, two stores on one database, and proofs and
//! checkpoints that verify. `tests/test_rust_audit_store.py` checks the same logs with Python.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use lienthong_dataplane::audit::postgres::PostgresConnector;
use lienthong_dataplane::audit::sqlite::SqliteConnector;
use lienthong_dataplane::audit::store::{Access, Connector, Database, Work, COLUMN_WIDTHS};
use lienthong_dataplane::audit::{Appended, AuditError, AuditStore, StoreOptions};
use lienthong_dataplane::entry::{AuditEntry, Kind, FORMAT_VERSION};
use lienthong_dataplane::merkle::{self, Frontier, Hash};
use lienthong_dataplane::note::{Checkpoint, NoteSigner, NoteVerifier};

const ORIGIN: &str = "lienthong.local/audit";

fn signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[7; 32])).expect("a signer")
}

fn options() -> StoreOptions {
    // No background checkpoints: each test signs when it means to.
    StoreOptions {
        checkpoint_interval: None,
        ..StoreOptions::default()
    }
}

fn entry(n: u64) -> AuditEntry {
    AuditEntry {
        kind: Kind::Request,
        exchange_id: format!("00000000-0000-4000-8000-{n:012x}"),
        caller: Some("spiffe://lienthong.local/moj/civil-registry".into()),
        upstream: None,
        method: "/a.v1.S/M".into(),
        purpose: Some(format!("purpose \"{n}\"\n")),
        on_behalf_of: None,
        request_id: Some(format!("r-{n}")),
        start_time: "2024-05-01T08:30:00.123456Z".into(),
        end_time: None,
        status_code: None,
        status: None,
        request_bytes: Some(n),
        response_bytes: None,
        request_sha256: None,
        response_sha256: None,
        request_leaf: None,
        version: FORMAT_VERSION,
    }
}

/// A `SQLite` file in a folder of its own, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos();
        let folder = std::env::temp_dir().join(format!(
            "lienthong-audit-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        Self(folder.join("audit.db"))
    }

    fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(SqliteConnector::new(&self.0))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(folder) = self.0.parent() {
            drop(std::fs::remove_dir_all(folder));
        }
    }
}

/// A `PostgreSQL` database of a random name, dropped when dropped; `None` where no server runs
/// (outside CI, which starts one: there it is a failure).
struct TempDatabase {
    admin: String,
    name: String,
    url: String,
}

impl TempDatabase {
    fn new() -> Option<Self> {
        let admin = std::env::var("LIENTHONG_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
            .replace("postgresql+psycopg://", "postgresql://");
        let mut client = match postgres::Client::connect(&admin, postgres::NoTls) {
            Ok(client) => client,
            Err(error) if std::env::var_os("CI").is_none() => {
                eprintln!("PostgreSQL not reachable, test skipped: {error}");
                return None;
            }
            Err(error) => panic!("PostgreSQL not reachable in CI: {error}"),
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .subsec_nanos();
        let name = format!("lienthong_rust_{}_{nanos:x}", std::process::id());
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("a database");
        let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
        let url = format!("{base}/{name}");
        Some(Self { admin, name, url })
    }

    fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(PostgresConnector::new(&self.url).expect("a URL"))
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            drop(client.batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name)));
        }
    }
}

/// Append `per_thread` entries from each of `threads` threads, spread over `stores`.
fn append_concurrently(stores: &[Arc<AuditStore>], threads: u64, per_thread: u64) -> Vec<Appended> {
    let workers: Vec<_> = (0..threads)
        .map(|worker| {
            let store = Arc::clone(&stores[usize::try_from(worker).expect("small") % stores.len()]);
            thread::spawn(move || {
                (0..per_thread)
                    .map(|n| {
                        store
                            .append(&entry(worker * per_thread + n))
                            .expect("appended")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|worker| worker.join().expect("no panic"))
        .collect()
}

/// Check the whole stored tree: indices `0..size` each once, stored bytes hashing to the
/// leaves answered, the root from stored nodes equal to one recomputed from the bytes, proofs
/// that verify, and a checkpoint whose note verifies.
fn check_tree(store: &AuditStore, appended: &[Appended], size: u64) {
    assert_eq!(store.tree_size().expect("a size"), size);
    let indices: HashSet<u64> = appended.iter().map(|a| a.leaf_index).collect();
    assert_eq!(indices.len(), appended.len(), "an index was given twice");
    let entries = store.entries(0, size).expect("entries");
    assert_eq!(
        entries.iter().map(|(index, _)| *index).collect::<Vec<_>>(),
        (0..size).collect::<Vec<_>>()
    );
    let leaves: Vec<Hash> = entries
        .iter()
        .map(|(_, data)| merkle::leaf_hash(data))
        .collect();
    for answer in appended {
        let index = usize::try_from(answer.leaf_index).expect("small");
        assert_eq!(leaves[index], answer.leaf_hash);
        AuditEntry::decode(&entries[index].1).expect("canonical entry bytes");
    }
    let mut frontier = Frontier::new();
    for leaf in &leaves {
        frontier.append(*leaf).expect("room");
    }
    let root = frontier.root();
    assert_eq!(store.root_hash(size).expect("a root"), root);

    let checkpoint = store.checkpoint().expect("signed").expect("a checkpoint");
    assert_eq!((checkpoint.tree_size, checkpoint.root_hash), (size, root));
    let verifier = NoteVerifier::new(&signer().verifier_key()).expect("a verifier");
    let signed = Checkpoint::parse(verifier.open(&checkpoint.note).expect("verifies"))
        .expect("a checkpoint");
    assert_eq!(
        (signed.origin(), signed.tree_size(), signed.root_hash()),
        (ORIGIN, size, root)
    );
    assert_eq!(store.latest_checkpoint().expect("read"), Some(checkpoint));

    let step = (size / 37).max(1);
    for index in (0..size).step_by(usize::try_from(step).expect("small")) {
        let (leaf, proof) = store.inclusion_proof(index, size).expect("a proof");
        assert!(merkle::verify_inclusion(&leaf, index, size, &proof, &root));
        let first = index + 1;
        let proof = store.consistency_proof(first, size).expect("a proof");
        let first_root = store.root_hash(first).expect("a root");
        assert!(merkle::verify_consistency(
            first,
            size,
            &first_root,
            &root,
            &proof
        ));
    }
}

fn many_threads_make_one_tree(connector: &Arc<dyn Connector>) {
    let store =
        Arc::new(AuditStore::open(Arc::clone(connector), signer(), options()).expect("open"));
    let appended = append_concurrently(&[Arc::clone(&store)], 8, 200);
    assert_eq!(
        appended
            .iter()
            .map(|a| a.leaf_index)
            .collect::<HashSet<_>>(),
        (0..1600).collect::<HashSet<_>>()
    );
    check_tree(&store, &appended, 1600);
    // Nothing grew: the latest is answered, nothing signed again.
    let again = store.checkpoint().expect("read").expect("a checkpoint");
    assert_eq!(again.tree_size, 1600);
}

#[test]
fn eight_threads_append_1600_entries_into_one_tree() {
    many_threads_make_one_tree(&TempFile::new().connector());
}

#[test]
fn eight_threads_append_1600_entries_into_one_tree_on_postgres() {
    if let Some(database) = TempDatabase::new() {
        many_threads_make_one_tree(&database.connector());
    }
}

fn over_long_text_is_refused_alone(connector: &Arc<dyn Connector>) {
    let store =
        Arc::new(AuditStore::open(Arc::clone(connector), signer(), options()).expect("open"));
    let others: Vec<_> = (0..4)
        .map(|worker| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                (0..50)
                    .map(|n| store.append(&entry(worker * 50 + n)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (column, width) in COLUMN_WIDTHS {
        let mut long = entry(1000);
        // Characters count, not bytes: a full column of two-byte characters fits.
        let fits = "\u{e9}".repeat(width);
        let over = "x".repeat(width + 1);
        for (text, refused) in [(fits, false), (over, true)] {
            match column {
                "exchange_id" => long.exchange_id.clone_from(&text),
                "caller" => long.caller = Some(text),
                "method" => long.method.clone_from(&text),
                "status" => long.status = Some(text),
                _ => long.request_id = Some(text),
            }
            let result = store.append(&long);
            if refused {
                assert_eq!(result, Err(AuditError::TooLong { column, width }));
            } else {
                result.expect("a full column fits");
            }
        }
    }
    for worker in others {
        for result in worker.join().expect("no panic") {
            result.expect("others commit");
        }
    }
    let size = store.tree_size().expect("a size");
    assert_eq!(size, 200 + 5);
    check_tree(&store, &[], size);
}

#[test]
fn an_over_long_text_is_refused_alone_while_others_commit() {
    over_long_text_is_refused_alone(&TempFile::new().connector());
}

#[test]
fn an_over_long_text_is_refused_alone_on_postgres() {
    if let Some(database) = TempDatabase::new() {
        over_long_text_is_refused_alone(&database.connector());
    }
}

fn reopened_store_continues(connector: &Arc<dyn Connector>) {
    let mut appended = Vec::new();
    // Odd counts, so that each reopening finds a ragged right edge to rebuild.
    for (round, count) in [5_u64, 6, 13].into_iter().enumerate() {
        let store = AuditStore::open(Arc::clone(connector), signer(), options()).expect("open");
        let base = u64::try_from(round).expect("small") * 100;
        for n in 0..count {
            appended.push(store.append(&entry(base + n)).expect("appended"));
        }
        store.close().expect("closed");
        assert_eq!(store.append(&entry(0)), Err(AuditError::Closed));
    }
    assert_eq!(
        appended.iter().map(|a| a.leaf_index).collect::<Vec<_>>(),
        (0..24).collect::<Vec<_>>()
    );
    let store = AuditStore::open(Arc::clone(connector), signer(), options()).expect("open");
    assert_eq!(
        store
            .latest_checkpoint()
            .expect("read")
            .map(|c| c.tree_size),
        Some(24)
    );
    check_tree(&store, &appended, 24);
}

#[test]
fn a_reopened_store_continues_the_tree() {
    reopened_store_continues(&TempFile::new().connector());
}

#[test]
fn a_reopened_store_continues_the_tree_on_postgres() {
    if let Some(database) = TempDatabase::new() {
        reopened_store_continues(&database.connector());
    }
}

fn two_stores_share_one_tree(connector: &Arc<dyn Connector>) {
    let open =
        || Arc::new(AuditStore::open(Arc::clone(connector), signer(), options()).expect("open"));
    let stores = [open(), open()];
    let mut appended = append_concurrently(&stores, 6, 60);
    // And strictly alternating, so that each batch finds the other's appends.
    for n in 0..20 {
        appended.push(
            stores[n % 2]
                .append(&entry(5000 + n as u64))
                .expect("appended"),
        );
    }
    let size = 360 + 20;
    assert_eq!(
        appended
            .iter()
            .map(|a| a.leaf_index)
            .collect::<HashSet<_>>(),
        (0..size).collect::<HashSet<_>>()
    );
    check_tree(&stores[0], &appended, size);
    check_tree(&stores[1], &appended, size);
}

#[test]
fn two_stores_on_one_file_keep_one_tree() {
    two_stores_share_one_tree(&TempFile::new().connector());
}

#[test]
fn two_stores_on_one_postgres_database_keep_one_tree() {
    if let Some(database) = TempDatabase::new() {
        two_stores_share_one_tree(&database.connector());
    }
}

#[test]
fn a_failed_commit_fails_its_waiters_and_the_tree_goes_on() {
    let file = TempFile::new();
    let store = Arc::new(AuditStore::open(file.connector(), signer(), options()).expect("open"));
    let first = store.append(&entry(0)).expect("appended");
    // A trigger makes the database refuse one entry, as a full disk would refuse a batch.
    SqliteConnector::new(&file.0)
        .open()
        .expect("a connection")
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_entry WHEN NEW.method = '/refused' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .expect("a trigger");
    let mut refused = entry(1);
    refused.method = "/refused".into();
    let error = store.append(&refused).expect_err("refused");
    assert!(matches!(&error, AuditError::Database(text) if text.contains("refused by the test")));
    // The batch rolled back whole: the head did not grow, and the next entry takes index 1.
    assert_eq!(store.tree_size().expect("a size"), 1);
    let mut appended = vec![first, store.append(&entry(2)).expect("appended")];
    assert_eq!(appended[1].leaf_index, 1);
    appended.extend(append_concurrently(&[Arc::clone(&store)], 3, 10));
    check_tree(&store, &appended, 32);
}

/// `SQLite` whose next writing transaction fails, slowly, as a database going away would.
struct Failing {
    inner: SqliteConnector,
    fail_next: Arc<AtomicBool>,
}

struct FailingDatabase {
    inner: Box<dyn Database>,
    fail_next: Arc<AtomicBool>,
}

impl Connector for Failing {
    fn connect(&self) -> Result<Box<dyn Database>, AuditError> {
        Ok(Box::new(FailingDatabase {
            inner: self.inner.connect()?,
            fail_next: Arc::clone(&self.fail_next),
        }))
    }
}

impl Database for FailingDatabase {
    fn create_schema(&mut self) -> Result<(), AuditError> {
        self.inner.create_schema()
    }

    fn transaction(&mut self, access: Access, work: &mut Work<'_>) -> Result<(), AuditError> {
        if access == Access::Write && self.fail_next.swap(false, Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(400));
            return Err(AuditError::Database("disk I/O error".into()));
        }
        self.inner.transaction(access, work)
    }
}

#[test]
fn what_queued_while_a_commit_failed_fails_with_it() {
    let file = TempFile::new();
    let fail_next = Arc::new(AtomicBool::new(false));
    let connector = Arc::new(Failing {
        inner: SqliteConnector::new(&file.0),
        fail_next: Arc::clone(&fail_next),
    });
    let store = Arc::new(AuditStore::open(connector, signer(), options()).expect("open"));
    let mut appended = vec![store.append(&entry(0)).expect("appended")];
    fail_next.store(true, Ordering::SeqCst);
    let append = |n| {
        let store = Arc::clone(&store);
        thread::spawn(move || store.append(&entry(n)))
    };
    let failing = append(1);
    // The writer is inside the failing commit now; these queue behind it.
    thread::sleep(Duration::from_millis(100));
    let queued: Vec<_> = (2..8).map(append).collect();
    let failure = Err(AuditError::Database("disk I/O error".into()));
    assert_eq!(failing.join().expect("no panic"), failure);
    for waiter in queued {
        assert_eq!(waiter.join().expect("no panic"), failure);
    }
    // Nothing of it was written, and the tree goes on from index 1.
    assert_eq!(store.tree_size().expect("a size"), 1);
    appended.push(store.append(&entry(9)).expect("appended"));
    assert_eq!(appended[1].leaf_index, 1);
    check_tree(&store, &appended, 2);
}

/// `SQLite` that counts its commits (writing transactions) and can make the next one slow.
struct Counting {
    inner: SqliteConnector,
    commits: Arc<AtomicU64>,
    slow_next: Arc<AtomicBool>,
}

struct CountingDatabase {
    inner: Box<dyn Database>,
    commits: Arc<AtomicU64>,
    slow_next: Arc<AtomicBool>,
}

impl Connector for Counting {
    fn connect(&self) -> Result<Box<dyn Database>, AuditError> {
        Ok(Box::new(CountingDatabase {
            inner: self.inner.connect()?,
            commits: Arc::clone(&self.commits),
            slow_next: Arc::clone(&self.slow_next),
        }))
    }
}

impl Database for CountingDatabase {
    fn create_schema(&mut self) -> Result<(), AuditError> {
        self.inner.create_schema()
    }

    fn transaction(&mut self, access: Access, work: &mut Work<'_>) -> Result<(), AuditError> {
        if access == Access::Write {
            self.commits.fetch_add(1, Ordering::SeqCst);
            if self.slow_next.swap(false, Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(300));
            }
        }
        self.inner.transaction(access, work)
    }
}

#[test]
fn after_a_shared_commit_the_commit_delay_gathers_entries_that_arrive_apart() {
    let file = TempFile::new();
    let commits = Arc::new(AtomicU64::new(0));
    let slow_next = Arc::new(AtomicBool::new(false));
    let connector = Arc::new(Counting {
        inner: SqliteConnector::new(&file.0),
        commits: Arc::clone(&commits),
        slow_next: Arc::clone(&slow_next),
    });
    let options = StoreOptions {
        max_batch: 8,
        commit_delay: Duration::from_secs(2),
        ..options()
    };
    let store = Arc::new(AuditStore::open(connector, signer(), options).expect("open"));
    // Alone, an entry is committed at once: the delay follows only a commit of several.
    let started = Instant::now();
    let mut appended = vec![store.append(&entry(0)).expect("appended")];
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A slow commit lets eight entries queue, so the next commit holds several.
    let opened = commits.load(Ordering::SeqCst);
    slow_next.store(true, Ordering::SeqCst);
    let slow = {
        let store = Arc::clone(&store);
        thread::spawn(move || store.append(&entry(1)).expect("appended"))
    };
    thread::sleep(Duration::from_millis(100));
    // Then each of eight threads appends ten entries, thread i waiting 20 + 2.5·i ms after
    // each commit: without the delay its entries would arrive alone, one commit each.
    let workers: Vec<_> = (0..8_u64)
        .map(|worker| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                (0..10)
                    .map(|n| {
                        let appended = store.append(&entry(10 + worker * 10 + n)).expect("ok");
                        thread::sleep(Duration::from_micros(20_000 + 2_500 * worker));
                        appended
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    appended.push(slow.join().expect("no panic"));
    for worker in workers {
        appended.extend(worker.join().expect("no panic"));
    }
    let used = commits.load(Ordering::SeqCst) - opened;
    // The slow one, then ten rounds of eight (a round may split where a thread lags).
    assert!(used <= 16, "{used} commits for 81 entries");
    check_tree(&store, &appended, 82);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_append_without_blocking() {
    let file = TempFile::new();
    let store = Arc::new(AuditStore::open(file.connector(), signer(), options()).expect("open"));
    let tasks: Vec<_> = (0..100)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let pending = store.submit(&entry(n)).expect("queued");
                tokio::time::timeout(Duration::from_secs(10), pending)
                    .await
                    .expect("in time")
            })
        })
        .collect();
    let mut appended = Vec::new();
    for task in tasks {
        appended.push(task.await.expect("no panic").expect("appended"));
    }
    let mut long = entry(0);
    long.caller = Some("x".repeat(2049));
    assert!(matches!(
        store.submit(&long),
        Err(AuditError::TooLong {
            column: "caller",
            ..
        })
    ));
    let store = Arc::clone(&store);
    tokio::task::spawn_blocking(move || check_tree(&store, &appended, 100))
        .await
        .expect("no panic");
}
