//! The gateway's own `grpc.health.v1.Health/Check` (gRPC's health checking protocol),
//! answered without an upstream, admission or audit, as the Python gateway's health servicer.
//!
//! The empty service name is the gateway itself: SERVING while it accepts calls. A routed
//! service is SERVING unless its upstream is in its reconnect backoff (`NOT_SERVING`); any
//! other name is `NOT_FOUND`, as the protocol says.

use bytes::Bytes;
use prost::Message as _;

use crate::wire::{HealthCheckRequest, HealthCheckResponse};

/// The method's path.
pub const CHECK: &str = "/grpc.health.v1.Health/Check";

/// The most bytes of a request the gateway reads: a service name and its framing.
pub const MAX_REQUEST: usize = 1024;

/// `HealthCheckResponse.ServingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// 1.
    Serving,
    /// 2.
    NotServing,
}

/// The service name a `HealthCheckRequest` message (its gRPC framing included) asks about;
/// `None` unless the body is exactly one uncompressed, well-formed message.
#[must_use]
pub fn requested_service(body: &[u8]) -> Option<String> {
    let (&compressed, rest) = body.split_first()?;
    let (length, message) = rest.split_at_checked(4)?;
    let length = usize::try_from(u32::from_be_bytes(length.try_into().ok()?)).ok()?;
    if compressed != 0 || message.len() != length {
        return None;
    }
    HealthCheckRequest::decode(message)
        .ok()
        .map(|request| request.service)
}

/// The framed `HealthCheckResponse` of `status`.
#[must_use]
pub fn response(status: Serving) -> Bytes {
    let status = match status {
        Serving::Serving => 1,
        Serving::NotServing => 2,
    };
    let message = HealthCheckResponse { status }.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    // The message is a few bytes: its length fits a u32.
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut body = vec![0];
        body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        body.extend_from_slice(message);
        body
    }

    #[test]
    fn the_service_name_is_read_from_the_request() {
        assert_eq!(requested_service(&framed(b"")).as_deref(), Some(""));
        let named = framed(b"\x0a\x05a.b.C");
        assert_eq!(requested_service(&named).as_deref(), Some("a.b.C"));
        // An unknown varint field and an unknown length-delimited one are skipped.
        let extra = framed(b"\x10\x96\x01\x1a\x02xy\x0a\x01S");
        assert_eq!(requested_service(&extra).as_deref(), Some("S"));
    }

    #[test]
    fn malformed_requests_are_none() {
        for bad in [
            Vec::new(),
            vec![0, 0, 0],
            vec![1, 0, 0, 0, 0],                    // compressed
            vec![0, 0, 0, 0, 3, 0x0a, 0x05],        // the name is cut short
            framed(b"\x0a\x02\xff\xfe"),            // not UTF-8
            framed(b"\x0a\x05a.b.C")[..7].to_vec(), // the framing promises more
        ] {
            assert_eq!(requested_service(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_response_is_one_framed_message() {
        assert_eq!(&response(Serving::Serving)[..], &[0, 0, 0, 0, 2, 8, 1]);
        assert_eq!(response(Serving::NotServing)[6], 2);
    }
}
