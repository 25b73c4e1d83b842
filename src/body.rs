//! Every body type and wrapper: the bounded read of a request body ([`read`]), the pieces of a
//! spliced body, and the upstream's response body with its idle limit and edits (the body a
//! client gets is the log's, `log::logged`).
//!
//! None of the wrappers buffers: each frame is handed on as it is polled.

mod read;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

pub use read::{BodyLimits, Budget, Held, ReadError, read_bounded};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the proxy serves, whether it made the bytes or the upstream did.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

// ------------------------------------------------------------ the body sent upstream

/// A request body of a few pieces sent in order: the spliced body goes upstream without being
/// copied into one buffer.
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

// ----------------------------------------------------------------- the upstream's body

/// Called once when an upstream body has been read to its end: the pool's way of taking an
/// HTTP/1.1 connection back. Dropped unread, it closes the connection instead, which is how
/// the upstream learns that the client left.
pub type OnEnd = Box<dyn FnOnce() + Send + Sync>;

/// The upstream's response body, as the pool hands it out.
pub struct UpstreamBody {
    inner: Incoming,
    on_end: Option<OnEnd>,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, on_end: Option<OnEnd>) -> UpstreamBody {
        let mut body = UpstreamBody { inner, on_end };
        if body.inner.is_end_stream() {
            body.ended();
        }
        body
    }

    fn ended(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.ended(),
            // An error leaves the connection unusable: it is dropped, not given back.
            Poll::Ready(Some(Err(_))) => self.on_end = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Sees each piece of a response on its way to the client, before the client does, and
/// says what goes on: the piece itself, usually, or less of it (nothing, even), or more.
pub trait Edit: Send + Sync {
    fn edit(&mut self, bytes: Bytes) -> Bytes;

    /// What it still holds when the upstream's body has ended: it goes out last.
    fn finish(&mut self) -> Bytes {
        Bytes::new()
    }
}

/// An edit of a response, chosen by the upstream's kind.
pub type BoxEdit = Box<dyn Edit>;

/// The upstream's body, handed on frame by frame (boxing it does not buffer), after `read`
/// (what was read of it before it was committed to), through `edit` on the way, and cut with
/// an error if the upstream goes silent for `idle`.
pub fn idle_limited(
    upstream: UpstreamBody,
    read: Option<Bytes>,
    edit: Option<BoxEdit>,
    idle: Duration,
) -> ProxyBody {
    IdleTimeout {
        inner: upstream,
        read,
        edit,
        idle,
        timer: None,
    }
    .boxed()
}

/// Fails the body when no frame has arrived for `idle`: a stalled upstream must not hold a
/// client (and a Cloud Run instance) until the request timeout.
struct IdleTimeout {
    inner: UpstreamBody,
    read: Option<Bytes>,
    edit: Option<BoxEdit>,
    idle: Duration,
    /// Armed the first time the upstream has nothing ready, so that an answer that comes
    /// whole never touches the timer wheel; with the time of the last frame, from which the
    /// timer, when it fires, is moved on, rather than reset on every frame.
    timer: Option<(Pin<Box<Sleep>>, Instant)>,
}

#[derive(Debug)]
pub struct UpstreamIdle(pub Duration);

impl std::fmt::Display for UpstreamIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "the upstream sent nothing for {}s (UPSTREAM_IDLE_TIMEOUT_SECS); the stream was cut",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for UpstreamIdle {}

impl IdleTimeout {
    /// The upstream has nothing ready: fails the body if it has been silent for `idle`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let idle = self.idle;
        let (timer, last) = self
            .timer
            .get_or_insert_with(|| (Box::pin(tokio::time::sleep(idle)), Instant::now()));
        while timer.as_mut().poll(cx).is_ready() {
            let deadline = *last + idle;
            if deadline <= Instant::now() {
                return Poll::Ready(Some(Err(Box::new(UpstreamIdle(idle)))));
            }
            // A frame came since the timer was set: silence is counted from that frame.
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

impl Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let frame = match this.read.take() {
                Some(read) => Frame::data(read),
                None => match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some((_, last)) = &mut this.timer {
                            *last = Instant::now();
                        }
                        frame
                    }
                    Poll::Ready(None) => {
                        // What an edit held goes out before the end.
                        let held = this.edit.as_mut().map(|edit| edit.finish());
                        return match held {
                            Some(held) if !held.is_empty() => {
                                Poll::Ready(Some(Ok(Frame::data(held))))
                            }
                            _ => Poll::Ready(None),
                        };
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                    Poll::Pending => return this.poll_idle(cx),
                },
            };
            let Some(edit) = &mut this.edit else {
                return Poll::Ready(Some(Ok(frame)));
            };
            match frame.into_data() {
                Ok(data) => {
                    let mut data = edit.edit(data);
                    // hyper polls no more once the body says it has ended.
                    if this.inner.is_end_stream() {
                        let held = edit.finish();
                        if !held.is_empty() {
                            data = [data, held].concat().into();
                        }
                    }
                    // An edit that leaves nothing sends nothing: the next frame is awaited.
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // An edit changes the length (a signature spliced in, Vertex's events dropped): the
        // upstream's would go out as `content-length` and cut the answer, or reset an h2
        // stream. Unknown, it goes chunked.
        if self.edit.is_some() {
            return SizeHint::default();
        }
        let read = self.read.as_ref().map_or(0, |r| r.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + read);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}
