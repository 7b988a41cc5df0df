//! The audit log's durable store: a port of `gateway/audit/store.py`.
//!
//! It writes the Python store's tables (`audit_head`, `audit_entry`, `audit_node`,
//! `audit_checkpoint`) with the same columns and bytes, so that the Python tools
//! (`lienthong audit verify`, tail, search, export) read what it wrote, and a Rust and a Python
//! gateway can append to one tree. [`store`] holds what both databases share — the group-commit
//! writer, checkpoints and proofs — over the [`store::Database`] trait; [`sqlite`] and
//! [`postgres`] implement it.

pub mod postgres;
pub mod sqlite;
pub mod store;

pub use store::{
    Appended, AuditError, AuditStore, CompletionQuery, PendingAppend, SignedCheckpoint,
    StoreOptions,
};
