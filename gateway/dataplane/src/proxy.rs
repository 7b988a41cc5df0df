//! The compiled gateway's proxy: mTLS and HTTP/2 in front, admission on each call's headers,
//! and the admitted calls forwarded as they come, bytes untouched.
//!
//! Every exchange is recorded (`exchange`): a refused call's completion before its refusal is
//! answered; an admitted call's request entry before it is forwarded, its completion before
//! its status is released, with the receipt.
//!
//! This is `gateway/forwarding.py` in Rust, step by step. Not here yet: reflection, the
//! `AuditService`, a unary request's digest in its request entry, and reloading files that
//! change.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{CONTENT_TYPE, HOST, TE};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Peer};
use crate::audit::postgres::PostgresConnector;
use crate::audit::sqlite::SqliteConnector;
use crate::audit::store::Connector;
use crate::audit::{AuditError, AuditStore, StoreOptions};
use crate::audit_service;
use crate::body::{self, drop_lienthong, RequestBody, ResponseBody, Stopped};
use crate::config::{Cardinality, Config, Limits, TlsFiles};
use crate::deadline;
use crate::entry::bounded;
use crate::exchange::{Auditor, Exchange};
use crate::handshake;
use crate::health;
use crate::limits::{CallerLimits, Rejection};
use crate::log;
use crate::messages::{self, MessageDigest};
use crate::metadata;
use crate::metrics::Metrics;
use crate::note::{NoteError, NoteSigner};
use crate::policy::{Policy, PolicyError};
use crate::reflection::{self, Descriptors};
use crate::reload::{self, Watched};
use crate::revocation::{Listing, Revoked};
use crate::status::{self, Code, Status};
use crate::tls::{self, TlsError, UpstreamCredentials};
use crate::upstream::{Upstream, UpstreamError};

/// The longest a caller's TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest an exchange's entry may take to be durable before the call is refused.
pub const AUDIT_WAIT: Duration = Duration::from_secs(10);

/// How long calls in flight may go on once the gateway is told to stop, as the Python
/// servers' `DRAIN_SECONDS`.
pub const DRAIN: Duration = Duration::from_secs(5);

/// How long to wait before accepting again after `accept` failed (out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connection-specific headers (RFC 9113 section 8.2.2), never forwarded either way.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Why the gateway cannot start from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The policy file cannot be read.
    #[error("cannot read the policy {path}: {source}")]
    PolicyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// The policy file is not a compiled policy.
    #[error("the policy {path}: {source}")]
    Policy {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        source: PolicyError,
    },
    /// TLS material cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The audit log's signing key cannot be read or used.
    #[error("the audit signing key {path}: {problem}")]
    SigningKey {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        problem: String,
    },
    /// The descriptors file cannot be read or is no `FileDescriptorSet`.
    #[error("the descriptors {path}: {problem}")]
    Descriptors {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        problem: String,
    },
    /// The audit log's database cannot be opened.
    #[error("the audit log: {0}")]
    Audit(#[from] AuditError),
    /// A route's address gives no TLS server name or `:authority`.
    #[error("the route of {service}: {problem}")]
    Route {
        /// The service.
        service: String,
        /// What is wrong with its address.
        problem: String,
    },
}

/// Everything a call needs, built once from the configuration.
pub struct Gateway {
    /// Swapped whole when its file changes (`reload_files`).
    policy: ArcSwap<Policy>,
    /// The contracts' methods; the keys are the metric labels.
    methods: HashMap<&'static str, Cardinality>,
    routes: HashMap<String, Route>,
    limits: Limits,
    callers: CallerLimits,
    acceptor: ArcSwap<TlsAcceptor>,
    /// The callers' certificates the CRLs revoke, checked on every call.
    revoked: ArcSwap<Revoked>,
    /// The files read again when they change.
    files: Files,
    auditor: Arc<Auditor>,
    metrics: Arc<Metrics>,
    /// The contracts' descriptors, for server reflection.
    reflection: Arc<Descriptors>,
    /// Told to stop: health answers `NOT_SERVING` while calls in flight finish.
    draining: AtomicBool,
}

/// The files the gateway reads again when they change.
struct Files {
    tls: TlsFiles,
    crls: Vec<std::path::PathBuf>,
    upstream_tls: TlsFiles,
    policy: std::path::PathBuf,
}

/// Where an admitted call goes.
enum Target<'g> {
    /// Forwarded over the route.
    Upstream(&'g Route),
    /// Answered by the gateway itself (`audit_service`).
    Local,
}

/// Where a service goes: its upstream's connection, shared by every service it serves.
struct Route {
    upstream: Arc<Upstream>,
    authority: Authority,
    identity: String,
    /// Whether the upstream said, at its last health check, that it serves the service.
    up: AtomicBool,
}

impl Gateway {
    /// Read the policy and TLS files the configuration names, and set up every route.
    ///
    /// The audit log's database is opened (its schema created if needed); no upstream is
    /// connected yet: each is reached at its first call.
    ///
    /// # Errors
    ///
    /// A file cannot be read or used, the audit database cannot be opened, or a route's
    /// address is no TLS server name.
    pub fn from_config(config: &Config) -> Result<Self, StartError> {
        let text =
            std::fs::read_to_string(&config.policy).map_err(|source| StartError::PolicyFile {
                path: config.policy.clone(),
                source,
            })?;
        let policy = Policy::from_json(&text).map_err(|source| StartError::Policy {
            path: config.policy.clone(),
            source,
        })?;
        let server = tls::server_config(&config.tls)?;
        let revoked = Revoked::load(&config.tls.ca_certificate, &config.crls)?;
        let descriptors = std::fs::read(&config.descriptors)
            .map_err(|error| error.to_string())
            .and_then(|bytes| Descriptors::from_set(&bytes).map_err(|error| error.to_string()))
            .map_err(|problem| StartError::Descriptors {
                path: config.descriptors.clone(),
                problem,
            })?;
        let credentials = UpstreamCredentials::load(&config.upstream_tls)?;
        // One connection per (address, identity), as Python keeps one channel per address.
        let mut upstreams: HashMap<(&str, &str), Arc<Upstream>> = HashMap::new();
        let mut routes = HashMap::new();
        for (service, route) in &config.routes {
            let problem = |problem: String| StartError::Route {
                service: service.clone(),
                problem,
            };
            let authority: Authority = route
                .address
                .parse()
                .map_err(|_| problem(format!("{:?} is no authority", route.address)))?;
            let key = (route.address.as_str(), route.identity.as_str());
            let upstream = if let Some(upstream) = upstreams.get(&key) {
                upstream.clone()
            } else {
                let server_name = tls::server_name(route.host()).map_err(problem)?;
                let client = credentials.for_identity(&route.identity)?;
                let upstream = Arc::new(Upstream::new(route.address.clone(), server_name, client));
                upstreams.insert(key, upstream.clone());
                upstream
            };
            routes.insert(
                service.clone(),
                Route {
                    upstream,
                    authority,
                    identity: route.identity.clone(),
                    up: AtomicBool::new(false),
                },
            );
        }
        // Leaked once at start-up, so that each call's metric labels borrow them.
        let methods = config
            .methods
            .iter()
            .map(|(path, cardinality)| (&*Box::leak(path.clone().into_boxed_str()), *cardinality))
            .collect();
        let metrics = Arc::new(Metrics::new());
        Ok(Gateway {
            policy: ArcSwap::from_pointee(policy),
            methods,
            routes,
            limits: config.limits,
            callers: CallerLimits::new(config.limits.per_caller()),
            acceptor: ArcSwap::from_pointee(TlsAcceptor::from(server)),
            revoked: ArcSwap::from_pointee(revoked),
            files: Files {
                tls: config.tls.clone(),
                crls: config.crls.clone(),
                upstream_tls: config.upstream_tls.clone(),
                policy: config.policy.clone(),
            },
            auditor: Arc::new(open_audit(config, Arc::clone(&metrics))?),
            metrics,
            reflection: Arc::new(descriptors),
            draining: AtomicBool::new(false),
        })
    }

    /// The metrics, to serve on `/metrics`.
    #[must_use]
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The audit log, to close (with a last checkpoint) when the gateway stops.
    #[must_use]
    pub fn auditor(&self) -> Arc<Auditor> {
        Arc::clone(&self.auditor)
    }
}

/// The audit store the configuration names, and the signer of its receipts.
fn open_audit(config: &Config, metrics: Arc<Metrics>) -> Result<Auditor, StartError> {
    let audit = &config.audit;
    let key_problem = |problem: String| StartError::SigningKey {
        path: audit.signing_key.clone(),
        problem,
    };
    let pem =
        std::fs::read_to_string(&audit.signing_key).map_err(|e| key_problem(e.to_string()))?;
    let signer = || {
        NoteSigner::from_pkcs8_pem(&audit.origin, &pem)
            .map_err(|e: NoteError| key_problem(e.to_string()))
    };
    let connector: Arc<dyn Connector> = match audit.sqlite_path() {
        Some(path) => Arc::new(SqliteConnector::new(path)),
        None => Arc::new(PostgresConnector::new(&audit.database_url)?),
    };
    let options = StoreOptions {
        commit_delay: Duration::from_micros(audit.commit_delay_us),
        ..StoreOptions::default()
    };
    let store = AuditStore::open(connector, signer()?, options)?;
    Ok(Auditor::new(store, signer()?, AUDIT_WAIT, metrics))
}

/// Serve callers on `listener`, each routed service's health polled, until `stop` completes;
/// then drain: no new connection, health `NOT_SERVING`, every connection told to go away
/// (HTTP/2 GOAWAY), and the calls in flight given up to [`DRAIN`] to finish.
pub fn serve(
    gateway: Gateway,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send,
) -> impl Future<Output = ()> + Send {
    let gateway = Arc::new(gateway);
    async move {
        let polling = tokio::spawn(poll_upstreams(Arc::clone(&gateway)));
        let reloading = tokio::spawn(reload_files(Arc::clone(&gateway)));
        let graceful = GracefulShutdown::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        tokio::spawn(connection(gateway.clone(), tcp, peer, graceful.watcher()));
                    }
                    Err(error) => {
                        log::event(
                            "error",
                            "accept_failed",
                            serde_json::json!({"error": error.to_string()}),
                        );
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                () = &mut stop => break,
            }
        }
        drop(listener);
        gateway.draining.store(true, Ordering::Relaxed);
        log::event(
            "info",
            "server_draining",
            serde_json::json!({"server": "gateway", "grace_seconds": DRAIN.as_secs()}),
        );
        let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
        polling.abort();
        reloading.abort();
    }
}

/// Read the TLS material, CRLs and compiled policy again when their files change; a file
/// that cannot be used is logged and the last good one kept.
async fn reload_files(gateway: Arc<Gateway>) {
    let files = &gateway.files;
    let mut server = Watched::new(
        [
            files.tls.ca_certificate.clone(),
            files.tls.certificate.clone(),
            files.tls.private_key.clone(),
        ]
        .into_iter()
        .chain(files.crls.iter().cloned()),
    );
    let mut upstream = Watched::new([
        files.upstream_tls.ca_certificate.clone(),
        files.upstream_tls.certificate.clone(),
        files.upstream_tls.private_key.clone(),
    ]);
    let mut policy = Watched::new([files.policy.clone()]);
    let mut tick = tokio::time::interval(reload::INTERVAL);
    loop {
        tick.tick().await;
        if server.changed() {
            let loaded = tls::server_config(&files.tls).and_then(|config| {
                Ok((
                    config,
                    Revoked::load(&files.tls.ca_certificate, &files.crls)?,
                ))
            });
            match loaded {
                Ok((config, revoked)) => {
                    let count = revoked.len();
                    gateway.acceptor.store(Arc::new(TlsAcceptor::from(config)));
                    gateway.revoked.store(Arc::new(revoked));
                    reloaded("server_tls", serde_json::json!({"revoked": count}));
                }
                Err(error) => not_reloaded("server_tls", &error.to_string()),
            }
        }
        if upstream.changed() {
            match renew_upstreams(&gateway).await {
                Ok(()) => reloaded("upstream_tls", serde_json::json!({})),
                Err(error) => not_reloaded("upstream_tls", &error.to_string()),
            }
        }
        if policy.changed() {
            let read = std::fs::read_to_string(&files.policy)
                .map_err(|error| error.to_string())
                .and_then(|text| Policy::from_json(&text).map_err(|error| error.to_string()));
            match read {
                Ok(read) => {
                    gateway.policy.store(Arc::new(read));
                    reloaded("policy", serde_json::json!({}));
                }
                Err(error) => not_reloaded("policy", &error),
            }
        }
    }
}

async fn renew_upstreams(gateway: &Gateway) -> Result<(), TlsError> {
    let credentials = UpstreamCredentials::load(&gateway.files.upstream_tls)?;
    for route in gateway.routes.values() {
        route
            .upstream
            .renew(credentials.for_identity(&route.identity)?)
            .await;
    }
    Ok(())
}

fn reloaded(what: &str, mut fields: serde_json::Value) {
    fields["files"] = serde_json::Value::from(what);
    log::event("info", "files_reloaded", fields);
}

fn not_reloaded(what: &str, error: &str) {
    log::event(
        "error",
        "files_not_reloaded",
        serde_json::json!({"files": what, "error": error, "kept": "the last good ones"}),
    );
}

/// Ask every routed service's upstream for its health, every [`health::POLL_INTERVAL`].
async fn poll_upstreams(gateway: Arc<Gateway>) {
    loop {
        for (service, route) in &gateway.routes {
            let up = health::upstream_serving(&route.upstream, &route.authority, service).await;
            route.up.store(up, Ordering::Relaxed);
            gateway.metrics.upstream_up(service, up);
        }
        tokio::time::sleep(health::POLL_INTERVAL).await;
    }
}

/// One caller's connection: the handshake, then its calls, each its own HTTP/2 stream, until
/// the connection ends or `drain` tells it to go away.
async fn connection(gateway: Arc<Gateway>, tcp: TcpStream, address: SocketAddr, drain: Watcher) {
    // HTTP/2 writes headers, messages and trailers in small frames: Nagle's algorithm would
    // hold each behind the peer's delayed ACK.
    if tcp.set_nodelay(true).is_err() {
        return;
    }
    // A refused handshake has nothing to answer: it is recorded, with its reason.
    let acceptor = TlsAcceptor::clone(&gateway.acceptor.load());
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) if handshake::was_attempted(&error) => {
            gateway
                .auditor
                .refused_handshake(handshake::reason(&error), address);
            return;
        }
        Err(_) => {
            gateway.auditor.refused_handshake("TIMEOUT", address);
            return;
        }
        Ok(Err(_)) => return,
    };
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(AsRef::as_ref);
    let peer = Arc::new((Peer::of_leaf(leaf), leaf.and_then(Listing::of)));
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .max_concurrent_streams(gateway.limits.max_concurrent_streams)
        .max_header_list_size(gateway.limits.max_header_list_size);
    let connection_key = format!("connection {address}");
    let calls = {
        let gateway = gateway.clone();
        let key = connection_key.clone();
        service_fn(move |request| {
            let gateway = gateway.clone();
            let peer = peer.clone();
            let key = key.clone();
            async move {
                let (peer, listing) = &*peer;
                Ok::<_, Infallible>(gateway.call(peer, listing.as_ref(), &key, request).await)
            }
        })
    };
    // Its end, however it ends, concerns only this caller.
    let _ = drain
        .watch(builder.serve_connection(TokioIo::new(tls), calls))
        .await;
    gateway.callers.forget_refusals(&connection_key);
}

impl Gateway {
    /// Admit one call on its headers, then forward it, or answer the refusal at once; every
    /// exchange recorded.
    ///
    /// A refusal is charged to its caller, or to `connection` for a certificate without an
    /// identity: past the caller's rate, refusals are answered `RESOURCE_EXHAUSTED` without
    /// an entry, so that they cannot flood the log.
    async fn call(
        &self,
        peer: &Peer,
        listing: Option<&Listing>,
        connection: &str,
        request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        if !is_grpc(request.headers()) {
            // The gRPC over HTTP/2 protocol's answer to what is not gRPC.
            let mut response = Response::new(ResponseBody::default());
            *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return response;
        }
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        if path == health::CHECK {
            return self.health(body).await;
        }
        if reflection::PATHS.contains(&path) {
            return self.reflect(body);
        }
        let caller = match peer {
            Peer::Caller(caller) => Some(caller.as_str()),
            Peer::Refused(_) => None,
        };
        let method = self.methods.get_key_value(path).map(|(path, _)| *path);
        let mut exchange = Exchange::begin(self.auditor(), caller, path, method, &parts.headers);
        if method.is_none() {
            let status = Status::new(
                Code::Unimplemented,
                "UNKNOWN_METHOD",
                format!("no method {} in the contracts", bounded(path, 256)),
            );
            return self.refuse(exchange, connection, status).await;
        }
        // A certificate revoked since its connection was made, as the CRLs are now.
        if caller.is_some() && listing.is_some_and(|listing| self.revoked.load().lists(listing)) {
            let status = Status::new(
                Code::Unauthenticated,
                "REVOKED",
                "the client certificate is revoked",
            );
            return self.refuse(exchange, connection, status).await;
        }
        let policy = self.policy.load();
        let decided = admission::admit(peer, path, &parts.headers, &policy, |service| {
            if service == audit_service::SERVICE {
                Some(Target::Local)
            } else {
                self.routes.get(service).map(Target::Upstream)
            }
        })
        .and_then(|admitted| match self.callers.admit(admitted.caller) {
            Ok(slot) => Ok((admitted, slot)),
            Err(rejection) => Err(over_limit(admitted.caller, rejection)),
        });
        let (admitted, slot) = match decided {
            Ok(admitted) => admitted,
            // The body is dropped unread: a refused call's messages are never taken in.
            Err(status) => return self.refuse(exchange, connection, status).await,
        };
        exchange.holds(slot);
        let route = match admitted.route {
            Target::Upstream(route) => route,
            Target::Local => return self.serve_locally(exchange, body).await,
        };
        self.forward(
            exchange,
            &parts,
            body,
            admitted.caller,
            admitted.service,
            route,
        )
        .await
    }

    /// Forward an admitted call over `route`, its request entry recorded first.
    async fn forward(
        &self,
        mut exchange: Exchange,
        parts: &http::request::Parts,
        body: Incoming,
        caller: &str,
        service: &str,
        route: &Route,
    ) -> Response<ResponseBody> {
        exchange.routed_to(&route.identity);
        if exchange.record_request().await.is_err() {
            let status = Status::new(
                Code::Unavailable,
                "AUDIT_UNAVAILABLE",
                "the audit log is unavailable; the call was not forwarded",
            );
            return answer(&Arc::new(exchange), status).await;
        }
        let exchange = Arc::new(exchange);
        let unavailable = || {
            Status::new(
                Code::Unavailable,
                "UPSTREAM_UNAVAILABLE",
                format!("{service} is unavailable"),
            )
        };
        let stopped = Arc::new(Stopped::default());
        let body = RequestBody::new(
            body,
            self.limits.request_body_timeout(),
            self.limits.max_message_bytes,
            stopped.clone(),
            exchange.request_digest(),
        );
        // The caller's deadline, within the gateway's limit for the method's kind.
        let streaming = self
            .methods
            .get(parts.uri.path())
            .is_some_and(|kind| kind.client_streaming || kind.server_streaming);
        let limit = if streaming {
            self.limits.stream_timeout()
        } else {
            self.limits.upstream_timeout()
        };
        let timeout = parts
            .headers
            .get("grpc-timeout")
            .and_then(deadline::parse)
            .map_or(limit, |asked| asked.min(limit));
        let deadline = tokio::time::Instant::now() + timeout;
        let added = Added {
            caller,
            exchange_id: exchange.id(),
            request_leaf: exchange.request_leaf(),
            timeout,
        };
        let Some(request) = upstream_request(parts, body, &added, &route.authority) else {
            return answer(
                &exchange,
                Status::new(Code::Internal, "INTERNAL", "internal error"),
            )
            .await;
        };
        let mut sender = match route.upstream.sender().await {
            Ok(sender) => sender,
            Err(UpstreamError::Backoff) => return answer(&exchange, unavailable()).await,
            Err(error) => {
                // The address goes to the operator's log, never to the caller; once per
                // attempt, not once per call failed fast after it.
                log::event(
                    "warning",
                    "upstream_unreachable",
                    serde_json::json!({
                        "service": service,
                        "address": route.upstream.address(),
                        "error": error.to_string(),
                    }),
                );
                return answer(&exchange, unavailable()).await;
            }
        };
        match tokio::time::timeout_at(deadline, sender.send_request(request)).await {
            Ok(Ok(response)) => relay(response, exchange, self.limits.max_message_bytes).await,
            Ok(Err(_)) => {
                let status = self
                    .why_stopped(&stopped, deadline)
                    .unwrap_or_else(unavailable);
                answer(&exchange, status).await
            }
            Err(_) => answer(&exchange, past_deadline()).await,
        }
    }

    /// Why the upstream call failed, if the gateway stopped it: the caller's body was too
    /// slow or too large, or the deadline passed (the upstream may reset the call at it).
    fn why_stopped(&self, stopped: &Stopped, deadline: tokio::time::Instant) -> Option<Status> {
        if stopped.timed_out.load(Ordering::Relaxed) {
            self.metrics.body_timed_out();
            return Some(Status::new(
                Code::DeadlineExceeded,
                "REQUEST_BODY_TIMEOUT",
                format!(
                    "the request's messages did not arrive within {} ms",
                    self.limits.request_body_timeout_ms
                ),
            ));
        }
        if stopped.too_large.load(Ordering::Relaxed) {
            return Some(body::message_too_large(self.limits.max_message_bytes));
        }
        // The upstream's reset at its deadline arrives a moment before the gateway's own.
        let now = tokio::time::Instant::now();
        (now + DEADLINE_SLACK >= deadline).then(past_deadline)
    }
}

/// The longest reflection request read (a file or symbol name).
const REFLECTION_MAX_REQUEST: usize = 4096;

/// The next whole message of a gRPC stream's `pending` bytes, taken out of it; `Err` for a
/// compressed one.
fn next_message(pending: &mut bytes::BytesMut) -> Option<Result<bytes::Bytes, ()>> {
    let header = pending.get(..5)?;
    let length = usize::try_from(u32::from_be_bytes([
        header[1], header[2], header[3], header[4],
    ]))
    .ok()?;
    if header[0] != 0 {
        return Some(Err(()));
    }
    if pending.len() < 5 + length {
        return None;
    }
    let mut message = pending.split_to(5 + length);
    Some(Ok(message.split_off(5).freeze()))
}

/// How close to its deadline a failed upstream call counts as having run out of time.
const DEADLINE_SLACK: Duration = Duration::from_millis(50);

fn past_deadline() -> Status {
    Status::new(
        Code::DeadlineExceeded,
        "UPSTREAM_TIMEOUT",
        "the call did not complete before its deadline",
    )
}

/// What the gateway adds to a call on its way upstream.
struct Added<'a> {
    caller: &'a str,
    exchange_id: &'a str,
    request_leaf: Option<u64>,
    timeout: Duration,
}

impl Gateway {
    /// Server reflection: each request message of the stream answered as it arrives, each
    /// within the request body timeout and [`REFLECTION_MAX_REQUEST`] bytes.
    fn reflect(&self, mut body: Incoming) -> Response<ResponseBody> {
        let (frames, answers) = tokio::sync::mpsc::channel(4);
        let descriptors = Arc::clone(&self.reflection);
        let timeout = self.limits.request_body_timeout();
        tokio::spawn(async move {
            let mut pending = bytes::BytesMut::new();
            let status = loop {
                match tokio::time::timeout(timeout, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        pending.extend_from_slice(&data);
                        let mut compressed = false;
                        while let Some(message) = next_message(&mut pending) {
                            let Ok(message) = message else {
                                compressed = true;
                                break;
                            };
                            let answer = messages::frame(&descriptors.answer(&message));
                            if frames.send(hyper::body::Frame::data(answer)).await.is_err() {
                                return; // the caller went away
                            }
                        }
                        if compressed || pending.len() > REFLECTION_MAX_REQUEST + 5 {
                            break Some(Status::new(
                                Code::InvalidArgument,
                                "INVALID_ARGUMENT",
                                "a reflection request is compressed or too long",
                            ));
                        }
                    }
                    Ok(None) => break None,
                    Ok(Some(Err(_))) => return,
                    Err(_) => {
                        break Some(Status::new(
                            Code::DeadlineExceeded,
                            "REQUEST_BODY_TIMEOUT",
                            "the next reflection request did not arrive in time",
                        ))
                    }
                }
            };
            let mut trailers = HeaderMap::new();
            match status {
                Some(status) => status.write(&mut trailers),
                None => drop(trailers.insert("grpc-status", HeaderValue::from_static("0"))),
            }
            drop(frames.send(hyper::body::Frame::trailers(trailers)).await);
        });
        let mut response = Response::new(ResponseBody::stream(answers));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        response
    }

    /// Answer an admitted call to the gateway's own `AuditService`: its request entry
    /// recorded, its one message read within the request body timeout and
    /// `max_message_bytes`, the answer computed off the async threads, its
    /// completion and receipt recorded before the status.
    async fn serve_locally(
        &self,
        mut exchange: Exchange,
        body: Incoming,
    ) -> Response<ResponseBody> {
        exchange.routed_to(audit_service::UPSTREAM);
        if exchange.record_request().await.is_err() {
            let status = Status::new(
                Code::Unavailable,
                "AUDIT_UNAVAILABLE",
                "the audit log is unavailable; the call was not answered",
            );
            return answer(&Arc::new(exchange), status).await;
        }
        let exchange = Arc::new(exchange);
        // As any call, a message up to max_message_bytes: longer is RESOURCE_EXHAUSTED.
        let max = usize::try_from(self.limits.max_message_bytes).unwrap_or(usize::MAX);
        let read = Limited::new(body, max.saturating_add(5)).collect();
        let request = match tokio::time::timeout(self.limits.request_body_timeout(), read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                let status = body::message_too_large(self.limits.max_message_bytes);
                return answer(&exchange, status).await;
            }
            _ => {
                let status =
                    Status::new(Code::InvalidArgument, "INVALID_ARGUMENT", "invalid request")
                        .with_violation("", "not one request message in time");
                return answer(&exchange, status).await;
            }
        };
        exchange
            .request_digest()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .update(&request);
        let Some(message) = messages::unframe(&request).map(<[u8]>::to_vec) else {
            let status = Status::new(Code::InvalidArgument, "INVALID_ARGUMENT", "invalid request")
                .with_violation("", "not one uncompressed request message");
            return answer(&exchange, status).await;
        };
        let auditor = self.auditor();
        let path = exchange.method_label();
        let caller = exchange.caller().unwrap_or_default().to_owned();
        let answered = tokio::task::spawn_blocking(move || {
            audit_service::answer(auditor.store(), path, &message, &caller)
        })
        .await;
        let response = match answered {
            Ok(Ok(response)) => messages::frame(&response),
            Ok(Err(status)) => return answer(&exchange, status).await,
            Err(_) => {
                let status = Status::new(Code::Internal, "INTERNAL", "internal error");
                return answer(&exchange, status).await;
            }
        };
        let mut digest = MessageDigest::default();
        digest.update(&response);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let trailers = body::finish(exchange, digest, trailers, 0).await;
        let mut answer = Response::new(ResponseBody::message(response, trailers));
        answer
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        answer
    }

    /// Answer a call refused on its headers with `status`, its completion recorded first.
    ///
    /// The refusal is charged to its caller, or to `connection` for a certificate without an
    /// identity: past the caller's rate, it is answered `REFUSALS_LIMITED` without an entry.
    async fn refuse(
        &self,
        mut exchange: Exchange,
        connection: &str,
        status: Status,
    ) -> Response<ResponseBody> {
        if !self
            .callers
            .charge_refusal(exchange.caller().unwrap_or(connection))
        {
            let limited = refusals_limited();
            self.metrics.rejected(
                exchange.caller_label(),
                exchange.method_label(),
                limited.reason,
                status::code_name(u32::from(limited.code.number())),
            );
            return limited.into_response();
        }
        exchange.refused(status.reason);
        answer(&Arc::new(exchange), status).await
    }

    /// `grpc.health.v1.Health/Check`, answered here (`health`): its request read within
    /// the request body timeout and [`health::MAX_REQUEST`] bytes.
    async fn health(&self, body: Incoming) -> Response<ResponseBody> {
        let limited = Limited::new(body, health::MAX_REQUEST).collect();
        let service = match tokio::time::timeout(self.limits.request_body_timeout(), limited).await
        {
            Ok(Ok(collected)) => health::requested_service(&collected.to_bytes()),
            _ => None,
        };
        let Some(service) = service else {
            let status = Status::new(
                Code::InvalidArgument,
                "BAD_HEALTH_REQUEST",
                "not one HealthCheckRequest",
            );
            return status.into_response();
        };
        let draining = self.draining.load(Ordering::Relaxed);
        let serving = if let Some(route) = self.routes.get(&service) {
            if draining || !route.up.load(Ordering::Relaxed) {
                health::Serving::NotServing
            } else {
                health::Serving::Serving
            }
        } else if service.is_empty() {
            if draining {
                health::Serving::NotServing
            } else {
                health::Serving::Serving
            }
        } else {
            let status = Status::new(
                Code::NotFound,
                "UNKNOWN_SERVICE",
                format!("{} is not served here", bounded(&service, 256)),
            );
            return status.into_response();
        };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let mut response =
            Response::new(ResponseBody::message(health::response(serving), trailers));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        response
    }
}

/// The refusal of a call over its caller's `rejection`.
fn over_limit(caller: &str, rejection: Rejection) -> Status {
    let limit = match rejection {
        Rejection::RateLimited { .. } => "rate",
        Rejection::ConcurrencyLimited => "concurrency",
    };
    Status::new(
        Code::ResourceExhausted,
        rejection.reason(),
        format!("{caller} is over its {limit} limit"),
    )
    .with_metadata(
        "retry_after_seconds",
        format!("{:.3}", rejection.retry_after()),
    )
}

/// The answer to a caller refused more often than its rate: no entry for it.
fn refusals_limited() -> Status {
    Status::new(
        Code::ResourceExhausted,
        "REFUSALS_LIMITED",
        "too many refused calls; slow down",
    )
}

/// The gateway's own trailers-only answer with `status`, after its completion is recorded.
async fn answer(exchange: &Arc<Exchange>, status: Status) -> Response<ResponseBody> {
    let code = u32::from(status.code.number());
    let mut response: Response<ResponseBody> = status.into_response();
    let headers = std::mem::take(response.headers_mut());
    *response.headers_mut() = body::finish(
        Arc::clone(exchange),
        MessageDigest::default(),
        headers,
        code,
    )
    .await;
    response
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value == "application/grpc"
                || value.starts_with("application/grpc+")
                || value.starts_with("application/grpc;")
        })
}

/// The call as it goes upstream: the caller's headers but the hop-by-hop ones and the
/// `lienthong-` keys a caller may not set; with the verified `lienthong-caller`, the
/// exchange's id and request leaf, and `grpc-timeout` as the gateway clamped it. Everything
/// else, `grpc-encoding` included, goes as received.
fn upstream_request(
    parts: &http::request::Parts,
    body: RequestBody,
    added: &Added<'_>,
    authority: &Authority,
) -> Option<Request<RequestBody>> {
    let uri = Uri::builder()
        .scheme(Scheme::HTTPS)
        .authority(authority.clone())
        .path_and_query(parts.uri.path_and_query()?.clone())
        .build()
        .ok()?;
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    let headers = request.headers_mut();
    for (key, value) in &parts.headers {
        let name = key.as_str();
        if !HOP_BY_HOP.contains(&name) && *key != HOST && metadata::caller_may_send(name) {
            headers.append(key.clone(), value.clone());
        }
    }
    // gRPC requires it, and it is the one TE value HTTP/2 allows.
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(metadata::CALLER, HeaderValue::from_str(added.caller).ok()?);
    headers.insert(
        metadata::EXCHANGE_ID,
        HeaderValue::from_str(added.exchange_id).ok()?,
    );
    if let Some(leaf) = added.request_leaf {
        headers.insert(metadata::EXCHANGE_LEAF, HeaderValue::from(leaf));
    }
    headers.insert("grpc-timeout", deadline::format(added.timeout));
    Some(request)
}

/// The upstream's answer as the caller gets it: status, headers and body as they come, less
/// the `lienthong-` keys, the receipt added to its trailers. A trailers-only answer (the
/// status in its headers) is recorded before it is released.
async fn relay(
    response: Response<Incoming>,
    exchange: Arc<Exchange>,
    max_message: u64,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    drop_lienthong(&mut parts.headers);
    for key in HOP_BY_HOP {
        parts.headers.remove(key);
    }
    parts.extensions.clear();
    if let Some(code) = status::grpc_status(&parts.headers) {
        let headers = std::mem::take(&mut parts.headers);
        parts.headers = body::finish(exchange, MessageDigest::default(), headers, code).await;
        return Response::from_parts(parts, ResponseBody::default());
    }
    Response::from_parts(parts, ResponseBody::relay(body, exchange, max_message))
}
