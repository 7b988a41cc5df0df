//! The gateway's own gRPC answers: trailers-only responses carrying a status.
//!
//! As `lienthong/grpc_server.py`'s `status_of`, every refusal carries, besides `grpc-status`
//! and `grpc-message`, a `google.rpc.Status` in `grpc-status-details-bin` whose one detail is
//! an `ErrorInfo` with the refusal's reason and the gateway's domain, so that callers can
//! tell refusals apart by reason, whichever gateway answered.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use prost::Message as _;

use crate::wire::{Any, BadRequest, ErrorInfo, FieldViolation, RpcStatus};

/// The `ErrorInfo` domain of the gateway's refusals (`gateway/forwarding.py`'s `DOMAIN`).
pub const DOMAIN: &str = "gateway.lienthong.gov.vn";

const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";

/// The gRPC status codes the gateway answers with itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 3: the request is malformed.
    InvalidArgument,
    /// 4: the request's messages did not arrive in time.
    DeadlineExceeded,
    /// 5: what the request names does not exist.
    NotFound,
    /// 7: the policy does not grant the call.
    PermissionDenied,
    /// 8: the caller is over its limits.
    ResourceExhausted,
    /// 11: the request names something past what exists (a tree beyond its checkpoint).
    OutOfRange,
    /// 12: no upstream serves the service.
    Unimplemented,
    /// 13: the gateway failed.
    Internal,
    /// 14: the upstream cannot be reached, or is not who its route says.
    Unavailable,
    /// 16: the caller's certificate does not identify it.
    Unauthenticated,
}

impl Code {
    /// The code's number on the wire.
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::OutOfRange => 11,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::Unauthenticated => 16,
        }
    }
}

/// A refusal: its code, a reason label (`ErrorInfo.reason`) and a message for people.
/// The names of gRPC's status codes, by number, as grpcio's `StatusCode` names them.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `code` if gRPC defines it, else UNKNOWN (2), as a gRPC client reads an unknown code.
#[must_use]
pub fn known_code(code: u32) -> u32 {
    if (code as usize) < CODE_NAMES.len() {
        code
    } else {
        2
    }
}

/// The name of a code [`known_code`] returned.
#[must_use]
pub fn code_name(code: u32) -> &'static str {
    CODE_NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// The `grpc-status` of headers or trailers, if they carry one (UNKNOWN if unreadable).
#[must_use]
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse().ok())
            .map_or(2, known_code),
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The gRPC status code.
    pub code: Code,
    /// An `UPPER_SNAKE` label, as the Python gateway's reasons.
    pub reason: &'static str,
    /// The `grpc-message`; never an internal address.
    pub message: String,
    /// The `ErrorInfo`'s metadata (`retry_after_seconds`, ...).
    pub metadata: Vec<(&'static str, String)>,
    /// The request's fields that are wrong, and why: a `BadRequest` detail when any.
    pub violations: Vec<(String, String)>,
}

impl Status {
    /// A status of `code` with `reason` and `message`.
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Status {
            code,
            reason,
            message: message.into(),
            metadata: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// The same status with a field violation (`field` may be empty: the whole request).
    #[must_use]
    pub fn with_violation(mut self, field: &str, description: &str) -> Self {
        self.violations
            .push((field.to_owned(), description.to_owned()));
        self
    }

    /// The same status with `key: value` in its `ErrorInfo`'s metadata.
    #[must_use]
    pub fn with_metadata(mut self, key: &'static str, value: String) -> Self {
        self.metadata.push((key, value));
        self
    }

    /// The trailers-only answer: HTTP 200, `application/grpc`, the status in the headers.
    ///
    /// `B::default()` must be an empty body that reports its end, so that the headers go
    /// out with `END_STREAM`.
    #[must_use]
    pub fn into_response<B: Default>(self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        self.write(headers);
        response
    }

    /// Put the status into `headers` (or trailers): code, message and details.
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.code.number())),
        );
        // Both are built from ASCII only, so they are valid header values.
        if let Ok(message) = HeaderValue::from_str(&percent_encode(&self.message)) {
            headers.insert("grpc-message", message);
        }
        if let Ok(details) = HeaderValue::from_str(&STANDARD_NO_PAD.encode(self.details())) {
            headers.insert("grpc-status-details-bin", details);
        }
    }

    /// The serialized `google.rpc.Status` with its `ErrorInfo`.
    fn details(&self) -> Vec<u8> {
        let error_info = ErrorInfo {
            reason: self.reason.to_owned(),
            domain: DOMAIN.to_owned(),
            metadata: self
                .metadata
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone()))
                .collect(),
        };
        let mut details = vec![Any {
            type_url: ERROR_INFO_TYPE.to_owned(),
            value: error_info.encode_to_vec(),
        }];
        if !self.violations.is_empty() {
            let bad_request = BadRequest {
                field_violations: self
                    .violations
                    .iter()
                    .map(|(field, description)| FieldViolation {
                        field: field.clone(),
                        description: description.clone(),
                    })
                    .collect(),
            };
            details.push(Any {
                type_url: BAD_REQUEST_TYPE.to_owned(),
                value: bad_request.encode_to_vec(),
            });
        }
        RpcStatus {
            code: i32::from(self.code.number()),
            message: self.message.clone(),
            details,
        }
        .encode_to_vec()
    }
}

/// `grpc-message` encoding: every byte outside printable ASCII, and `%`, as `%XX`.
#[must_use]
pub fn percent_encode(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("plain text"), "plain text");
        assert_eq!(percent_encode("100% đúng\n"), "100%25 %C4%91%C3%BAng%0A");
    }

    #[test]
    fn details_are_the_status_python_serializes() {
        // google.rpc.Status(code=7, message="m", details=[ErrorInfo(reason="NOT_GRANTED",
        // domain="gateway.lienthong.gov.vn")]).SerializeToString(), from the Python side.
        let python = "080712016d1a530a28747970652e676f6f676c65617069732e636f6d2f676f6f676c65\
                      2e7270632e4572726f72496e666f12270a0b4e4f545f4752414e544544121867617465\
                      7761792e6c69656e74686f6e672e676f762e766e";
        let status = Status::new(Code::PermissionDenied, "NOT_GRANTED", "m");
        assert_eq!(hex::encode(status.details()), python);
    }

    #[test]
    fn metadata_travels_in_the_error_info() {
        let status = Status::new(Code::ResourceExhausted, "RATE_LIMITED", "slow down")
            .with_metadata("retry_after_seconds", "2".to_owned());
        let decoded = RpcStatus::decode(&status.details()[..]).unwrap();
        assert_eq!(decoded.code, 8);
        let info = ErrorInfo::decode(&decoded.details[0].value[..]).unwrap();
        assert_eq!(info.reason, "RATE_LIMITED");
        assert_eq!(info.metadata["retry_after_seconds"], "2");
    }

    #[test]
    fn a_refusal_is_a_trailers_only_answer() {
        let response: Response<()> =
            Status::new(Code::Unauthenticated, "NO_IDENTITY", "who are you?").into_response();
        let headers = response.headers();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["grpc-status"], "16");
        assert_eq!(headers["grpc-message"], "who are you?");
        assert!(headers.contains_key("grpc-status-details-bin"));
    }
}
