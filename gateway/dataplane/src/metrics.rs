//! The gateway's Prometheus metrics, with the names and labels of `gateway/metrics.py`, and
//! the plain-HTTP endpoint that serves them.
//!
//! Every label value is an identifier: a caller's SPIFFE ID (from a certificate the CA
//! signed, or `unknown`), a contract method's path (`unknown` for any other path: a path is
//! the caller's text), a gRPC status code name, a refusal reason, a handshake refusal's
//! category, a routed service. Nothing read from a message is ever a label.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The label of a caller without an identity, or of a path that is no contract method.
pub const UNKNOWN: &str = "unknown";

/// A forwarded call takes from well under a millisecond (a refusal) to the upstream deadline:
/// 0.5 ms to 10 s at roughly 2-2.5x steps, as the Python gateway's.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The scrape's media type: the registry encodes `OpenMetrics` text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    caller: String,
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refused {
    caller: String,
    method: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByMethod {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByCaller {
    caller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByReason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByService {
    service: String,
}

/// The gateway's metrics. A call is either refused before it starts, or started and later
/// finished; a started call is in flight for as long as its [`InFlight`] lives.
pub struct Metrics {
    registry: Registry,
    requests: Family<Answered, Counter>,
    duration: Family<ByMethod, Histogram, fn() -> Histogram>,
    in_flight: Family<ByCaller, Gauge>,
    rejections: Family<Refused, Counter>,
    handshake_failures: Family<ByReason, Counter>,
    handshake_unrecorded: Counter,
    upstream_up: Family<ByService, Gauge>,
    body_timeouts: Counter,
}

/// A started call, counted in flight until dropped.
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, at zero, in a registry of its own.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lienthong_gateway");
        let metrics = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            in_flight: Family::default(),
            rejections: Family::default(),
            handshake_failures: Family::default(),
            handshake_unrecorded: Counter::default(),
            upstream_up: Family::default(),
            body_timeouts: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Calls answered by the gateway, by caller, method and gRPC status code.",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from admitting a call to answering it, by method.",
            metrics.duration.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Calls admitted and not yet answered, by caller.",
            metrics.in_flight.clone(),
        );
        registry.register(
            "rejections",
            "Calls refused before forwarding, by caller, method and reason.",
            metrics.rejections.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes of callers refused, by reason category.",
            metrics.handshake_failures.clone(),
        );
        registry.register(
            "tls_handshake_failures_unrecorded",
            "Refused TLS handshakes that could not be recorded in the audit log.",
            metrics.handshake_unrecorded.clone(),
        );
        registry.register(
            "upstream_up",
            "1 when the service's upstream answers its health check SERVING, 0 when not.",
            metrics.upstream_up.clone(),
        );
        registry.register(
            "request_body_timeouts",
            "Admitted calls ended because their request's messages stopped arriving.",
            metrics.body_timeouts.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// A call of `caller` was admitted: in flight until the guard is dropped.
    #[must_use]
    pub fn started(&self, caller: &str) -> InFlight {
        let gauge = self
            .in_flight
            .get_or_create(&ByCaller {
                caller: caller.to_owned(),
            })
            .clone();
        gauge.inc();
        InFlight { gauge }
    }

    /// A started call ended with the status named `code` after `seconds`.
    pub fn finished(&self, caller: &str, method: &str, code: &'static str, seconds: f64) {
        self.answered(caller, method, code);
        self.duration
            .get_or_create(&ByMethod {
                method: method.to_owned(),
            })
            .observe(seconds);
    }

    /// A call was answered `code` without being started (refused, or no contract method).
    pub fn answered(&self, caller: &str, method: &str, code: &'static str) {
        self.requests
            .get_or_create(&Answered {
                caller: caller.to_owned(),
                method: method.to_owned(),
                code,
            })
            .inc();
    }

    /// A call was refused for `reason` and answered `code`; counted as answered as well, so
    /// that `requests_total` alone gives the error ratio.
    pub fn rejected(&self, caller: &str, method: &str, reason: &'static str, code: &'static str) {
        self.rejections
            .get_or_create(&Refused {
                caller: caller.to_owned(),
                method: method.to_owned(),
                reason,
            })
            .inc();
        self.answered(caller, method, code);
    }

    /// A caller's TLS handshake was refused for `reason` (`handshake::reason`'s set).
    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ByReason { reason })
            .inc();
    }

    /// A refused handshake could not be queued for the audit log.
    pub fn handshake_not_recorded(&self) {
        self.handshake_unrecorded.inc();
    }

    /// Whether `service`'s upstream answered its health check SERVING.
    pub fn upstream_up(&self, service: &str, up: bool) {
        self.upstream_up
            .get_or_create(&ByService {
                service: service.to_owned(),
            })
            .set(i64::from(up));
    }

    /// An admitted call's request body stopped arriving and the call was ended.
    pub fn body_timed_out(&self) {
        self.body_timeouts.inc();
    }

    /// The scrape: every metric as `OpenMetrics` text.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Serve `metrics` over plain HTTP/1.1 on `listener`, at any path, until dropped.
///
/// No TLS and no authentication: bind it to loopback or to the monitoring network only.
pub async fn serve(metrics: Arc<Metrics>, listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let scrape = service_fn(move |_request| {
                let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
                async move { Ok::<_, Infallible>(response) }
            });
            // A scraper that goes away concerns only its own connection.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), scrape)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_names_the_metrics_as_the_python_gateway() {
        let metrics = Metrics::new();
        let caller = "spiffe://lienthong.gov.vn/ministry/justice/adapter";
        let method = "/lienthong.population.v1.CitizenService/IssuePersonalIdentificationNumber";
        {
            let _in_flight = metrics.started(caller);
            metrics.finished(caller, method, "OK", 0.004);
        }
        metrics.rejected(UNKNOWN, UNKNOWN, "NO_IDENTITY", "UNAUTHENTICATED");
        metrics.upstream_up("lienthong.population.v1.CitizenService", true);
        let text = metrics.encode();
        for line in [
            format!(
                "lienthong_gateway_requests_total{{caller=\"{caller}\",method=\"{method}\",code=\"OK\"}} 1"
            ),
            format!("lienthong_gateway_in_flight_requests{{caller=\"{caller}\"}} 0"),
            format!(
                "lienthong_gateway_request_duration_seconds_bucket{{le=\"0.005\",method=\"{method}\"}} 1"
            ),
            "lienthong_gateway_rejections_total{caller=\"unknown\",method=\"unknown\",reason=\"NO_IDENTITY\"} 1"
                .to_owned(),
            "lienthong_gateway_upstream_up{service=\"lienthong.population.v1.CitizenService\"} 1"
                .to_owned(),
            "lienthong_gateway_request_body_timeouts_total 0".to_owned(),
        ] {
            assert!(text.lines().any(|sample| sample == line), "{line}\n{text}");
        }
    }
}
