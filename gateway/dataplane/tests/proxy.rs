//! The compiled proxy end to end, in process: a caller, the gateway and echoing upstreams,
//! all over mTLS and HTTP/2 on 127.0.0.1, with certificates made for each test by rcgen.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lienthong_dataplane::config::Config;
use lienthong_dataplane::note::{NoteSigner, NoteVerifier, Receipt};
use lienthong_dataplane::proxy::{serve, Gateway};
use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams,
    CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const GATEWAY: &str = "spiffe://lienthong.local/lienthong/gateway";
const REGISTRY: &str = "spiffe://lienthong.local/moj/civil-registry";
const POPULATION: &str = "spiffe://lienthong.local/mps/population";
const ALICE: &str = "spiffe://lienthong.local/moj/officers/alice";
const ECHO: &str = "/lienthong.test.v1.EchoService/Echo";
const COLLECT: &str = "/lienthong.test.v1.EchoService/Collect";
const IMPOSTOR: &str = "/lienthong.test.v1.ImpostorService/Echo";
const FAIL: &str = "/lienthong.test.v1.EchoService/Fail";
const GONE: &str = "/lienthong.test.v1.GoneService/Echo";
const UNROUTED: &str = "/lienthong.test.v1.UnroutedService/Echo";
const OTHER: &str = "/lienthong.test.v1.EchoService/Other";
const BODY_TIMEOUT_MS: u64 = 1000;
const ORIGIN: &str = "lienthong.local/audit";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// --- Certificates ------------------------------------------------------------------------

struct Ca {
    certificate: Certificate,
    key: KeyPair,
    serial: AtomicUsize,
}

/// A certificate chain and its key, as rustls and as PEM.
struct Issued {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    certificate_pem: String,
    key_pem: String,
    serial: u64,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "lienthong test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let certificate = params.self_signed(&key).expect("a CA certificate");
        Ca {
            certificate,
            key,
            serial: AtomicUsize::new(1),
        }
    }

    fn pem(&self) -> String {
        self.certificate.pem()
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.certificate.der().clone()).expect("a root");
        Arc::new(roots)
    }

    /// A leaf for `purpose` with these subject alternative names.
    fn issue(&self, purpose: ExtendedKeyUsagePurpose, names: Vec<SanType>) -> Issued {
        let serial = u64::try_from(self.serial.fetch_add(1, Ordering::Relaxed)).expect("small");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "a lienthong system");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        params.subject_alt_names = names;
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("a leaf key");
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("a leaf certificate");
        Issued {
            der: certificate.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            serial,
        }
    }

    fn server(&self, identity: &str) -> Issued {
        self.issue(
            ExtendedKeyUsagePurpose::ServerAuth,
            vec![uri(identity), dns("localhost")],
        )
    }

    fn client(&self, identity: &str) -> Issued {
        self.issue(ExtendedKeyUsagePurpose::ClientAuth, vec![uri(identity)])
    }

    fn crl(&self, revoked: &[u64]) -> String {
        CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(4000, 1, 1),
            crl_number: SerialNumber::from(1),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.certificate, &self.key)
        .expect("a CRL")
        .pem()
        .expect("PEM")
    }
}

fn uri(value: &str) -> SanType {
    SanType::URI(value.try_into().expect("an IA5 string"))
}

fn dns(value: &str) -> SanType {
    SanType::DnsName(value.try_into().expect("an IA5 string"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// --- An upstream that echoes ------------------------------------------------------------

/// What an upstream saw: the request headers of each call, and how many connections.
#[derive(Default)]
struct Seen {
    headers: Mutex<Vec<HeaderMap>>,
    connections: AtomicUsize,
}

impl Seen {
    fn calls(&self) -> Vec<HeaderMap> {
        self.headers.lock().expect("a lock").clone()
    }
}

/// Serve, over mTLS, an echo: the request body comes back as the response body, with trailers
/// grpc-status 0, a harmless `echo-trailer` and a forged `lienthong-receipt-bin`. Method
/// `Fail` answers trailers-only with `NOT_FOUND`, and a forged receipt there too.
async fn upstream(ca: &Ca, certificate: Issued) -> (String, Arc<Seen>) {
    let verifier = WebPkiClientVerifier::builder_with_provider(ca.roots(), provider())
        .build()
        .expect("a verifier");
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![certificate.der], certificate.key)
        .expect("a server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address").to_string();
    let seen = Arc::new(Seen::default());
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = recorded.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                seen.connections.fetch_add(1, Ordering::Relaxed);
                let echo = service_fn(move |request: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        // The gateway's own health checks, every second, are not calls.
                        if parts.uri.path() != "/grpc.health.v1.Health/Check" {
                            seen.headers.lock().expect("a lock").push(parts.headers);
                        }
                        if parts.uri.path() == FAIL {
                            return Ok(not_found());
                        }
                        let bytes = body.collect().await?.to_bytes();
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        trailers.insert("echo-trailer", HeaderValue::from_static("kept"));
                        trailers.insert(
                            "lienthong-receipt-bin",
                            HeaderValue::from_static("Zm9yZ2Vk"),
                        );
                        let body = Full::new(bytes)
                            .with_trailers(async { Some(Ok(trailers)) })
                            .map_err(|never| match never {})
                            .boxed();
                        let mut response = Response::new(body);
                        response
                            .headers_mut()
                            .insert("content-type", HeaderValue::from_static("application/grpc"));
                        Ok::<_, hyper::Error>(response)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), echo)
                    .await;
            });
        }
    });
    (address, seen)
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// A trailers-only `NOT_FOUND`, with a forged receipt among its headers.
fn not_found() -> Response<EchoBody> {
    let empty = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {});
    let mut response = Response::new(empty.boxed());
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static("5"));
    headers.insert("grpc-message", HeaderValue::from_static("no such record"));
    headers.insert(
        "lienthong-receipt-bin",
        HeaderValue::from_static("Zm9yZ2Vk"),
    );
    response
}

// --- The gateway ------------------------------------------------------------------------

struct Harness {
    ca: Ca,
    gateway: String,
    seen: Arc<Seen>,
    revoked: Issued,
    verifier: NoteVerifier,
    audit: PathBuf,
}

fn temporary_folder() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let folder = std::env::temp_dir().join(format!(
        "lienthong-proxy-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&folder).expect("a folder");
    folder
}

fn write(folder: &Path, name: &str, text: &str) {
    std::fs::write(folder.join(name), text).expect("a file");
}

fn grant(method: &str) -> String {
    format!(r#"{{"caller": "{ALICE}", "method": "{method}", "purposes": ["testing"]}}"#)
}

impl Harness {
    /// A gateway routing `EchoService` to an upstream that is `REGISTRY`, `ImpostorService` to
    /// one that is `POPULATION` but routed as `REGISTRY`, and `GoneService` to a closed port.
    async fn start() -> Self {
        let ca = Ca::new();
        let (registry, seen) = upstream(&ca, ca.server(REGISTRY)).await;
        let (impostor, _) = upstream(&ca, ca.server(POPULATION)).await;
        let gone = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
            listener.local_addr().expect("an address").to_string()
        };
        let folder = temporary_folder();
        let server = ca.server(GATEWAY);
        let client = ca.client(GATEWAY);
        let revoked = ca.client(ALICE);
        write(&folder, "ca.pem", &ca.pem());
        write(&folder, "gateway.pem", &server.certificate_pem);
        write(&folder, "gateway.key", &server.key_pem);
        write(&folder, "client.pem", &client.certificate_pem);
        write(&folder, "client.key", &client.key_pem);
        write(&folder, "ca.crl", &ca.crl(&[revoked.serial]));
        let key = SigningKey::from_bytes(&[7; 32]);
        let pem = key.to_pkcs8_pem(LineEnding::LF).expect("a PEM");
        write(&folder, "audit-log.key", &pem);
        let signer = NoteSigner::new(ORIGIN, key).expect("a signer");
        let verifier = NoteVerifier::new(&signer.verifier_key()).expect("a verifier");
        // The audit database stays open after start, so it lives in a folder of its own.
        let audit = temporary_folder().join("audit.db");
        let grants = [ECHO, COLLECT, FAIL, IMPOSTOR, GONE, UNROUTED]
            .map(grant)
            .join(",");
        write(
            &folder,
            "policy.json",
            &format!(r#"{{"version": 1, "grants": [{grants}], "prefix_grants": []}}"#),
        );
        let route =
            |address: &str| format!(r#"{{"address": "{address}", "identity": "{REGISTRY}"}}"#);
        let methods = [ECHO, COLLECT, FAIL, IMPOSTOR, GONE, UNROUTED, OTHER]
            .map(|path| {
                let streaming = path == COLLECT;
                format!(
                    r#""{path}": {{"client_streaming": {streaming}, "server_streaming": false}}"#
                )
            })
            .join(",");
        let config = format!(
            r#"{{"listen": "127.0.0.1:0",
                "tls": {{"ca_certificate": "ca.pem", "certificate": "gateway.pem", "private_key": "gateway.key"}},
                "upstream_tls": {{"ca_certificate": "ca.pem", "certificate": "client.pem", "private_key": "client.key"}},
                "crls": ["ca.crl"],
                "policy": "policy.json",
                "methods": {{{methods}}},
                "metrics_listen": null,
                "descriptors": "descriptors.binpb",
                "routes": {{"lienthong.test.v1.EchoService": {},
                            "lienthong.test.v1.ImpostorService": {},
                            "lienthong.test.v1.GoneService": {}}},
                "limits": {{"max_concurrent_streams": 16, "max_header_list_size": 16384,
                            "request_body_timeout_ms": {BODY_TIMEOUT_MS},
                            "rate_per_second": 1000.0, "burst": 1000, "max_concurrent": 64,
                            "max_message_bytes": 65536, "upstream_timeout_ms": 30000,
                            "stream_timeout_ms": 600000}},
                "audit": {{"database_url": "sqlite:///{}", "signing_key": "audit-log.key",
                           "origin": "{ORIGIN}", "commit_delay_us": 1000}}}}"#,
            route(&registry),
            route(&impostor),
            route(&gone),
            audit.display(),
        );
        write(&folder, "gateway.json", &config);
        std::fs::write(folder.join("descriptors.binpb"), []).expect("no descriptors");
        let config = Config::load(&folder.join("gateway.json")).expect("a configuration");
        let gateway = Gateway::from_config(&config).expect("a gateway");
        // Everything is read at start: the files are no longer needed.
        std::fs::remove_dir_all(&folder).expect("removed");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().expect("an address").to_string();
        tokio::spawn(serve(gateway, listener, std::future::pending()));
        Harness {
            ca,
            gateway: address,
            seen,
            revoked,
            verifier,
            audit,
        }
    }

    /// Every entry of the audit log, decoded, in leaf order.
    fn entries(&self) -> Vec<serde_json::Value> {
        let database = rusqlite::Connection::open(&self.audit).expect("the audit database");
        let mut query = database
            .prepare("SELECT entry FROM audit_entry ORDER BY leaf_index")
            .expect("a query");
        query
            .query_map([], |row| row.get::<_, Vec<u8>>(0))
            .expect("rows")
            .map(|entry| serde_json::from_slice(&entry.expect("an entry")).expect("JSON"))
            .collect()
    }

    /// An HTTP/2 connection to the gateway as the holder of `certificate`.
    async fn connect(
        &self,
        certificate: Issued,
    ) -> Result<hyper::client::conn::http2::SendRequest<TestBody>, BoxError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.ca.roots())
            .with_client_auth_cert(vec![certificate.der], certificate.key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(&self.gateway).await?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn alice(&self) -> hyper::client::conn::http2::SendRequest<TestBody> {
        self.connect(self.ca.client(ALICE))
            .await
            .expect("a connection")
    }
}

// --- The caller's side ------------------------------------------------------------------

/// A request body fed message by message by the test; unfinished while its sender lives.
struct TestBody {
    ready: VecDeque<Bytes>,
    more: Option<mpsc::UnboundedReceiver<Bytes>>,
}

impl TestBody {
    fn full(messages: Vec<Bytes>) -> Self {
        TestBody {
            ready: messages.into(),
            more: None,
        }
    }

    fn channel() -> (mpsc::UnboundedSender<Bytes>, Self) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let body = TestBody {
            ready: VecDeque::new(),
            more: Some(receiver),
        };
        (sender, body)
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(message) = self.ready.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        match self.more.as_mut() {
            None => Poll::Ready(None),
            Some(receiver) => receiver
                .poll_recv(cx)
                .map(|message| message.map(|message| Ok(Frame::data(message)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && self.more.is_none()
    }
}

/// A gRPC message: uncompressed, its length, its bytes.
fn message(payload: &[u8]) -> Bytes {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(payload.len()).expect("short").to_be_bytes());
    framed.extend_from_slice(payload);
    Bytes::from(framed)
}

fn request(path: &str, body: TestBody) -> Request<TestBody> {
    Request::builder()
        .method("POST")
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "5S")
        .header("lienthong-purpose", "testing")
        .header("lienthong-request-id", "r-1")
        .header("lienthong-caller", "spiffe://lienthong.local/forged")
        .header("lienthong-exchange-id", "forged")
        .body(body)
        .expect("a request")
}

/// What came back: headers, body and trailers (for a trailers-only answer, the headers).
struct Answer {
    headers: HeaderMap,
    body: Bytes,
    trailers: HeaderMap,
}

impl Answer {
    /// The one receipt of the answer, opened with the log's key.
    fn receipt(&self, verifier: &NoteVerifier) -> Receipt {
        let values: Vec<&HeaderValue> = self
            .trailers
            .get_all("lienthong-receipt-bin")
            .iter()
            .chain(self.headers.get_all("lienthong-receipt-bin"))
            .collect();
        assert_eq!(values.len(), 1, "one receipt: {values:?}");
        let padded = values[0].to_str().expect("ASCII");
        let note = STANDARD
            .decode(format!(
                "{padded}{}",
                "=".repeat((4 - padded.len() % 4) % 4)
            ))
            .expect("base64");
        let note = String::from_utf8(note).expect("UTF-8");
        Receipt::parse(verifier.open(&note).expect("signed by the log")).expect("a receipt")
    }

    fn status(&self) -> &str {
        let status = self
            .trailers
            .get("grpc-status")
            .or_else(|| self.headers.get("grpc-status"))
            .expect("a grpc-status");
        status.to_str().expect("ASCII")
    }

    fn message(&self) -> String {
        self.headers
            .get("grpc-message")
            .map(|value| value.to_str().expect("ASCII").to_owned())
            .unwrap_or_default()
    }
}

async fn call(
    sender: &mut hyper::client::conn::http2::SendRequest<TestBody>,
    request: Request<TestBody>,
) -> Answer {
    let answer = tokio::time::timeout(Duration::from_secs(20), async {
        let response = sender.send_request(request).await.expect("a response");
        assert_eq!(response.status(), 200);
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.expect("a body");
        let trailers = collected.trailers().cloned().unwrap_or_default();
        Answer {
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        }
    });
    answer.await.expect("an answer in time")
}

// --- The cases --------------------------------------------------------------------------

#[tokio::test]
async fn an_admitted_unary_call_comes_back_byte_for_byte() {
    let harness = Harness::start().await;
    let mut alice = harness.alice().await;
    let sent = message(b"\x0a\x05hello\xff\x00 binary");
    let answer = call(
        &mut alice,
        request(ECHO, TestBody::full(vec![sent.clone()])),
    )
    .await;
    assert_eq!(answer.status(), "0");
    assert_eq!(answer.body, sent);
    assert_eq!(answer.trailers["echo-trailer"], "kept");
    // The gateway's receipt, not the upstream's forgery: after the request entry, leaf 0.
    assert_eq!(answer.receipt(&harness.verifier).leaf_index(), 1);

    let seen = harness.seen.calls();
    let headers = &seen[0];
    let callers: Vec<&HeaderValue> = headers.get_all("lienthong-caller").iter().collect();
    assert_eq!(callers, [ALICE]);
    assert_eq!(headers["lienthong-purpose"], "testing");
    assert_eq!(headers["lienthong-request-id"], "r-1");
    // The caller's deadline, under the gateway's 30 s limit, in the finest unit that fits.
    assert_eq!(headers["grpc-timeout"], "5000000u");
    assert_eq!(headers["content-type"], "application/grpc");
    // The exchange's own id and request leaf, never the caller's forgery.
    let ids: Vec<&HeaderValue> = headers.get_all("lienthong-exchange-id").iter().collect();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], "forged");
    assert!(uuid::Uuid::parse_str(ids[0].to_str().expect("text")).is_ok());
    assert_eq!(headers["lienthong-exchange-leaf"], "0");
}

#[tokio::test]
async fn one_upstream_connection_serves_every_caller_connection() {
    let harness = Harness::start().await;
    let mut callers = [harness.alice().await, harness.alice().await];
    for number in 0..6_u8 {
        let sent = message(&[number; 3]);
        let caller = &mut callers[usize::from(number % 2)];
        let answer = call(caller, request(ECHO, TestBody::full(vec![sent.clone()]))).await;
        assert_eq!(answer.status(), "0");
        assert_eq!(answer.body, sent);
    }
    assert_eq!(harness.seen.calls().len(), 6);
    assert_eq!(harness.seen.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn an_upstream_error_comes_back_without_its_lienthong_keys() {
    let harness = Harness::start().await;
    let mut alice = harness.alice().await;
    let answer = call(
        &mut alice,
        request(FAIL, TestBody::full(vec![message(b"x")])),
    )
    .await;
    assert_eq!(answer.status(), "5");
    assert_eq!(answer.message(), "no such record");
    assert_eq!(answer.receipt(&harness.verifier).leaf_index(), 1);
}

#[tokio::test]
async fn a_client_streaming_call_passes_through_message_by_message() {
    let harness = Harness::start().await;
    let mut alice = harness.alice().await;
    let (more, body) = TestBody::channel();
    let messages: Vec<Bytes> = (0..4_u8)
        .map(|n| message(&vec![n; 100 * usize::from(n)]))
        .collect();
    let feeder = {
        let messages = messages.clone();
        tokio::spawn(async move {
            for message in messages {
                more.send(message).expect("the body is read");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Dropping the sender ends the request body.
        })
    };
    let answer = call(&mut alice, request(COLLECT, body)).await;
    feeder.await.expect("fed");
    assert_eq!(answer.status(), "0");
    assert_eq!(answer.body, messages.concat());
}

#[tokio::test]
async fn a_caller_without_identity_is_refused_before_its_body_is_read() {
    let harness = Harness::start().await;
    let anonymous = harness
        .ca
        .issue(ExtendedKeyUsagePurpose::ClientAuth, vec![dns("laptop")]);
    let mut sender = harness.connect(anonymous).await.expect("a connection");
    // Headers only: the body never ends, and the answer comes all the same.
    let (_more, body) = TestBody::channel();
    let answer = call(&mut sender, request(ECHO, body)).await;
    assert_eq!(answer.status(), "16");
    assert!(answer.message().contains("no lienthong identity"));
    assert!(answer.headers.contains_key("grpc-status-details-bin"));
    assert!(answer.body.is_empty());
    assert!(harness.seen.calls().is_empty());
}

#[tokio::test]
async fn a_call_not_granted_is_permission_denied() {
    let harness = Harness::start().await;
    let mut alice = harness.alice().await;
    let (_more, body) = TestBody::channel();
    let answer = call(&mut alice, request(OTHER, body)).await;
    assert_eq!(answer.status(), "7");
    assert_eq!(answer.message(), format!("{ALICE} is not granted {OTHER}"));
    // Refused on its headers: a completion only, the log's first leaf.
    assert_eq!(answer.receipt(&harness.verifier).leaf_index(), 0);
    let mut undeclared = request(ECHO, TestBody::full(vec![message(b"x")]));
    undeclared.headers_mut().remove("lienthong-purpose");
    assert_eq!(call(&mut alice, undeclared).await.status(), "7");
}

#[tokio::test]
async fn a_path_that_is_no_contract_method_is_unimplemented_and_recorded() {
    let harness = Harness::start().await;
    let mut alice = harness.alice().await;
    let path = "/lienthong.test.v1.EchoService/Missing";
    let answer = call(
        &mut alice,
        request(path, TestBody::full(vec![message(b"x")])),
    )
    .await;
    assert_eq!(answer.status(), "12");
    assert_eq!(
        answer.message(),
        format!("no method {path} in the contracts")
    );
    assert_eq!(answer.receipt(&harness.verifier).leaf_index(), 0);
    assert!(harness.seen.calls().is_empty());
}

#[tokio::test]
async fn an_unrouted_service_is_unimplemented() {
    let harness = Harness::start().await;
    let mut alice = harness.alice().await;
    let answer = call(
        &mut alice,
        request(UNROUTED, TestBody::full(vec![message(b"x")])),
    )
    .await;
    assert_eq!(answer.status(), "12");
    assert_eq!(
        answer.message(),
        "lienthong.test.v1.UnroutedService is not routed"
    );
}

#[tokio::test]
async fn an_upstream_with_another_identity_or_none_at_all_is_unavailable() {
    let harness = Harness::start().await;
    let mut alice = harness.alice().await;
    for (path, service) in [
        (IMPOSTOR, "lienthong.test.v1.ImpostorService"),
        (GONE, "lienthong.test.v1.GoneService"),
    ] {
        let answer = call(
            &mut alice,
            request(path, TestBody::full(vec![message(b"x")])),
        )
        .await;
        assert_eq!(answer.status(), "14", "{path}");
        let text = answer.message();
        assert!(text.contains(service), "{text}");
        assert!(!text.contains("127.0.0.1"), "{text}");
    }
    assert!(harness.seen.calls().is_empty());
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_is_given_up() {
    let harness = Harness::start().await;
    let mut alice = harness.alice().await;
    let (more, body) = TestBody::channel();
    more.send(message(b"first")).expect("sent");
    let answer = call(&mut alice, request(COLLECT, body)).await;
    assert_eq!(answer.status(), "4");
    assert!(answer.message().contains(&format!("{BODY_TIMEOUT_MS} ms")));
    drop(more);
}

#[tokio::test]
async fn a_call_reset_by_its_caller_while_forwarded_is_recorded_cancelled() {
    let harness = Harness::start().await;
    let mut alice = harness.alice().await;
    let (more, body) = TestBody::channel();
    more.send(message(b"first")).expect("sent");
    // The upstream answers once the request ends; the caller goes away before.
    let pending = tokio::spawn(async move { alice.send_request(request(COLLECT, body)).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while harness.seen.calls().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never forwarded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pending.abort();
    drop(more);
    let cancelled = |entries: Vec<serde_json::Value>| {
        entries
            .iter()
            .any(|entry| entry["method"] == COLLECT && entry["status"] == "CANCELLED")
    };
    while !cancelled(harness.entries()) {
        assert!(tokio::time::Instant::now() < deadline, "never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entries = harness.entries();
    let completion = entries
        .iter()
        .find(|entry| entry["status"] == "CANCELLED")
        .expect("the completion");
    let request_leaf = completion["request_leaf"]
        .as_u64()
        .expect("its request's leaf");
    assert_eq!(
        entries[usize::try_from(request_leaf).unwrap()]["kind"],
        "request"
    );
}

#[tokio::test]
async fn a_revoked_callers_calls_are_refused_revoked_and_recorded_under_its_identity() {
    let harness = Harness::start().await;
    let revoked = Issued {
        der: harness.revoked.der.clone(),
        key: harness.revoked.key.clone_key(),
        certificate_pem: String::new(),
        key_pem: String::new(),
        serial: harness.revoked.serial,
    };
    let mut sender = harness.connect(revoked).await.expect("a connection");
    let answer = call(
        &mut sender,
        request(ECHO, TestBody::full(vec![message(b"x")])),
    )
    .await;
    assert_eq!(answer.status(), "16");
    assert_eq!(answer.message(), "the client certificate is revoked");
    assert!(harness.seen.calls().is_empty());
    let entries = harness.entries();
    let refused = entries.last().expect("its completion");
    assert_eq!(refused["caller"], ALICE);
    assert_eq!(refused["status"], "UNAUTHENTICATED");
}

#[test]
fn the_binary_refuses_a_bad_configuration_in_one_line_with_exit_code_2() {
    let folder = temporary_folder();
    write(
        &folder,
        "gateway.json",
        r#"{"listen": "127.0.0.1:0", "surprise": 1}"#,
    );
    for arguments in [
        vec![
            "--config".to_owned(),
            folder.join("gateway.json").display().to_string(),
        ],
        vec![],
        vec![
            "--config".to_owned(),
            folder.join("missing.json").display().to_string(),
        ],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_lienthong-gateway"))
            .args(&arguments)
            .output()
            .expect("the binary runs");
        assert_eq!(output.status.code(), Some(2), "{arguments:?}");
        let stderr = String::from_utf8(output.stderr).expect("UTF-8");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("lienthong-gateway: "), "{stderr}");
    }
    std::fs::remove_dir_all(&folder).expect("removed");
}
