//! The one response body type the proxy serves, whether it made the bytes or Vertex did.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::pool::UpstreamBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Vertex's body, handed on frame by frame (boxing it does not buffer), and cut with an error
/// if Vertex goes silent for `idle`.
pub fn stream(incoming: UpstreamBody, idle: Duration) -> ProxyBody {
    IdleTimeout {
        inner: incoming,
        idle,
        timer: Box::pin(tokio::time::sleep(idle)),
    }
    .boxed()
}

/// Fails the body when no frame has arrived for `idle`: a stalled upstream must not hold a
/// client (and a Cloud Run instance) until the request timeout.
struct IdleTimeout {
    inner: UpstreamBody,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

#[derive(Debug)]
pub struct UpstreamIdle(pub Duration);

impl std::fmt::Display for UpstreamIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "Vertex sent nothing for {}s (UPSTREAM_IDLE_TIMEOUT_SECS); the stream was cut",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for UpstreamIdle {}

impl Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            let deadline = Instant::now() + self.idle;
            self.timer.as_mut().reset(deadline);
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(UpstreamIdle(self.idle))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body of a few pieces sent in order: the spliced body goes to Vertex without
/// being copied into one buffer.
#[derive(Debug, Default)]
pub struct Pieces(std::collections::VecDeque<Bytes>);

impl Pieces {
    pub fn new(pieces: impl IntoIterator<Item = Bytes>) -> Pieces {
        Pieces(pieces.into_iter().filter(|p| !p.is_empty()).collect())
    }
}

impl Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|piece| Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|p| p.len() as u64).sum())
    }
}
