//! `lienthong.gateway.v1.AuditService`, served by the gateway itself over its audit log, as
//! `gateway/audit/service.py`: the latest signed checkpoint, inclusion and consistency
//! proofs, and a caller's own exchanges. Its calls are admitted and recorded as any other
//! (their upstream is `local`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine as _;
use prost::Message as _;

use crate::audit::{AuditError, AuditStore, CompletionQuery, SignedCheckpoint};
use crate::entry::AuditEntry;
use crate::log;
use crate::status::{Code, Status};
use crate::wire::{
    Checkpoint, Exchange, GetConsistencyProofRequest, GetConsistencyProofResponse,
    GetInclusionProofRequest, GetInclusionProofResponse, GetLatestCheckpointRequest,
    GetLatestCheckpointResponse, ListExchangesRequest, ListExchangesResponse, Timestamp,
};

/// A page's size when the request names none, and the most it may name.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;

/// The range of `google.protobuf.Timestamp`: 0001-01-01 to 9999-12-31, in Unix seconds.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// The service's full name.
pub const SERVICE: &str = "lienthong.gateway.v1.AuditService";

/// What an exchange served here records as its upstream.
pub const UPSTREAM: &str = "local";

/// Answer `caller`'s call to `path` with the serialized `request`: the serialized response,
/// or the status to answer with. It reads the database: run it off the async threads.
///
/// # Errors
///
/// `INVALID_ARGUMENT` with field violations for a request out of its ranges or not the
/// method's message, `OUT_OF_RANGE` beyond the latest checkpoint, `UNAVAILABLE` when the log
/// cannot be read, `UNIMPLEMENTED` for a method the service does not have.
pub fn answer(
    store: &AuditStore,
    path: &str,
    request: &[u8],
    caller: &str,
) -> Result<Vec<u8>, Status> {
    let method = path
        .strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(SERVICE))
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or_default();
    match method {
        "GetLatestCheckpoint" => {
            decode::<GetLatestCheckpointRequest>(request, "GetLatestCheckpointRequest")?;
            let signed = signed(store)?;
            Ok(GetLatestCheckpointResponse {
                checkpoint: Some(Checkpoint {
                    origin: store.origin().to_owned(),
                    tree_size: to_i64(signed.tree_size),
                    root_hash: signed.root_hash.to_vec(),
                    signed_note: signed.note,
                }),
            }
            .encode_to_vec())
        }
        "GetInclusionProof" => {
            let asked = decode::<GetInclusionProofRequest>(request, "GetInclusionProofRequest")?;
            if asked.tree_size < 1 || !(0..asked.tree_size).contains(&asked.leaf_index) {
                return Err(invalid(
                    "leaf_index",
                    "must be at least 0 and below tree_size",
                ));
            }
            let (leaf, size) = (to_u64(asked.leaf_index), to_u64(asked.tree_size));
            within_signed(store, size, "tree_size")?;
            let (leaf_hash, hashes) = store
                .inclusion_proof(leaf, size)
                .map_err(|error| unreadable(&error))?;
            Ok(GetInclusionProofResponse {
                leaf_index: asked.leaf_index,
                tree_size: asked.tree_size,
                leaf_hash: leaf_hash.to_vec(),
                hashes: hashes.iter().map(|hash| hash.to_vec()).collect(),
            }
            .encode_to_vec())
        }
        "GetConsistencyProof" => {
            let asked =
                decode::<GetConsistencyProofRequest>(request, "GetConsistencyProofRequest")?;
            if !(1 <= asked.first_tree_size && asked.first_tree_size <= asked.second_tree_size) {
                return Err(invalid(
                    "first_tree_size",
                    "must be at least 1 and at most second_tree_size",
                ));
            }
            let (first, second) = (
                to_u64(asked.first_tree_size),
                to_u64(asked.second_tree_size),
            );
            within_signed(store, second, "second_tree_size")?;
            let hashes = store
                .consistency_proof(first, second)
                .map_err(|error| unreadable(&error))?;
            Ok(GetConsistencyProofResponse {
                first_tree_size: asked.first_tree_size,
                second_tree_size: asked.second_tree_size,
                hashes: hashes.iter().map(|hash| hash.to_vec()).collect(),
            }
            .encode_to_vec())
        }
        "ListExchanges" => list_exchanges(store, &decode(request, "ListExchangesRequest")?, caller),
        _ => Err(Status::new(
            Code::Unimplemented,
            "NOT_SERVED",
            format!("{SERVICE}/{method} is not served by this gateway yet"),
        )),
    }
}

/// The caller's own completions, filtered and paged in leaf order.
fn list_exchanges(
    store: &AuditStore,
    asked: &ListExchangesRequest,
    caller: &str,
) -> Result<Vec<u8>, Status> {
    if !asked.caller.is_empty() && asked.caller != caller {
        return Err(invalid(
            "caller",
            "a caller may list only its own exchanges",
        ));
    }
    let Ok(page_size) = u32::try_from(asked.page_size) else {
        return Err(invalid("page_size", "must not be negative"));
    };
    let limit = if page_size == 0 {
        DEFAULT_PAGE_SIZE
    } else {
        page_size.min(MAX_PAGE_SIZE)
    };
    let time = |stamp: Option<&Timestamp>, field: &str| -> Result<Option<SystemTime>, Status> {
        stamp
            .map(|stamp| {
                moment(stamp).ok_or_else(|| {
                    invalid(
                        field,
                        "must be a valid timestamp: years 1 to 9999, nanos below 1e9",
                    )
                })
            })
            .transpose()
    };
    let query = CompletionQuery {
        caller: caller.to_owned(),
        method: Some(asked.method.clone()).filter(|text| !text.is_empty()),
        request_id: Some(asked.request_id.clone()).filter(|text| !text.is_empty()),
        recorded_from: time(asked.start_time_from.as_ref(), "start_time_from")?,
        recorded_to: time(asked.start_time_to.as_ref(), "start_time_to")?,
        after_leaf: after_leaf(&asked.page_token)?,
        limit: limit + 1,
    };
    let mut found = store
        .completions(&query)
        .map_err(|error| unreadable(&error))?;
    let page = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = found.len() > page;
    found.truncate(page);
    let next_page_token = match found.last() {
        Some((leaf, _)) if more => URL_SAFE.encode(leaf.to_string()),
        _ => String::new(),
    };
    let exchanges = found
        .iter()
        .map(|(leaf, data)| {
            AuditEntry::decode(data)
                .map(|entry| exchange(*leaf, &entry))
                .map_err(|_| unreadable(&AuditError::Corrupt(format!("the entry at {leaf}"))))
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(ListExchangesResponse {
        exchanges,
        next_page_token,
    }
    .encode_to_vec())
}

/// The leaf a page token names (`None`: no token, the first page).
fn after_leaf(token: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE
        .decode(token)
        .ok()
        .and_then(|digits| String::from_utf8(digits).ok())
        .and_then(|digits| digits.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| invalid("page_token", "is not a token of this listing"))
}

/// A timestamp within the range protobuf allows, as a moment.
fn moment(stamp: &Timestamp) -> Option<SystemTime> {
    if !TIMESTAMP_SECONDS.contains(&stamp.seconds) || !(0..1_000_000_000).contains(&stamp.nanos) {
        return None;
    }
    let nanos = u32::try_from(stamp.nanos).ok()?;
    match u64::try_from(stamp.seconds) {
        Ok(after) => UNIX_EPOCH.checked_add(Duration::new(after, nanos)),
        Err(_) => UNIX_EPOCH
            .checked_sub(Duration::from_secs(stamp.seconds.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(nanos))),
    }
}

/// An entry's RFC 3339 time as a timestamp.
fn stamp(text: Option<&str>) -> Option<Timestamp> {
    let at =
        time::OffsetDateTime::parse(text?, &time::format_description::well_known::Rfc3339).ok()?;
    Some(Timestamp {
        seconds: at.unix_timestamp(),
        nanos: i32::try_from(at.nanosecond()).ok()?,
    })
}

/// A completion as the service lists it.
fn exchange(leaf_index: u64, entry: &AuditEntry) -> Exchange {
    let hex = |digest: Option<&str>| hex::decode(digest.unwrap_or_default()).unwrap_or_default();
    Exchange {
        leaf_index: to_i64(leaf_index),
        exchange_id: entry.exchange_id.clone(),
        caller: entry.caller.clone().unwrap_or_default(),
        upstream: entry.upstream.clone().unwrap_or_default(),
        method: entry.method.clone(),
        purpose: entry.purpose.clone().unwrap_or_default(),
        on_behalf_of: entry.on_behalf_of.clone().unwrap_or_default(),
        request_id: entry.request_id.clone().unwrap_or_default(),
        start_time: stamp(Some(&entry.start_time)),
        end_time: stamp(entry.end_time.as_deref()),
        status_code: entry
            .status_code
            .and_then(|code| i32::try_from(code).ok())
            .unwrap_or_default(),
        request_bytes: entry.request_bytes.map_or(0, to_i64),
        response_bytes: entry.response_bytes.map_or(0, to_i64),
        request_sha256: hex(entry.request_sha256.as_deref()),
        response_sha256: hex(entry.response_sha256.as_deref()),
    }
}

/// The request as the method's message `M`, named `name` in the error (as the Python
/// gateway's `LocalService` names it).
fn decode<M: prost::Message + Default>(request: &[u8], name: &str) -> Result<M, Status> {
    M::decode(request).map_err(|_| invalid("", &format!("not a valid lienthong.gateway.v1.{name}")))
}

/// The checkpoint of the tree as it is now, signed now if it grew, so that the caller's own
/// exchanges up to this call can be proven at once.
fn signed(store: &AuditStore) -> Result<SignedCheckpoint, Status> {
    store
        .checkpoint()
        .map_err(|error| unreadable(&error))?
        // Unreachable: this very call's request entry is in the log.
        .ok_or_else(|| Status::new(Code::OutOfRange, "EMPTY_LOG", "the audit log is empty"))
}

fn within_signed(store: &AuditStore, size: u64, field: &str) -> Result<(), Status> {
    let signed = signed(store)?.tree_size;
    if size > signed {
        return Err(Status::new(
            Code::OutOfRange,
            "BEYOND_CHECKPOINT",
            format!("{field} {size} is beyond the latest checkpoint ({signed})"),
        ));
    }
    Ok(())
}

fn invalid(field: &str, description: &str) -> Status {
    Status::new(Code::InvalidArgument, "INVALID_ARGUMENT", "invalid request")
        .with_violation(field, description)
}

fn unreadable(error: &AuditError) -> Status {
    // The database's own words go to the operator's log, never to the caller.
    log::event(
        "error",
        "audit_unreadable",
        serde_json::json!({"error": error.to_string()}),
    );
    Status::new(
        Code::Unavailable,
        "AUDIT_UNAVAILABLE",
        "the audit log cannot be read",
    )
}

/// Tree sizes and leaf indexes fit in an i64 (the tables store them as BIGINT).
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Checked non-negative before.
fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}
