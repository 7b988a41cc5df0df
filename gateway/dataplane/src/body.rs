//! The two bodies a forwarded call streams, frame by frame and bytes untouched.
//!
//! Backpressure is HTTP/2's own: a frame is read from one side only when the other side asks
//! for one, so neither body buffers more than the frame in hand.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::metadata;

/// What a body's error may be: anything hyper can report.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body stopped because its next frame did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body's next frame did not arrive in time")]
pub struct ArrivalTimedOut;

/// The caller's request body, on its way upstream: each frame must arrive within `timeout`
/// of being asked for, or the body ends in [`ArrivalTimedOut`] (which resets the upstream
/// call) and `timed_out` is set, so that the gateway can say why.
pub struct RequestBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    waiting: bool,
    timed_out: Arc<AtomicBool>,
}

impl RequestBody {
    /// `inner`, each frame given `timeout` to arrive; `timed_out` is set when one does not.
    #[must_use]
    pub fn new(inner: Incoming, timeout: Duration, timed_out: Arc<AtomicBool>) -> Self {
        RequestBody {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
            timed_out,
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
        // The clock runs from when a frame is asked for, not while the upstream's flow
        // control keeps the gateway from asking: only the caller's slowness counts.
        if !this.waiting {
            let deadline = Instant::now() + this.timeout;
            this.deadline.as_mut().reset(deadline);
            this.waiting = true;
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.timed_out.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(ArrivalTimedOut.into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body of an answer to a caller: empty (a trailers-only answer of the gateway's own), or
/// the upstream's, without the `lienthong-` trailers it sent: only the gateway's receipt may
/// carry that name to a caller.
#[derive(Debug, Default)]
pub struct ResponseBody {
    upstream: Option<Incoming>,
}

impl ResponseBody {
    /// The upstream's response body, relayed.
    #[must_use]
    pub fn relay(upstream: Incoming) -> Self {
        ResponseBody {
            upstream: Some(upstream),
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
        let Some(upstream) = self.upstream.as_mut() else {
            return Poll::Ready(None);
        };
        Pin::new(upstream).poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        drop_lienthong(&mut trailers);
                        Frame::trailers(trailers)
                    }
                    Err(data) => data,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.upstream.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.upstream
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
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
