//! The gateway's own `grpc.health.v1.Health/Check` (gRPC's health checking protocol),
//! answered without an upstream, admission or audit, as the Python gateway's health servicer.
//!
//! The empty service name is the gateway itself: SERVING while it accepts calls. A routed
//! service is SERVING while its upstream answers its own health check of that service
//! SERVING ([`upstream_serving`], asked every [`POLL_INTERVAL`]); any other name is
//! `NOT_FOUND`, as the protocol says. Draining, everything is `NOT_SERVING`.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, TE};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Limited};
use prost::Message as _;

use crate::body::RequestBody;
use crate::messages::{frame, unframe};
use crate::status::grpc_status;
use crate::upstream::Upstream;
use crate::wire::{HealthCheckRequest, HealthCheckResponse};

/// How often each routed service's upstream is asked, and the longest it may take to answer.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

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
    HealthCheckRequest::decode(unframe(body)?)
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
    frame(&HealthCheckResponse { status }.encode_to_vec())
}

/// Whether `upstream` answers, within [`POLL_INTERVAL`], that it serves `service`: a
/// `HealthCheckResponse` of SERVING and status OK. No connection, a refusal, another status,
/// a malformed answer or none in time are all "not serving".
pub async fn upstream_serving(upstream: &Upstream, authority: &Authority, service: &str) -> bool {
    let check = async {
        let mut sender = upstream.sender().await.ok()?;
        let message = HealthCheckRequest {
            service: service.to_owned(),
        };
        let uri = Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(authority.clone())
            .path_and_query(CHECK)
            .build()
            .ok()?;
        let mut request = Request::new(RequestBody::own(frame(&message.encode_to_vec())));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        // gRPC's TimeoutValue and TimeoutUnit: milliseconds.
        let timeout = format!("{}m", POLL_INTERVAL.as_millis());
        headers.insert("grpc-timeout", HeaderValue::from_str(&timeout).ok()?);
        let response = sender.send_request(request).await.ok()?;
        if grpc_status(response.headers()).is_some() {
            return None; // trailers-only: an error status
        }
        let answer = Limited::new(response.into_body(), MAX_REQUEST)
            .collect()
            .await
            .ok()?;
        if answer.trailers().and_then(grpc_status) != Some(0) {
            return None;
        }
        let reply = HealthCheckResponse::decode(unframe(&answer.to_bytes())?).ok()?;
        Some(reply.status == 1)
    };
    tokio::time::timeout(POLL_INTERVAL, check)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        frame(message).to_vec()
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
