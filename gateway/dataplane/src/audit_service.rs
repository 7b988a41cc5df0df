//! `lienthong.gateway.v1.AuditService`, served by the gateway itself over its audit log, as
//! `gateway/audit/service.py`: the latest signed checkpoint, inclusion and consistency
//! proofs. Its calls are admitted and recorded as any other (their upstream is `local`).
//!
//! `ListExchanges` is not served here yet: it answers `UNIMPLEMENTED`.

use prost::Message as _;

use crate::audit::{AuditError, AuditStore, SignedCheckpoint};
use crate::log;
use crate::status::{Code, Status};
use crate::wire::{
    Checkpoint, GetConsistencyProofRequest, GetConsistencyProofResponse, GetInclusionProofRequest,
    GetInclusionProofResponse, GetLatestCheckpointRequest, GetLatestCheckpointResponse,
};

/// The service's full name.
pub const SERVICE: &str = "lienthong.gateway.v1.AuditService";

/// What an exchange served here records as its upstream.
pub const UPSTREAM: &str = "local";

/// The most bytes of a request read: every request of the service is a few numbers.
pub const MAX_REQUEST: usize = 4096;

/// Answer the call to `path` with the serialized `request`: the serialized response, or the
/// status to answer with. It reads the database: run it off the async threads.
///
/// # Errors
///
/// `INVALID_ARGUMENT` with field violations for a request out of its ranges or not the
/// method's message, `OUT_OF_RANGE` beyond the latest checkpoint, `UNAVAILABLE` when the log
/// cannot be read, `UNIMPLEMENTED` for `ListExchanges`.
pub fn answer(store: &AuditStore, path: &str, request: &[u8]) -> Result<Vec<u8>, Status> {
    let method = path
        .strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(SERVICE))
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or_default();
    match method {
        "GetLatestCheckpoint" => {
            decode::<GetLatestCheckpointRequest>(request)?;
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
            let asked = decode::<GetInclusionProofRequest>(request)?;
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
            let asked = decode::<GetConsistencyProofRequest>(request)?;
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
        _ => Err(Status::new(
            Code::Unimplemented,
            "NOT_SERVED",
            format!("{SERVICE}/{method} is not served by this gateway yet"),
        )),
    }
}

fn decode<M: prost::Message + Default>(request: &[u8]) -> Result<M, Status> {
    M::decode(request).map_err(|_| invalid("", "not a valid request message"))
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
