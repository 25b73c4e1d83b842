//! What an upstream answer means before anything of it reaches the client: content to relay,
//! an error worth another attempt, or an error to give back in OpenAI's shape.
//!
//! A stream is held back until its first data event (a few hundred bytes): Vertex can answer
//! 200 and then send a 429 as that event. Once an event that is not an error has come, the
//! answer is committed, and it and the rest go out as they come.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode, header};
use http_body_util::BodyExt;

use super::envelope::{self, GoogleError};
use super::retry::{self, Outcome};
use crate::body::UpstreamBody;
use crate::error::{ProxyError, UpstreamError};

/// An answer to relay: the response, and the bytes of its stream already read.
pub struct Answer {
    pub response: Response<UpstreamBody>,
    pub read: Option<Bytes>,
}

/// Past this much without a complete event, the stream is taken to be content.
const HOLD_AT_MOST: usize = 64 * 1024;
/// The most of an error body read for its message.
const ERROR_BODY: usize = 64 * 1024;

/// Judges a response whose head has come: 2xx is content (a stream once its first event is
/// one); 429 and 5xx may be retried; other errors are final.
pub async fn judge(response: Response<UpstreamBody>, idle: Duration) -> Outcome<Answer> {
    let status = response.status();
    if status.is_success() {
        let headers = response.headers();
        let sse = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        // A compressed stream (the proxy asks for none) cannot be read as it passes.
        let encoded = headers.contains_key(header::CONTENT_ENCODING);
        if !sse || encoded {
            return Outcome::Done(Answer {
                response,
                read: None,
            });
        }
        return first_event(response, idle).await;
    }
    let after = retry::retry_after(response.headers());
    let error = ProxyError::Upstream(read_error(response, idle).await);
    if retry::retryable(status.as_u16()) {
        Outcome::Retry {
            error,
            status: status.as_u16(),
            after,
        }
    } else {
        Outcome::Fail(error)
    }
}

/// Reads a stream up to its first data event.
async fn first_event(response: Response<UpstreamBody>, idle: Duration) -> Outcome<Answer> {
    let (parts, mut body) = response.into_parts();
    let mut read: Option<Bytes> = None;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Outcome::Fail(ProxyError::GatewayTimeout(format!(
                    "Vertex sent nothing of its stream within {}s (UPSTREAM_IDLE_TIMEOUT_SECS)",
                    idle.as_secs()
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                let error = ProxyError::bad_gateway(
                    "upstream_error",
                    "Vertex's stream failed before its first event",
                );
                return Outcome::Retry {
                    error,
                    status: 502,
                    after: None,
                };
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // One frame usually holds the whole first event: then nothing is copied.
        read = Some(match read.take() {
            None => data,
            Some(before) => {
                let mut joined = BytesMut::from(before);
                joined.extend_from_slice(&data);
                joined.freeze()
            }
        });
        let held = read.as_deref().unwrap_or_default();
        match first_data(held) {
            First::Incomplete if held.len() < HOLD_AT_MOST => continue,
            First::Incomplete | First::Content => break,
            First::Error(google) => {
                let status = google.code;
                let error = ProxyError::Upstream(upstream_error(
                    if status == 0 { 500 } else { status },
                    Some(google),
                    None,
                    true,
                ));
                return if retry::retryable(status) {
                    Outcome::Retry {
                        error,
                        status,
                        after: None,
                    }
                } else {
                    Outcome::Fail(error)
                };
            }
        }
    }
    Outcome::Done(Answer {
        response: Response::from_parts(parts, body),
        read,
    })
}

#[derive(Debug, PartialEq)]
enum First {
    /// No complete event with data yet.
    Incomplete,
    Content,
    Error(GoogleError),
}

/// The first SSE event with data in `bytes`: content, or Google's error envelope. Comments
/// and events without data come before it and are passed over.
fn first_data(bytes: &[u8]) -> First {
    let mut data: Vec<&[u8]> = Vec::new();
    let mut rest = bytes;
    while let Some(end) = memchr::memchr(b'\n', rest) {
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        rest = &rest[end + 1..];
        if line.is_empty() {
            match data.as_slice() {
                [] => continue,
                [one] => return judge_data(one),
                more => return judge_data(&more.join(&b'\n')),
            }
        }
        if let Some(value) = line.strip_prefix(b"data:") {
            data.push(value.strip_prefix(b" ").unwrap_or(value));
        }
    }
    First::Incomplete
}

fn judge_data(data: &[u8]) -> First {
    // A cheap look first: every chunk of content would otherwise be parsed once more.
    let inner = data.trim_ascii_start().strip_prefix(b"{");
    if !inner.is_some_and(|i| i.trim_ascii_start().starts_with(b"\"error\"")) {
        return First::Content;
    }
    envelope::parse(data).map_or(First::Content, First::Error)
}

/// Reads an error answer's body (bounded, and within the idle limit) for Google's message.
async fn read_error(response: Response<UpstreamBody>, idle: Duration) -> UpstreamError {
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let body = http_body_util::Limited::new(response.into_body(), ERROR_BODY).collect();
    let google = match tokio::time::timeout(idle, body).await {
        Ok(Ok(body)) => envelope::parse(&body.to_bytes()),
        _ => None,
    };
    upstream_error(status.as_u16(), google, retry_after, false)
}

fn upstream_error(
    status: u16,
    google: Option<GoogleError>,
    retry_after: Option<http::HeaderValue>,
    in_stream: bool,
) -> UpstreamError {
    let (message, google_status) = match google {
        Some(e) if !e.message.is_empty() || !e.status.is_empty() => {
            let status = (!e.status.is_empty()).then_some(e.status);
            (e.message, status)
        }
        _ => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error");
            (
                format!("Vertex answered HTTP {status} ({reason}) without an error message"),
                None,
            )
        }
    };
    UpstreamError {
        status,
        message,
        google_status,
        retry_after,
        in_stream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_data_event_decides() {
        let chunk = b"data: {\"id\":\"c\",\"choices\":[]}\n\n";
        assert_eq!(first_data(chunk), First::Content);
        assert_eq!(first_data(b"data: {\"id\":\"c\""), First::Incomplete);
        assert_eq!(first_data(b": keep-alive\n\n"), First::Incomplete);
        let error = b": hi\r\n\r\ndata: {\"error\": {\"code\": 429, \"message\": \"Resource exhausted.\", \"status\": \"RESOURCE_EXHAUSTED\"}}\r\n\r\n";
        match first_data(error) {
            First::Error(e) => assert_eq!((e.code, e.status.as_str()), (429, "RESOURCE_EXHAUSTED")),
            other => panic!("{other:?}"),
        }
        // An error later in the stream is content's business, not a reason to hold it.
        let later = b"data: {\"choices\":[]}\n\ndata: {\"error\":{\"code\":429}}\n\n";
        assert_eq!(first_data(later), First::Content);
        // Data split over lines is joined, as SSE says.
        let split = b"data: {\"error\":\ndata: {\"code\":503,\"status\":\"UNAVAILABLE\"}}\n\n";
        assert!(matches!(first_data(split), First::Error(e) if e.code == 503));
        assert_eq!(first_data(b"data: [DONE]\n\n"), First::Content);
    }

    #[test]
    fn an_error_that_is_not_googles_still_says_what_happened() {
        let e = upstream_error(502, None, None, false);
        assert_eq!(
            e.message,
            "Vertex answered HTTP 502 (Bad Gateway) without an error message"
        );
        assert_eq!(e.google_status, None);
    }
}
