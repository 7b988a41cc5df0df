//! One HTTP/2 connection per upstream, over mTLS, shared by every call to it.
//!
//! Calls are streams of the one connection (hyper's `SendRequest` is a cheap handle to it). A
//! connection that closed is made again by the next call; after a failed attempt, calls fail
//! fast for [`RETRY_AFTER`], as a gRPC channel in `TRANSIENT_FAILURE` does, rather than each
//! waiting out its own connection attempt.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::{timeout, Instant};
use tokio_rustls::TlsConnector;

use crate::body::RequestBody;

/// The longest a TCP connection and TLS handshake to an upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long calls fail fast after a failed connection attempt.
pub const RETRY_AFTER: Duration = Duration::from_millis(100);

/// Why no connection to the upstream could be had; for the log, never for the caller.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The last attempt failed a moment ago.
    #[error("the last connection attempt failed less than {RETRY_AFTER:?} ago")]
    Backoff,
    /// The TCP connection or TLS handshake did not complete in time.
    #[error("no connection within {CONNECT_TIMEOUT:?}")]
    Timeout,
    /// TCP or TLS failed (a wrong identity is a TLS failure).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2: {0}")]
    Http(#[from] hyper::Error),
}

/// An upstream: where it is, who it must be, and the connection to it.
pub struct Upstream {
    address: String,
    server_name: ServerName<'static>,
    /// Replaced when the gateway's client certificate is renewed ([`Upstream::renew`]).
    connector: std::sync::Mutex<TlsConnector>,
    state: Mutex<State>,
}

enum State {
    Idle,
    Connected(SendRequest<RequestBody>),
    Failed(Instant),
}

impl Upstream {
    /// The upstream at `address` (`host:port`), reached with `tls`, which checks its identity.
    #[must_use]
    pub fn new(address: String, server_name: ServerName<'static>, tls: Arc<ClientConfig>) -> Self {
        Upstream {
            address,
            server_name,
            connector: std::sync::Mutex::new(TlsConnector::from(tls)),
            state: Mutex::new(State::Idle),
        }
    }

    /// `host:port`, for the `:authority` of forwarded calls and the log.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A handle to the open connection, made now if there is none.
    ///
    /// # Errors
    ///
    /// No connection can be made, or the last attempt failed within [`RETRY_AFTER`].
    pub async fn sender(&self) -> Result<SendRequest<RequestBody>, UpstreamError> {
        // Held while connecting, so that calls arriving meanwhile share the attempt's outcome.
        let mut state = self.state.lock().await;
        match &*state {
            State::Connected(sender) if !sender.is_closed() => return Ok(sender.clone()),
            State::Failed(at) if at.elapsed() < RETRY_AFTER => return Err(UpstreamError::Backoff),
            _ => {}
        }
        match self.connect().await {
            Ok(sender) => {
                *state = State::Connected(sender.clone());
                Ok(sender)
            }
            Err(error) => {
                *state = State::Failed(Instant::now());
                Err(error)
            }
        }
    }

    /// Reach the upstream with `tls` from now on: the next call makes a new connection with
    /// it; calls on the old connection finish there.
    pub async fn renew(&self, tls: Arc<ClientConfig>) {
        let mut state = self.state.lock().await;
        *self
            .connector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = TlsConnector::from(tls);
        *state = State::Idle;
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let connector = self
            .connector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let attempt = async {
            let tcp = TcpStream::connect(&self.address).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(self.server_name.clone(), tcp).await?;
            Ok::<_, UpstreamError>(tls)
        };
        let tls = timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await?;
        // The connection runs until the upstream or the last handle closes it; its end is
        // seen by the next call as a closed sender.
        tokio::spawn(connection);
        Ok(sender)
    }
}
