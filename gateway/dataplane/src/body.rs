//! The two bodies a forwarded call streams, frame by frame and bytes untouched.
//!
//! Backpressure is HTTP/2's own: a frame is read from one side only when the other side asks
//! for one, so neither body buffers more than the frame in hand.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::exchange::{Exchange, RECEIPT};
use crate::messages::MessageDigest;
use crate::metadata;
use crate::status::{self, Code, Status};

/// What a body's error may be: anything hyper can report.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body stopped because its next frame did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body's next frame did not arrive in time")]
pub struct ArrivalTimedOut;

/// A request body stopped because a message is longer than the gateway accepts.
#[derive(Debug, thiserror::Error)]
#[error("a request message is longer than the gateway accepts")]
pub struct MessageTooLarge;

/// Why a request body was stopped on its way upstream, for the gateway to say.
#[derive(Debug, Default)]
pub struct Stopped {
    /// Its next frame did not arrive in time.
    pub timed_out: AtomicBool,
    /// A message announced more bytes than the limit.
    pub too_large: AtomicBool,
}

/// The caller's request body, on its way upstream: each frame must arrive within `timeout`
/// of being asked for, or the body ends in [`ArrivalTimedOut`]; a message announced longer
/// than `max_message` bytes ends it in [`MessageTooLarge`] before its bytes are passed on.
/// Either resets the upstream call, and `stopped` says why. Its messages are counted and
/// digested into `digest` as they pass.
pub struct RequestBody {
    inner: Source,
    timeout: Duration,
    max_message: u64,
    deadline: Pin<Box<Sleep>>,
    waiting: bool,
    stopped: Arc<Stopped>,
    digest: Arc<Mutex<MessageDigest>>,
}

/// Where a request body's frames come from.
enum Source {
    /// The caller's.
    Caller(Incoming),
    /// One message of the gateway's own (its health checks of upstreams), until sent.
    Own(Option<Bytes>),
}

impl RequestBody {
    /// One framed message of the gateway's own.
    #[must_use]
    pub fn own(message: Bytes) -> Self {
        let timeout = Duration::from_secs(1);
        RequestBody {
            inner: Source::Own(Some(message)),
            timeout,
            max_message: u64::MAX,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
            stopped: Arc::default(),
            digest: Arc::default(),
        }
    }

    /// `inner`, each frame given `timeout` to arrive and each message at most `max_message`
    /// bytes; `stopped` says which it broke.
    #[must_use]
    pub fn new(
        inner: Incoming,
        timeout: Duration,
        max_message: u64,
        stopped: Arc<Stopped>,
        digest: Arc<Mutex<MessageDigest>>,
    ) -> Self {
        RequestBody {
            inner: Source::Caller(inner),
            timeout,
            max_message,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
            stopped,
            digest,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let inner = match &mut this.inner {
            Source::Caller(inner) => inner,
            Source::Own(message) => {
                return Poll::Ready(message.take().map(|message| Ok(Frame::data(message))));
            }
        };
        // The clock runs from when a frame is asked for, not while the upstream's flow
        // control keeps the gateway from asking: only the caller's slowness counts.
        if !this.waiting {
            let deadline = Instant::now() + this.timeout;
            this.deadline.as_mut().reset(deadline);
            this.waiting = true;
        }
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                    let mut digest = this.digest.lock().unwrap_or_else(PoisonError::into_inner);
                    digest.update(data);
                    if digest.largest() > this.max_message {
                        this.stopped.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(MessageTooLarge.into())));
                    }
                }
                Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.stopped.timed_out.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(ArrivalTimedOut.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Caller(inner) => inner.is_end_stream(),
            Source::Own(message) => message.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Caller(inner) => inner.size_hint(),
            Source::Own(message) => {
                SizeHint::with_exact(message.as_ref().map_or(0, |message| message.len() as u64))
            }
        }
    }
}

/// The body of an answer to a caller: empty (a trailers-only answer, already recorded), or
/// the upstream's, relayed frame by frame. Its messages are counted and digested; its
/// trailers are held until the exchange's completion is durable and go out with the receipt,
/// without the `lienthong-` trailers the upstream sent (only the gateway's receipt may carry
/// that name to a caller). An upstream that resets or ends without a status is answered
/// with one of the gateway's (UNAVAILABLE, INTERNAL); a caller that goes away first is
/// recorded as CANCELLED.
#[derive(Default)]
pub struct ResponseBody {
    upstream: Option<Incoming>,
    audit: Option<Audit>,
    /// A message of the gateway's own, then its trailers.
    own: Option<(Option<Bytes>, HeaderMap)>,
    /// Frames of the gateway's own, as they are made (its reflection answers).
    stream: Option<tokio::sync::mpsc::Receiver<Frame<Bytes>>>,
}

struct Audit {
    exchange: Arc<Exchange>,
    digest: MessageDigest,
    max_message: u64,
    finishing: Option<Pin<Box<dyn Future<Output = HeaderMap> + Send>>>,
}

/// Gives the status `code` (and the gateway's details) to `trailers` and records the
/// completion; its receipt is added, or, for an OK answer whose completion is not durable,
/// the status becomes UNAVAILABLE: an unrecorded answer is not released as a success.
pub async fn finish(
    exchange: Arc<Exchange>,
    digest: MessageDigest,
    mut trailers: HeaderMap,
    code: u32,
) -> HeaderMap {
    let completed = exchange.complete(code, &digest).await;
    match completed.receipt {
        Some(receipt) => {
            trailers.insert(RECEIPT, receipt);
        }
        None if code == 0 => {
            for key in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                trailers.remove(key);
            }
            Status::new(
                Code::Unavailable,
                "AUDIT_UNAVAILABLE",
                "the audit log could not record the exchange",
            )
            .write(&mut trailers);
        }
        None => {}
    }
    trailers
}

impl ResponseBody {
    /// The upstream's response body, relayed and recorded in `exchange` as it ends.
    #[must_use]
    /// A message longer than `max_message` bytes ends it `RESOURCE_EXHAUSTED` before its
    /// bytes are passed on.
    pub fn relay(upstream: Incoming, exchange: Arc<Exchange>, max_message: u64) -> Self {
        ResponseBody {
            upstream: Some(upstream),
            audit: Some(Audit {
                exchange,
                digest: MessageDigest::default(),
                max_message,
                finishing: None,
            }),
            own: None,
            stream: None,
        }
    }

    /// The frames `frames` yields, data and then trailers, as they come.
    #[must_use]
    pub fn stream(frames: tokio::sync::mpsc::Receiver<Frame<Bytes>>) -> Self {
        ResponseBody {
            upstream: None,
            audit: None,
            own: None,
            stream: Some(frames),
        }
    }

    /// One framed message of the gateway's own, then `trailers`.
    #[must_use]
    pub fn message(message: Bytes, trailers: HeaderMap) -> Self {
        ResponseBody {
            upstream: None,
            audit: None,
            own: Some((Some(message), trailers)),
            stream: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(frames) = this.stream.as_mut() {
            let frame = std::task::ready!(frames.poll_recv(cx));
            if frame.is_none() {
                this.stream = None;
            }
            return Poll::Ready(frame.map(Ok));
        }
        if let Some((message, trailers)) = this.own.as_mut() {
            if let Some(message) = message.take() {
                return Poll::Ready(Some(Ok(Frame::data(message))));
            }
            let trailers = std::mem::take(trailers);
            this.own = None;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let (Some(upstream), Some(audit)) = (this.upstream.as_mut(), this.audit.as_mut()) else {
            return Poll::Ready(None);
        };
        loop {
            if let Some(finishing) = audit.finishing.as_mut() {
                let trailers = std::task::ready!(finishing.as_mut().poll(cx));
                this.audit = None;
                this.upstream = None;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            let (trailers, code) = match std::task::ready!(Pin::new(&mut *upstream).poll_frame(cx))
            {
                Some(Ok(frame)) => match frame.into_trailers() {
                    Ok(mut trailers) => {
                        drop_lienthong(&mut trailers);
                        // A status that is missing is what a gRPC client reads as UNKNOWN.
                        let code = status::grpc_status(&trailers).unwrap_or(2);
                        (trailers, code)
                    }
                    Err(frame) => {
                        if let Some(data) = frame.data_ref() {
                            audit.digest.update(data);
                        }
                        if audit.digest.largest() <= audit.max_message {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        own_status(&message_too_large(audit.max_message))
                    }
                },
                Some(Err(_)) => own_status(&Status::new(
                    Code::Unavailable,
                    "UPSTREAM_UNAVAILABLE",
                    "the upstream ended the call",
                )),
                None => own_status(&Status::new(
                    Code::Internal,
                    "UPSTREAM_NO_STATUS",
                    "the upstream's answer ended without a status",
                )),
            };
            let exchange = Arc::clone(&audit.exchange);
            let digest = audit.digest.clone();
            audit.finishing = Some(Box::pin(finish(exchange, digest, trailers, code)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.audit.is_none() && self.own.is_none() && self.stream.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.upstream, &self.audit) {
            (Some(upstream), Some(_)) => {
                let mut hint = SizeHint::new();
                hint.set_lower(upstream.size_hint().lower());
                hint
            }
            _ if self.own.is_some() || self.stream.is_some() => SizeHint::new(),
            _ => SizeHint::with_exact(0),
        }
    }
}

impl Drop for ResponseBody {
    /// A caller that went away before the status: the exchange is recorded as CANCELLED.
    fn drop(&mut self) {
        let Some(audit) = self.audit.take() else {
            return;
        };
        if audit.finishing.is_some() {
            return; // its completion is already queued
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                drop(audit.exchange.complete(1, &audit.digest).await);
            });
        }
    }
}

/// The refusal of a message longer than `max` bytes, either way.
#[must_use]
pub fn message_too_large(max: u64) -> Status {
    Status::new(
        Code::ResourceExhausted,
        "MESSAGE_TOO_LARGE",
        format!("a message is longer than the {max} bytes the gateway accepts"),
    )
}

fn own_status(status: &Status) -> (HeaderMap, u32) {
    let mut trailers = HeaderMap::new();
    let code = u32::from(status.code.number());
    status.write(&mut trailers);
    (trailers, code)
}

/// Remove every `lienthong-` key from headers or trailers an upstream sent.
pub fn drop_lienthong(headers: &mut http::HeaderMap) {
    let keys: Vec<http::HeaderName> = headers
        .keys()
        .filter(|key| metadata::is_lienthong(key.as_str()))
        .cloned()
        .collect();
    for key in keys {
        headers.remove(key);
    }
}
