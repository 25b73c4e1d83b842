//! A streamed answer, translated as it comes: the chat completion chunks of an SSE stream are
//! read line by line (only an unfinished event is held), and each becomes the Responses
//! events it stands for, sent on at once.

use std::pin::Pin;
use std::task::{Context, Poll};

use super::ending::Failure;
use super::events::Builder;
use crate::body::{BoxError, ProxyBody};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// The longest SSE event held while it arrives; a chunk is a few KB.
const MAX_EVENT: usize = 4 * 1024 * 1024;

/// Chat completion chunks in, Responses events out.
pub(crate) struct Sse {
    builder: Builder,
    /// An unfinished line.
    line: Vec<u8>,
    /// The `data:` of an unfinished event.
    data: Vec<u8>,
    /// `[DONE]` came.
    done: bool,
}

impl Sse {
    pub fn new(builder: Builder) -> Sse {
        Sse {
            builder,
            line: Vec::new(),
            data: Vec::new(),
            done: false,
        }
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<u8> {
        self.builder.start();
        self.builder.take()
    }

    /// The events for the complete SSE events in `bytes` (and what came before them).
    pub fn edit(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut rest = bytes;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            // A whole line is read where it lies; only one that came in pieces is copied (and
            // the buffer kept for the next).
            if self.line.is_empty() {
                self.line_of(&rest[..end]);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&rest[..end]);
                self.line_of(&line);
                line.clear();
                self.line = line;
            }
            rest = &rest[end + 1..];
            if self.builder.over() {
                // Cut: the answer has failed, and what is left of it is not read.
                self.line.clear();
                self.data.clear();
                self.builder.finish(true);
                return self.builder.take();
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() + self.data.len() > MAX_EVENT {
            self.line.clear();
            self.data.clear();
            let message = "the upstream sent an event larger than the proxy reads";
            self.builder.fail(Failure::server_error(message));
        }
        self.builder.take()
    }

    fn line_of(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch();
        } else if let Some(data) = line.strip_prefix(b"data:") {
            if !self.data.is_empty() {
                self.data.push(b'\n');
            }
            self.data
                .extend_from_slice(data.strip_prefix(b" ").unwrap_or(data));
        }
    }

    fn dispatch(&mut self) {
        let mut data = std::mem::take(&mut self.data);
        match data.trim_ascii() {
            b"[DONE]" => self.done = true,
            // Keep-alives (`data: : keepalive`) and anything that is no chat completion are
            // not chunks.
            chunk => _ = self.builder.data(chunk),
        }
        data.clear();
        self.data = data;
    }

    /// The answer grew past what is held to translate it: the stream is cut after its
    /// `response.failed`.
    pub fn cut(&self) -> bool {
        self.builder.over()
    }

    /// The stream has ended (`failed`: broken): the last events.
    pub fn finish(&mut self, failed: Option<String>) -> Vec<u8> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_of(&line);
        }
        self.dispatch();
        if let Some(message) = failed {
            self.builder.fail(Failure::server_error(message));
        }
        self.builder.finish(self.done);
        self.builder.take()
    }
}

/// The client's body: the upstream's chunks, translated as they come.
pub(crate) fn translated(inner: ProxyBody, sse: Sse) -> ProxyBody {
    use http_body_util::BodyExt;
    Translating {
        inner,
        sse,
        started: false,
        broken: None,
        ended: false,
    }
    .boxed()
}

struct Translating {
    inner: ProxyBody,
    sse: Sse,
    started: bool,
    /// The upstream's error, passed on after the `response.failed` it became, so that the
    /// log records a broken stream.
    broken: Option<BoxError>,
    ended: bool,
}

impl Body for Translating {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.started {
            this.started = true;
            return Poll::Ready(Some(Ok(Frame::data(this.sse.start().into()))));
        }
        loop {
            if let Some(error) = this.broken.take() {
                this.ended = true;
                return Poll::Ready(Some(Err(error)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let events = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let events = this.sse.edit(&data);
                        if this.sse.cut() {
                            // Logged as a broken stream, and the upstream's request dropped.
                            this.broken =
                                Some("the answer was larger than the proxy translates".into());
                        }
                        events
                    }
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(error))) => {
                    let events = this.sse.finish(Some(error.to_string()));
                    this.broken = Some(error);
                    events
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    this.sse.finish(None)
                }
            };
            if !events.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(events.into()))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.broken.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
