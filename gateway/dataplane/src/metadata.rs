//! gRPC metadata keys of the lienthong exchange protocol, as `lienthong/metadata.py`.
//!
//! Callers send `lienthong-request-id`, `lienthong-purpose` and `lienthong-on-behalf-of`.
//! The gateway drops every other `lienthong-` key a caller sends and adds `lienthong-caller`,
//! the caller's verified identity, on its own mTLS leg, where upstreams trust it.

/// Every key of the exchange protocol starts so.
pub const PREFIX: &str = "lienthong-";
/// The caller's idempotency key.
pub const REQUEST_ID: &str = "lienthong-request-id";
/// The call's declared purpose, which the policy decides on.
pub const PURPOSE: &str = "lienthong-purpose";
/// The person a system calls for.
pub const ON_BEHALF_OF: &str = "lienthong-on-behalf-of";
/// The caller's verified identity, added by the gateway.
pub const CALLER: &str = "lienthong-caller";
/// The exchange's id, added by the gateway, as its audit entries carry it.
pub const EXCHANGE_ID: &str = "lienthong-exchange-id";
/// The leaf index of the exchange's request entry, added by the gateway.
pub const EXCHANGE_LEAF: &str = "lienthong-exchange-leaf";
/// The `lienthong-` keys a caller may send.
pub const CALLER_SUPPLIED: [&str; 3] = [REQUEST_ID, PURPOSE, ON_BEHALF_OF];

/// Whether `key` (lower case, as HTTP/2 carries it) is the exchange protocol's.
#[must_use]
pub fn is_lienthong(key: &str) -> bool {
    key.starts_with(PREFIX)
}

/// Whether a caller may send `key` upstream: any key but the protocol's own, and of those
/// only [`CALLER_SUPPLIED`].
#[must_use]
pub fn caller_may_send(key: &str) -> bool {
    !is_lienthong(key) || CALLER_SUPPLIED.contains(&key)
}
