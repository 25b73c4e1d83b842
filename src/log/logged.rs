//! The body a client gets: it tells the request's log what passes, and writes the line
//! when it ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use super::LogGuard;
use crate::body::{BoxError, ProxyBody};

/// A response body that tells the request's log what passes, and writes the log line when it
/// ends or is dropped (the guard's drop).
pub struct Logged<H> {
    inner: ProxyBody,
    guard: LogGuard,
    /// The caller's, held as long: the server's count of the request as in progress. Here
    /// rather than in a body of its own, which would be one more allocation a request.
    _held: H,
}

/// Wraps `inner` so that the request is logged when the client has it all, or has left, and
/// `held` is dropped then.
pub fn logged<H: Send + Sync + Unpin + 'static>(
    inner: ProxyBody,
    mut guard: LogGuard,
    held: H,
) -> ProxyBody {
    if inner.is_end_stream() {
        guard.get().completed();
    }
    Logged {
        inner,
        guard,
        _held: held,
    }
    .boxed()
}

impl<H: Unpin> Body for Logged<H> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // hyper stops polling once a body says it has ended, so the end is noticed here too.
        let ended = self.inner.is_end_stream();
        let log = self.guard.get();
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    log.sent(data);
                }
                if ended {
                    log.completed();
                }
            }
            Poll::Ready(Some(Err(e))) => log.stream_failed(e.to_string()),
            Poll::Ready(None) => log.completed(),
            Poll::Pending => {}
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
