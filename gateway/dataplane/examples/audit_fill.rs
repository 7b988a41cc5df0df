//! Append entries to an audit log with the Rust store, for the Python side to check.
//!
//! `audit_fill <database URL> <signing key PEM file> <count> [origin]`: the URL as the gateway's
//! config names it (`sqlite:///path` or `postgresql+psycopg://...`). Entries are appended from
//! four threads, as request and completion pairs with text Python's JSON must escape alike;
//! then the store is closed, which signs a last checkpoint. Prints the tree size and the
//! checkpoint note.

use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use lienthong_dataplane::audit::postgres::PostgresConnector;
use lienthong_dataplane::audit::sqlite::SqliteConnector;
use lienthong_dataplane::audit::store::Connector;
use lienthong_dataplane::audit::{AuditStore, StoreOptions};
use lienthong_dataplane::entry::{AuditEntry, Kind, FORMAT_VERSION};
use lienthong_dataplane::note::NoteSigner;

const THREADS: u64 = 4;

fn main() -> ExitCode {
    match run(&std::env::args().skip(1).collect::<Vec<_>>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("audit_fill: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(arguments: &[String]) -> Result<(), String> {
    let [url, key, count, rest @ ..] = arguments else {
        return Err("usage: audit_fill <database URL> <key PEM> <count> [origin]".into());
    };
    let origin = rest.first().map_or("lienthong.local/audit", String::as_str);
    let count: u64 = count.parse().map_err(|e| format!("count: {e}"))?;
    let pem = std::fs::read_to_string(key).map_err(|e| format!("{key}: {e}"))?;
    let signer = NoteSigner::from_pkcs8_pem(origin, &pem).map_err(|e| e.to_string())?;
    let connector: Arc<dyn Connector> = match url.strip_prefix("sqlite:///") {
        Some(path) => Arc::new(SqliteConnector::new(path)),
        None => Arc::new(PostgresConnector::new(url).map_err(|e| e.to_string())?),
    };
    let store = Arc::new(
        AuditStore::open(connector, signer, StoreOptions::default()).map_err(|e| e.to_string())?,
    );
    let workers: Vec<_> = (0..THREADS)
        .map(|worker| {
            let store = Arc::clone(&store);
            thread::spawn(move || -> Result<(), String> {
                // Each thread alternates requests and the completions naming them.
                let mut request: Option<(u64, u64)> = None; // (exchange, leaf index)
                let mut n = worker;
                while n < count {
                    let exchange = request.map_or(n, |(exchange, _)| exchange);
                    let appended = store.append(&entry(n, exchange, request.map(|r| r.1)));
                    let appended = appended.map_err(|e| format!("entry {n}: {e}"))?;
                    request = match request {
                        None => Some((n, appended.leaf_index)),
                        Some(_) => None,
                    };
                    n += THREADS;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "a writer panicked")??;
    }
    let checkpoint = store.close().map_err(|e| e.to_string())?;
    let size = store.tree_size().map_err(|e| e.to_string())?;
    println!("{size}");
    if let Some(checkpoint) = checkpoint {
        print!("{}", checkpoint.note);
    }
    Ok(())
}

/// Entry `n`, of exchange number `exchange`; a completion if it names its request's leaf.
fn entry(n: u64, exchange: u64, request_leaf: Option<u64>) -> AuditEntry {
    let completion = request_leaf.is_some();
    AuditEntry {
        kind: if completion {
            Kind::Completion
        } else {
            Kind::Request
        },
        exchange_id: format!("00000000-0000-4000-8000-{exchange:012x}"),
        caller: Some(format!(
            "spiffe://lienthong.local/moj/civil-registry-{}",
            n % 3
        )),
        upstream: Some("127.0.0.1:50071".into()),
        method: "/lienthong.population.v1.CitizenService/Get".into(),
        purpose: Some(format!("đăng ký khai sinh \"{n}\"\n\t\u{1}\u{2028}🇻🇳")),
        on_behalf_of: n.is_multiple_of(5).then(|| "Nguyễn Văn A\\".to_owned()),
        request_id: Some(format!("request-{n}")),
        start_time: "2026-11-25T13:04:57.120311Z".into(),
        end_time: completion.then(|| "2026-11-25T13:04:57.133516Z".to_owned()),
        status_code: completion.then_some(0),
        status: completion.then(|| "OK".to_owned()),
        request_bytes: Some(n * 7),
        response_bytes: completion.then_some(16),
        request_sha256: Some(format!("{n:064x}")),
        response_sha256: None,
        request_leaf,
        version: FORMAT_VERSION,
    }
}
