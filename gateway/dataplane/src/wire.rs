//! The few protobuf messages the gateway itself reads or writes, derived with prost from
//! their `.proto` definitions (`google/rpc/status.proto`, `error_details.proto`, `any.proto`,
//! `grpc/health/v1/health.proto`, `lienthong/gateway/v1/audit_service.proto`); every other
//! message passes through unparsed.

use std::collections::BTreeMap;

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.ErrorInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorInfo {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(string, tag = "2")]
    pub domain: String,
    #[prost(btree_map = "string, string", tag = "3")]
    pub metadata: BTreeMap<String, String>,
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `google.rpc.BadRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BadRequest {
    #[prost(message, repeated, tag = "1")]
    pub field_violations: Vec<FieldViolation>,
}

/// `google.rpc.BadRequest.FieldViolation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FieldViolation {
    #[prost(string, tag = "1")]
    pub field: String,
    #[prost(string, tag = "2")]
    pub description: String,
}

/// `lienthong.gateway.v1.Checkpoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Checkpoint {
    #[prost(string, tag = "1")]
    pub origin: String,
    #[prost(int64, tag = "2")]
    pub tree_size: i64,
    #[prost(bytes = "vec", tag = "3")]
    pub root_hash: Vec<u8>,
    #[prost(string, tag = "4")]
    pub signed_note: String,
}

/// `lienthong.gateway.v1.GetLatestCheckpointRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetLatestCheckpointRequest {}

/// `lienthong.gateway.v1.GetLatestCheckpointResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetLatestCheckpointResponse {
    #[prost(message, optional, tag = "1")]
    pub checkpoint: Option<Checkpoint>,
}

/// `lienthong.gateway.v1.GetInclusionProofRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetInclusionProofRequest {
    #[prost(int64, tag = "1")]
    pub leaf_index: i64,
    #[prost(int64, tag = "2")]
    pub tree_size: i64,
}

/// `lienthong.gateway.v1.GetInclusionProofResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetInclusionProofResponse {
    #[prost(int64, tag = "1")]
    pub leaf_index: i64,
    #[prost(int64, tag = "2")]
    pub tree_size: i64,
    #[prost(bytes = "vec", tag = "3")]
    pub leaf_hash: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub hashes: Vec<Vec<u8>>,
}

/// `lienthong.gateway.v1.GetConsistencyProofRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetConsistencyProofRequest {
    #[prost(int64, tag = "1")]
    pub first_tree_size: i64,
    #[prost(int64, tag = "2")]
    pub second_tree_size: i64,
}

/// `lienthong.gateway.v1.GetConsistencyProofResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetConsistencyProofResponse {
    #[prost(int64, tag = "1")]
    pub first_tree_size: i64,
    #[prost(int64, tag = "2")]
    pub second_tree_size: i64,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub hashes: Vec<Vec<u8>>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `lienthong.gateway.v1.Exchange`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exchange {
    #[prost(int64, tag = "1")]
    pub leaf_index: i64,
    #[prost(string, tag = "2")]
    pub exchange_id: String,
    #[prost(string, tag = "3")]
    pub caller: String,
    #[prost(string, tag = "4")]
    pub upstream: String,
    #[prost(string, tag = "5")]
    pub method: String,
    #[prost(string, tag = "6")]
    pub purpose: String,
    #[prost(string, tag = "7")]
    pub on_behalf_of: String,
    #[prost(string, tag = "8")]
    pub request_id: String,
    #[prost(message, optional, tag = "9")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "10")]
    pub end_time: Option<Timestamp>,
    #[prost(int32, tag = "11")]
    pub status_code: i32,
    #[prost(int64, tag = "12")]
    pub request_bytes: i64,
    #[prost(int64, tag = "13")]
    pub response_bytes: i64,
    #[prost(bytes = "vec", tag = "14")]
    pub request_sha256: Vec<u8>,
    #[prost(bytes = "vec", tag = "15")]
    pub response_sha256: Vec<u8>,
}

/// `lienthong.gateway.v1.ListExchangesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListExchangesRequest {
    #[prost(int32, tag = "1")]
    pub page_size: i32,
    #[prost(string, tag = "2")]
    pub page_token: String,
    #[prost(string, tag = "3")]
    pub caller: String,
    #[prost(string, tag = "4")]
    pub method: String,
    #[prost(string, tag = "5")]
    pub request_id: String,
    #[prost(message, optional, tag = "6")]
    pub start_time_from: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub start_time_to: Option<Timestamp>,
}

/// `lienthong.gateway.v1.ListExchangesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListExchangesResponse {
    #[prost(message, repeated, tag = "1")]
    pub exchanges: Vec<Exchange>,
    #[prost(string, tag = "2")]
    pub next_page_token: String,
}
