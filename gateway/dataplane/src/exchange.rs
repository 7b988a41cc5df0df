//! The record of one exchange: its audit entries, its receipt and its log line, as
//! `gateway/exchange_log.py` keeps them.
//!
//! The request entry is durable before the call is forwarded, and the completion before the
//! answer's status is released; the completion's leaf comes back to the caller as a receipt
//! signed by the gateway (`lienthong-receipt-bin`). A call refused on its headers has only a
//! completion. Entries hold identifiers, sizes and digests, never messages: caller-chosen text
//! is bounded first (`entry::TEXT_LIMITS`).

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderValue};

use crate::audit::{Appended, AuditError, AuditStore};
use crate::entry::{bounded, AuditEntry, Kind, TEXT_LIMITS};
use crate::handshake;
use crate::limits::Slot;
use crate::log;
use crate::messages::MessageDigest;
use crate::metadata;
use crate::metrics::{InFlight, Metrics, UNKNOWN};
use crate::note::{NoteSigner, Receipt};
use crate::status;

/// The trailer that carries an answer's receipt.
pub const RECEIPT: &str = "lienthong-receipt-bin";

/// Where exchanges are recorded and counted, who signs their receipts, and how long an
/// entry may take.
pub struct Auditor {
    store: AuditStore,
    signer: NoteSigner,
    wait: Duration,
    metrics: Arc<Metrics>,
}

impl Auditor {
    /// Record into `store`, receipts signed by `signer` under the store's origin; an entry not
    /// durable within `wait` counts as not recorded.
    #[must_use]
    pub fn new(
        store: AuditStore,
        signer: NoteSigner,
        wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            signer,
            wait,
            metrics,
        }
    }

    /// The metrics every exchange is counted in.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store, for the gateway's own services (checkpoints, proofs) and its shutdown.
    #[must_use]
    pub fn store(&self) -> &AuditStore {
        &self.store
    }

    async fn append(&self, entry: &AuditEntry) -> Result<Appended, AuditError> {
        let pending = self.store.submit(entry)?;
        match tokio::time::timeout(self.wait, pending).await {
            Ok(appended) => appended,
            Err(_) => Err(AuditError::Timeout(self.wait)),
        }
    }

    /// Record a caller's refused handshake (`handshake::refusal_entry`) and log it, without
    /// waiting: the accept loop never waits on the log.
    pub fn refused_handshake(&self, reason: &'static str, peer: std::net::SocketAddr) {
        let entry = handshake::refusal_entry(reason, peer);
        let queued = self.store.submit(&entry).is_ok();
        self.metrics.handshake_failed(reason);
        if !queued {
            self.metrics.handshake_not_recorded();
        }
        log::event(
            "warning",
            "tls_handshake_refused",
            serde_json::json!({
                "leg": "caller",
                "peer": peer.to_string(),
                "reason": reason,
                "exchange_id": entry.exchange_id,
                "recorded": queued,
            }),
        );
    }

    fn receipt(&self, appended: Appended, exchange_id: &str) -> Option<HeaderValue> {
        let receipt = Receipt::new(
            self.store.origin(),
            appended.leaf_index,
            appended.leaf_hash,
            exchange_id,
        )
        .ok()?;
        let note = self.signer.sign(&receipt.text()).ok()?;
        HeaderValue::from_str(&STANDARD_NO_PAD.encode(note)).ok()
    }
}

/// What the gateway knows of one call while it runs.
///
/// An exchange whose request entry is durable is completed, whatever happens: dropped
/// without a completion (the caller reset the call while it was forwarded), it records
/// itself CANCELLED.
pub struct Exchange {
    auditor: Arc<Auditor>,
    entry: AuditEntry,
    started: Instant,
    request: Arc<Mutex<MessageDigest>>,
    /// The caller's place among its calls in flight, given back with the exchange.
    slot: Option<Slot>,
    /// The method's metric label: its path if it is a contract method, else `unknown`.
    method_label: &'static str,
    /// Counted in flight from admission until the completion.
    in_flight: Mutex<Option<InFlight>>,
    /// Why the call was refused before it started, if it was.
    refusal: Option<&'static str>,
    completed: std::sync::atomic::AtomicBool,
}

/// How an exchange ended, once its completion was recorded or failed to be.
#[derive(Debug)]
pub struct Completed {
    /// The receipt to send in the trailers; `None` if the completion is not durable.
    pub receipt: Option<HeaderValue>,
}

impl Exchange {
    /// A new exchange of the call to `path` with `headers`, from `caller` (`None`: a caller
    /// without an identity), its caller-chosen text bounded. `method` is the contract
    /// method's path, `None` if `path` is none.
    #[must_use]
    pub fn begin(
        auditor: Arc<Auditor>,
        caller: Option<&str>,
        path: &str,
        method: Option<&'static str>,
        headers: &HeaderMap,
    ) -> Self {
        let declared = |key: &str, field: &str| {
            headers
                .get(key)
                .map(|value| String::from_utf8_lossy(value.as_bytes()))
                .map(|text| limited(field, &text).into_owned())
        };
        let entry = AuditEntry {
            caller: caller.map(str::to_owned),
            purpose: declared(metadata::PURPOSE, "purpose"),
            on_behalf_of: declared(metadata::ON_BEHALF_OF, "on_behalf_of"),
            request_id: declared(metadata::REQUEST_ID, "request_id"),
            ..AuditEntry::begun(
                Kind::Request,
                limited("method", path).into_owned(),
                rfc3339(SystemTime::now()),
            )
        };
        Self {
            auditor,
            entry,
            started: Instant::now(),
            request: Arc::default(),
            slot: None,
            method_label: method.unwrap_or(UNKNOWN),
            in_flight: Mutex::new(None),
            refusal: None,
            completed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The call was admitted: it holds the caller's `slot` until the exchange is over, and
    /// is counted in flight until its completion.
    pub fn holds(&mut self, slot: Slot) {
        self.slot = Some(slot);
        let started = self.auditor.metrics.started(self.caller_label());
        *self
            .in_flight
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = Some(started);
    }

    /// The call was refused on its headers, for `reason`.
    pub fn refused(&mut self, reason: &'static str) {
        self.refusal = Some(reason);
    }

    /// The method's metric label.
    #[must_use]
    pub fn method_label(&self) -> &'static str {
        self.method_label
    }

    /// The caller's identity; `None` for a certificate without one.
    #[must_use]
    pub fn caller(&self) -> Option<&str> {
        self.entry.caller.as_deref()
    }

    /// The caller's metric label.
    #[must_use]
    pub fn caller_label(&self) -> &str {
        self.entry.caller.as_deref().unwrap_or(UNKNOWN)
    }

    /// The exchange's id, as its entries and its log line carry it.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.entry.exchange_id
    }

    /// The leaf of the exchange's request entry, once it is durable.
    #[must_use]
    pub fn request_leaf(&self) -> Option<u64> {
        self.entry.request_leaf
    }

    /// The upstream the call is routed to, by its SPIFFE identity.
    pub fn routed_to(&mut self, upstream: &str) {
        self.entry.upstream = Some(upstream.to_owned());
    }

    /// Where the request body counts and digests its messages on their way upstream.
    #[must_use]
    pub fn request_digest(&self) -> Arc<Mutex<MessageDigest>> {
        Arc::clone(&self.request)
    }

    /// Make the request entry durable, before the call is forwarded.
    ///
    /// # Errors
    ///
    /// The store's, when the entry is not durable: the call must not be forwarded.
    pub async fn record_request(&mut self) -> Result<(), AuditError> {
        let appended = self.auditor.append(&self.entry).await?;
        self.entry.request_leaf = Some(appended.leaf_index);
        Ok(())
    }

    /// Record the completion with gRPC status `code` and the response's messages, sign its
    /// receipt and write the exchange's log line.
    pub async fn complete(&self, code: u32, response: &MessageDigest) -> Completed {
        self.completed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.count(code);
        let completion = self.completion(code, response);
        let (leaf_index, receipt) = match self.auditor.append(&completion).await {
            Ok(appended) => (
                Some(appended.leaf_index),
                self.auditor.receipt(appended, self.id()),
            ),
            Err(error) => {
                log::event(
                    "error",
                    "exchange_not_recorded",
                    serde_json::json!({
                        "exchange_id": self.id(),
                        "error": error.to_string(),
                    }),
                );
                (None, None)
            }
        };
        self.log(&completion, leaf_index);
        Completed { receipt }
    }

    fn count(&self, code: u32) {
        let metrics = &self.auditor.metrics;
        let code = status::code_name(status::known_code(code));
        let (caller, method) = (self.caller_label(), self.method_label);
        let started = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match (self.refusal, started) {
            (Some(reason), _) => metrics.rejected(caller, method, reason, code),
            (None, Some(_in_flight)) => {
                metrics.finished(caller, method, code, self.started.elapsed().as_secs_f64());
            }
            (None, None) => metrics.answered(caller, method, code),
        }
    }

    fn completion(&self, code: u32, response: &MessageDigest) -> AuditEntry {
        let request = self
            .request
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let code = status::known_code(code);
        AuditEntry {
            kind: Kind::Completion,
            end_time: Some(rfc3339(SystemTime::now())),
            status_code: Some(i64::from(code)),
            status: Some(status::code_name(code).to_owned()),
            request_bytes: Some(request.bytes()),
            response_bytes: Some(response.bytes()),
            request_sha256: Some(request.hex()),
            response_sha256: Some(response.hex()),
            ..self.entry.clone()
        }
    }

    fn log(&self, completion: &AuditEntry, leaf_index: Option<u64>) {
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0;
        log::event(
            "info",
            "exchange",
            serde_json::json!({
                "exchange_id": completion.exchange_id,
                "leaf_index": leaf_index,
                "request_leaf": completion.request_leaf,
                "caller": completion.caller,
                "upstream": completion.upstream,
                "method": completion.method,
                "purpose": completion.purpose,
                "on_behalf_of": completion.on_behalf_of,
                "request_id": completion.request_id,
                "status": completion.status,
                "duration_ms": (elapsed * 1000.0).round() / 1000.0,
                "request_bytes": completion.request_bytes,
                "response_bytes": completion.response_bytes,
                "request_sha256": completion.request_sha256,
                "response_sha256": completion.response_sha256,
            }),
        );
    }
}

impl Drop for Exchange {
    /// A forwarded call dropped without its completion: recorded CANCELLED, without
    /// waiting (a drop cannot), as a caller's reset is.
    fn drop(&mut self) {
        if self.entry.request_leaf.is_none() || *self.completed.get_mut() {
            return;
        }
        self.count(1);
        let completion = self.completion(1, &MessageDigest::default());
        let queued = self.auditor.store.submit(&completion).is_ok();
        if !queued {
            log::event(
                "error",
                "exchange_not_recorded",
                serde_json::json!({
                    "exchange_id": self.id(),
                    "error": "the audit log refused the completion",
                }),
            );
        }
        self.log(&completion, None);
    }
}

/// `text` bounded to what an entry keeps of `field`.
fn limited<'a>(field: &str, text: &'a str) -> Cow<'a, str> {
    let limit = TEXT_LIMITS
        .iter()
        .find(|(name, _)| *name == field)
        .map_or(usize::MAX, |(_, limit)| *limit);
    bounded(text, limit)
}

/// `moment` in UTC as entries record times: RFC 3339 with microseconds and `Z`.
#[must_use]
pub fn rfc3339(moment: SystemTime) -> String {
    let at = time::OffsetDateTime::from(moment);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn times_are_written_as_python_writes_them() {
        // Expected values from gateway/audit/entry.py's timestamp().
        let at = |seconds: u64, micros: u32| UNIX_EPOCH + Duration::new(seconds, micros * 1000);
        assert_eq!(
            rfc3339(at(1_700_000_000, 123_456)),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(rfc3339(at(951_782_400, 0)), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn caller_text_is_bounded_by_its_field() {
        assert_eq!(limited("purpose", "short"), "short");
        let long = "x".repeat(5_000);
        assert_eq!(limited("request_id", &long).chars().count(), 256);
        assert_eq!(limited("method", &long).chars().count(), 512);
    }
}
