//! The gateway's compiled data plane (issue 15).
//!
//! Built beside the Python gateway and switched over once the whole suite passes against it.
//! This first step holds decisions every call needs and that must agree with the Python
//! control plane: caller identity (the X.509-SVID's SPIFFE ID and the certificate checks)
//! and policy decisions over the policy Python compiles (`Policy.to_json`).

pub mod identity;
pub mod policy;
