//! Refused TLS handshakes, each recorded in the audit log with its reason and its peer.
//!
//! The Python gateway could only read grpc's stderr for these (`gateway/handshake_audit.py`);
//! here rustls hands the refusal to the gateway itself. The entry keeps that module's shape
//! (docs/audit.md): a completion with method `tls-handshake`, no caller, status
//! UNAUTHENTICATED and the reason category in `purpose`, and now also the peer's address in
//! `request_id` (no call was made, so there is no request id) and the leg: `upstream` is null
//! for a caller's handshake with the gateway.

use std::net::SocketAddr;
use std::time::SystemTime;

use rustls::{CertificateError, Error};

use crate::entry::{AuditEntry, Kind};
use crate::exchange::rfc3339;
use crate::identity::Refusal;

/// The method of a refused handshake's entry: never a gRPC path, which starts with `/`.
pub const HANDSHAKE_METHOD: &str = "tls-handshake";

/// The reason category of a refused handshake: `gateway/handshake_audit.py`'s vocabulary,
/// with our own verifier's refusals (`identity::Refusal::reason`) beside it.
#[must_use]
pub fn reason(error: &std::io::Error) -> &'static str {
    let Some(error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
    else {
        return "OTHER";
    };
    match error {
        Error::InvalidCertificate(certificate) => certificate_reason(certificate),
        Error::NoCertificatesPresented => "NO_CERTIFICATE",
        Error::AlertReceived(_) => "PEER_REFUSED",
        _ => "OTHER",
    }
}

fn certificate_reason(error: &CertificateError) -> &'static str {
    match error {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "EXPIRED",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "NOT_YET_VALID"
        }
        CertificateError::Revoked => "REVOKED",
        // A signature our CA's key does not verify: issued by someone else under its name.
        CertificateError::UnknownIssuer | CertificateError::BadSignature => "UNTRUSTED_ISSUER",
        // webpki verifies no SHA-1 (or weaker) signature at all.
        CertificateError::UnsupportedSignatureAlgorithmContext { .. } => {
            Refusal::WeakSignature.reason()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "WRONG_PURPOSE"
        }
        CertificateError::Other(other) => other
            .0
            .downcast_ref::<Refusal>()
            .map_or("UNVERIFIED", |refusal| refusal.reason()),
        _ => "UNVERIFIED",
    }
}

/// Whether a failed accept was a handshake at all: a peer that connects and goes away
/// without a word (a port probe, a load balancer's check) refused nothing.
#[must_use]
pub fn was_attempted(error: &std::io::Error) -> bool {
    error.kind() != std::io::ErrorKind::UnexpectedEof
}

/// The entry of a caller's handshake that `peer` failed for `reason`.
#[must_use]
pub fn refusal_entry(reason: &str, peer: SocketAddr) -> AuditEntry {
    let now = rfc3339(SystemTime::now());
    AuditEntry {
        purpose: Some(reason.to_owned()),
        request_id: Some(peer.to_string()),
        end_time: Some(now.clone()),
        status_code: Some(16),
        status: Some("UNAUTHENTICATED".to_owned()),
        ..AuditEntry::begun(Kind::Completion, HANDSHAKE_METHOD.to_owned(), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn io(error: Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn each_refusal_has_its_category() {
        let cases = [
            (
                Error::InvalidCertificate(CertificateError::Expired),
                "EXPIRED",
            ),
            (
                Error::InvalidCertificate(CertificateError::Revoked),
                "REVOKED",
            ),
            (
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "UNTRUSTED_ISSUER",
            ),
            (
                Error::InvalidCertificate(CertificateError::UnsupportedSignatureAlgorithmContext {
                    signature_algorithm_id: vec![],
                    supported_algorithms: vec![],
                }),
                "WEAK_SIGNATURE",
            ),
            (
                Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                    Refusal::WeakRsaKey,
                )))),
                "WEAK_RSA_KEY",
            ),
            (Error::NoCertificatesPresented, "NO_CERTIFICATE"),
            (
                Error::AlertReceived(rustls::AlertDescription::BadCertificate),
                "PEER_REFUSED",
            ),
            (Error::HandshakeNotComplete, "OTHER"),
        ];
        for (error, expected) in cases {
            assert_eq!(reason(&io(error)), expected);
        }
        assert_eq!(reason(&std::io::Error::other("plain")), "OTHER");
    }

    #[test]
    fn a_silent_peer_attempted_no_handshake() {
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(!was_attempted(&eof));
        assert!(was_attempted(&io(Error::NoCertificatesPresented)));
    }

    #[test]
    fn the_entry_names_the_peer_and_the_reason() {
        let entry = refusal_entry("EXPIRED", "127.0.0.1:5555".parse().expect("an address"));
        assert_eq!(entry.method, HANDSHAKE_METHOD);
        assert_eq!(entry.purpose.as_deref(), Some("EXPIRED"));
        assert_eq!(entry.request_id.as_deref(), Some("127.0.0.1:5555"));
        assert_eq!(entry.status_code, Some(16));
        assert!(entry.caller.is_none() && entry.upstream.is_none());
        assert_eq!(
            AuditEntry::decode(&entry.encode()).expect("canonical"),
            entry
        );
    }
}
