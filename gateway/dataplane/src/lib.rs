//! The gateway's compiled data plane (issue 15).
//!
//! Built beside the Python gateway and switched over once the whole suite passes against it.
//! It holds what every call needs and that must agree with the Python control plane: caller
//! identity (the X.509-SVID's SPIFFE ID and the certificate checks), policy decisions over the
//! policy Python compiles (`Policy.to_json`), and the audit core: entries and their canonical
//! bytes, the RFC 9162 Merkle tree and its proofs, and signed checkpoints and receipts. The
//! audit core must match Python byte for byte, since both write and prove the same log; the
//! vectors in `tests/vectors/audit.json`, written by `tools/audit_vectors.py`, hold it to that.
//!
//! The first step of the compiled proxy stands beside them, started by nothing yet: the
//! `lienthong-gateway` binary ([`proxy::serve`]) terminates callers' mTLS and HTTP/2, admits
//! each call on its headers ([`admission`]) and forwards it to its upstream over mTLS.

pub mod admission;
pub mod audit;
pub mod audit_service;
pub mod body;
pub mod config;
pub mod deadline;
pub mod entry;
pub mod exchange;
pub mod handshake;
pub mod health;
pub mod identity;
pub mod limits;
pub mod log;
pub mod merkle;
pub mod messages;
pub mod metadata;
pub mod metrics;
pub mod note;
pub mod policy;
pub mod proxy;
pub mod reflection;
pub mod reload;
pub mod revocation;
pub mod status;
pub mod tls;
pub mod upstream;
pub mod wire;
