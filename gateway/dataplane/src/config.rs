//! The compiled gateway's configuration: one JSON document, written by the Python control
//! plane and named by `lienthong-gateway --config FILE`.
//!
//! ```json
//! {"listen": "127.0.0.1:50051",
//!  "tls": {"ca_certificate": "ca.pem", "certificate": "gateway.pem", "private_key": "gateway.key"},
//!  "upstream_tls": {"ca_certificate": "…", "certificate": "…", "private_key": "…"},
//!  "crls": ["ca.crl"],
//!  "policy": "policy.json",
//!  "methods": {"/lienthong.civilregistry.v1.CivilRegistryService/RegisterBirth":
//!                {"client_streaming": false, "server_streaming": false}},
//!  "metrics_listen": "127.0.0.1:9464",
//!  "descriptors": "descriptors.binpb",
//!  "routes": {"lienthong.civilregistry.v1.CivilRegistryService":
//!               {"address": "127.0.0.1:50061",
//!                "identity": "spiffe://lienthong.local/moj/civil-registry"}},
//!  "limits": {"max_concurrent_streams": 100, "max_header_list_size": 16384,
//!             "request_body_timeout_ms": 30000, "rate_per_second": 200.0, "burst": 400,
//!             "max_concurrent": 64, "max_message_bytes": 4194304, "upstream_timeout_ms": 30000,
//!             "stream_timeout_ms": 600000},
//!  "audit": {"database_url": "sqlite:////var/lib/lienthong/audit.db",
//!            "signing_key": "audit-log.key", "origin": "lienthong.local/audit",
//!            "commit_delay_us": 1000}}
//! ```
//!
//! Every field is required (`metrics_listen` may be null: no endpoint) and unknown fields are refused: the file is written by a program,
//! so a missing or misspelt field is a bug to report, not a default to guess (a forgotten
//! `crls` would silently stop revocation). Relative paths are taken from the file's folder,
//! as `lienthong/config.py` takes them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::identity::check_spiffe_id;
use crate::limits::LimitSettings;

/// Why the configuration cannot be used; each is one line that names the field or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// The text is not a configuration document (unknown fields included).
    #[error("the configuration {path} is not a gateway configuration: {source}")]
    Json {
        /// The configuration file.
        path: PathBuf,
        /// Where and why, as `serde_json` says it.
        source: serde_json::Error,
    },
    /// A field has a value the gateway cannot work with.
    #[error("the configuration {path}: {field}: {problem}")]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// The field, dotted.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// The gateway's configuration, its paths resolved.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where callers connect.
    pub listen: SocketAddr,
    /// The server leg: the CA that signs callers' certificates, the gateway's own.
    pub tls: TlsFiles,
    /// The upstream leg: the CA that signs upstreams' certificates, the gateway's client one.
    pub upstream_tls: TlsFiles,
    /// CRL files (PEM) of the callers' CA; a revoked caller fails the handshake.
    pub crls: Vec<PathBuf>,
    /// The compiled policy, `Policy.to_json()` of `gateway/policy.py`.
    pub policy: PathBuf,
    /// Every method of the contracts, by path (`/package.Service/Method`): any other path is
    /// answered UNIMPLEMENTED, and never a metric label.
    pub methods: BTreeMap<String, Cardinality>,
    /// The contracts' descriptors (a serialized `FileDescriptorSet`), for server reflection.
    pub descriptors: PathBuf,
    /// Where `/metrics` is served over plain HTTP, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where each service (by its full name, `package.Service`) is served, and by whom.
    pub routes: BTreeMap<String, Route>,
    /// Bounds on what one connection and one call may hold.
    pub limits: Limits,
    /// Where every exchange is recorded.
    pub audit: Audit,
}

/// Whether a method's request and response are streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cardinality {
    /// The caller sends a stream of messages.
    pub client_streaming: bool,
    /// The upstream answers with a stream of messages.
    pub server_streaming: bool,
}

/// The audit log: its database and the key that signs its checkpoints and receipts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// `sqlite:///PATH` (an absolute path has four slashes) or a `PostgreSQL` URL, as
    /// `SQLAlchemy` names them.
    pub database_url: String,
    /// The Ed25519 private key (PKCS#8 PEM).
    pub signing_key: PathBuf,
    /// The log's origin: the first line of its checkpoints and the name of its key.
    pub origin: String,
    /// How long, in microseconds, a commit waits for more entries after one that held
    /// several ([`crate::audit::StoreOptions::commit_delay`]); 0: never.
    pub commit_delay_us: u64,
}

impl Audit {
    /// The `SQLite` file [`Audit::database_url`] names, or `None` for `PostgreSQL`.
    #[must_use]
    pub fn sqlite_path(&self) -> Option<&str> {
        self.database_url.strip_prefix("sqlite:///")
    }
}

/// A system's trust anchors, certificate chain and private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA certificates peers are verified against.
    pub ca_certificate: PathBuf,
    /// Our certificate, leaf first.
    pub certificate: PathBuf,
    /// Our private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

/// The upstream of one service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `host:port` (an IPv6 host in brackets).
    pub address: String,
    /// The SPIFFE ID the upstream's certificate must carry.
    pub identity: String,
}

impl Route {
    /// The host of [`Route::address`], without brackets: the TLS server name.
    #[must_use]
    pub fn host(&self) -> &str {
        split_address(&self.address).map_or("", |(host, _)| host)
    }
}

/// Bounds on a connection and a call.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most calls one connection may have open at once (HTTP/2 SETTINGS).
    pub max_concurrent_streams: u32,
    /// The most bytes of headers one call may send (HTTP/2 SETTINGS, as h2 counts them).
    pub max_header_list_size: u32,
    /// The longest wait, in milliseconds, for each next part of a request body, once it is
    /// being forwarded: a caller that stops sending does not hold the upstream call forever.
    pub request_body_timeout_ms: u64,
    /// Each caller's calls per second, on average (`[gateway.limits]` of the TOML).
    pub rate_per_second: f64,
    /// Each caller's calls at once above that average, at most.
    pub burst: u32,
    /// Each caller's calls in flight at once, at most.
    pub max_concurrent: u32,
    /// The longest message, in bytes, either way; a longer one is `RESOURCE_EXHAUSTED`.
    pub max_message_bytes: u64,
    /// The longest a unary call may take upstream, in milliseconds (the caller's deadline
    /// when shorter).
    pub upstream_timeout_ms: u64,
    /// The longest a streaming call may take upstream, in milliseconds.
    pub stream_timeout_ms: u64,
}

impl Limits {
    /// [`Limits::request_body_timeout_ms`] as a duration.
    #[must_use]
    pub const fn request_body_timeout(&self) -> Duration {
        Duration::from_millis(self.request_body_timeout_ms)
    }

    /// [`Limits::upstream_timeout_ms`] as a duration.
    #[must_use]
    pub const fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    /// [`Limits::stream_timeout_ms`] as a duration.
    #[must_use]
    pub const fn stream_timeout(&self) -> Duration {
        Duration::from_millis(self.stream_timeout_ms)
    }

    /// The per-caller limits.
    #[must_use]
    pub const fn per_caller(&self) -> LimitSettings {
        LimitSettings {
            rate_per_second: self.rate_per_second,
            burst: self.burst,
            max_concurrent: self.max_concurrent,
        }
    }
}

impl Config {
    /// Read and check the configuration file at `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not a configuration document, or a value is unusable.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        Self::from_json(&text, base).map_err(|error| error.in_file(path))
    }

    /// Check a configuration document whose relative paths are relative to `base`.
    ///
    /// # Errors
    ///
    /// As [`Config::load`], the path in the error left empty.
    pub fn from_json(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let mut config: Config =
            serde_json::from_str(text).map_err(|source| ConfigError::Json {
                path: PathBuf::new(),
                source,
            })?;
        config.check()?;
        config.resolve(base);
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        for path in self.methods.keys() {
            let service = path
                .strip_prefix('/')
                .and_then(|rest| rest.split_once('/'))
                .filter(|(service, method)| is_service_name(service) && is_word(method));
            if service.is_none() {
                return Err(invalid(
                    "methods",
                    format!("{path:?} is not a method's path (/package.Service/Method)"),
                ));
            }
        }
        for (service, route) in &self.routes {
            if !is_service_name(service) {
                return Err(invalid(
                    "routes",
                    format!("{service:?} is not a service's full name (package.Service)"),
                ));
            }
            if split_address(&route.address).is_none() {
                return Err(invalid(
                    format!("routes.{service}.address"),
                    format!("{:?} is not host:port", route.address),
                ));
            }
            if let Err(error) = check_spiffe_id(&route.identity) {
                return Err(invalid(format!("routes.{service}.identity"), error));
            }
        }
        let url = &self.audit.database_url;
        if self.audit.sqlite_path().is_none_or(str::is_empty)
            && !url.starts_with("postgresql://")
            && !url.starts_with("postgresql+psycopg://")
        {
            return Err(invalid(
                "audit.database_url",
                "neither sqlite:///PATH nor a postgresql:// URL",
            ));
        }
        let limits = &self.limits;
        for (field, value) in [
            (
                "max_concurrent_streams",
                u64::from(limits.max_concurrent_streams),
            ),
            (
                "max_header_list_size",
                u64::from(limits.max_header_list_size),
            ),
            ("request_body_timeout_ms", limits.request_body_timeout_ms),
            ("burst", u64::from(limits.burst)),
            ("max_concurrent", u64::from(limits.max_concurrent)),
            ("max_message_bytes", limits.max_message_bytes),
            ("upstream_timeout_ms", limits.upstream_timeout_ms),
            ("stream_timeout_ms", limits.stream_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(format!("limits.{field}"), "must be at least 1"));
            }
        }
        if !(limits.rate_per_second.is_finite() && limits.rate_per_second >= 0.0) {
            return Err(invalid(
                "limits.rate_per_second",
                "must be a finite number, at least 0",
            ));
        }
        Ok(())
    }

    fn resolve(&mut self, base: &Path) {
        for files in [&mut self.tls, &mut self.upstream_tls] {
            for path in [
                &mut files.ca_certificate,
                &mut files.certificate,
                &mut files.private_key,
            ] {
                *path = base.join(&*path);
            }
        }
        for path in &mut self.crls {
            *path = base.join(&*path);
        }
        self.policy = base.join(&self.policy);
        self.descriptors = base.join(&self.descriptors);
        self.audit.signing_key = base.join(&self.audit.signing_key);
    }
}

impl ConfigError {
    fn in_file(self, file: &Path) -> Self {
        match self {
            ConfigError::Json { source, .. } => ConfigError::Json {
                path: file.to_owned(),
                source,
            },
            ConfigError::Invalid { field, problem, .. } => ConfigError::Invalid {
                path: file.to_owned(),
                field,
                problem,
            },
            read @ ConfigError::Read { .. } => read,
        }
    }
}

fn invalid(field: impl Into<String>, problem: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        path: PathBuf::new(),
        field: field.into(),
        problem: problem.to_string(),
    }
}

/// `package.Service`: dotted words, at least two, none empty, no `/`.
fn is_service_name(name: &str) -> bool {
    name.contains('.') && name.split('.').all(is_word)
}

/// Letters, digits and `_`, at least one.
fn is_word(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// The host (brackets removed) and port of `host:port`.
fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&port| port != 0)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(routes: &str, limits: &str) -> String {
        format!(
            r#"{{"listen": "127.0.0.1:50051",
                "tls": {{"ca_certificate": "ca.pem", "certificate": "gw.pem", "private_key": "gw.key"}},
                "upstream_tls": {{"ca_certificate": "/pki/ca.pem", "certificate": "c.pem", "private_key": "c.key"}},
                "crls": ["ca.crl"],
                "policy": "policy.json",
                "methods": {{"/lienthong.civilregistry.v1.CivilRegistryService/RegisterBirth":
                            {{"client_streaming": false, "server_streaming": false}}}},
                "metrics_listen": null,
                "descriptors": "descriptors.binpb",
                "routes": {{{routes}}},
                "limits": {{{limits}}},
                "audit": {{"database_url": "sqlite:///audit.db", "signing_key": "audit-log.key",
                           "origin": "lienthong.local/audit", "commit_delay_us": 1000}}}}"#
        )
    }

    const ROUTE: &str = r#""lienthong.civilregistry.v1.CivilRegistryService":
        {"address": "127.0.0.1:50061", "identity": "spiffe://lienthong.local/moj/civil-registry"}"#;
    const LIMITS: &str = r#""max_concurrent_streams": 100, "max_header_list_size": 16384, "request_body_timeout_ms": 500,
        "rate_per_second": 200.0, "burst": 400, "max_concurrent": 64, "max_message_bytes": 4194304,
        "upstream_timeout_ms": 30000, "stream_timeout_ms": 600000"#;

    #[test]
    fn a_configuration_is_read_and_its_paths_resolved() {
        let config = Config::from_json(&document(ROUTE, LIMITS), Path::new("/etc/lt"))
            .expect("a configuration");
        assert_eq!(
            config.listen,
            "127.0.0.1:50051".parse().expect("an address")
        );
        assert_eq!(config.tls.ca_certificate, Path::new("/etc/lt/ca.pem"));
        assert_eq!(config.upstream_tls.ca_certificate, Path::new("/pki/ca.pem"));
        assert_eq!(config.crls, [PathBuf::from("/etc/lt/ca.crl")]);
        assert_eq!(config.policy, Path::new("/etc/lt/policy.json"));
        assert_eq!(config.audit.signing_key, Path::new("/etc/lt/audit-log.key"));
        assert_eq!(config.audit.sqlite_path(), Some("audit.db"));
        let route = &config.routes["lienthong.civilregistry.v1.CivilRegistryService"];
        assert_eq!(route.host(), "127.0.0.1");
        assert_eq!(
            config.limits.request_body_timeout(),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn unknown_or_missing_fields_are_refused() {
        let extra = document(ROUTE, LIMITS).replace(r#""crls""#, r#""extra": 1, "crls""#);
        let missing = document(ROUTE, LIMITS).replace(r#""crls": ["ca.crl"],"#, "");
        let in_route = document(&ROUTE.replace('}', r#", "weight": 2}"#), LIMITS);
        let in_limits = document(ROUTE, &format!(r#"{LIMITS}, "max_messages": 4"#));
        for text in [extra, missing, in_route, in_limits, String::new()] {
            let error = Config::from_json(&text, Path::new("")).expect_err("refused");
            assert!(matches!(error, ConfigError::Json { .. }), "{error}");
        }
    }

    #[test]
    fn unusable_values_are_refused_naming_their_field() {
        let cases = [
            (
                document(&ROUTE.replace("127.0.0.1:50061", "127.0.0.1"), LIMITS),
                "routes.lienthong.civilregistry.v1.CivilRegistryService.address",
            ),
            (
                document(
                    &ROUTE.replace("spiffe://lienthong.local", "spiffe://x"),
                    LIMITS,
                ),
                "routes.lienthong.civilregistry.v1.CivilRegistryService.identity",
            ),
            (
                document(
                    &ROUTE.replace("v1.CivilRegistryService", "v1/Civil"),
                    LIMITS,
                ),
                "routes",
            ),
            (
                document(ROUTE, LIMITS).replace("Service/RegisterBirth", "Service/Register/Birth"),
                "methods",
            ),
            (
                document(ROUTE, &LIMITS.replace("500", "0")),
                "limits.request_body_timeout_ms",
            ),
            (
                document(ROUTE, LIMITS).replace("sqlite:///audit.db", "mysql://x"),
                "audit.database_url",
            ),
            (
                document(ROUTE, &LIMITS.replace("200.0", "-1.0")),
                "limits.rate_per_second",
            ),
        ];
        for (text, field) in cases {
            match Config::from_json(&text, Path::new("")) {
                Err(ConfigError::Invalid { field: found, .. }) => assert_eq!(found, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(split_address("localhost:1"), Some(("localhost", 1)));
        assert_eq!(split_address("[::1]:50061"), Some(("::1", 50061)));
        for bad in [
            "",
            ":1",
            "host",
            "host:",
            "host:0",
            "host:70000",
            "::1:5",
            "[::1:5",
        ] {
            assert_eq!(split_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_error_names_the_file() {
        let error = Config::load(Path::new("/nonexistent/gateway.json")).expect_err("no file");
        assert!(error.to_string().contains("/nonexistent/gateway.json"));
    }
}
