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

use super::envelope;
use super::retry::{self, Outcome};
use crate::body::UpstreamBody;
use crate::error::{Origin, ProxyError, UpstreamError};

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
pub async fn judge(
    response: Response<UpstreamBody>,
    idle: Duration,
    from: Origin,
) -> Outcome<Answer> {
    let status = response.status();
    if status.is_success() {
        let headers = response.headers();
        // A compressed stream (the proxy asks for none) cannot be read as it passes.
        if !super::is_sse(headers) || headers.contains_key(header::CONTENT_ENCODING) {
            return Outcome::Done(Answer {
                response,
                read: None,
            });
        }
        return first_event(response, idle, from).await;
    }
    let after = retry::retry_after(response.headers());
    let error = ProxyError::Upstream(Box::new(read_error(response, idle, from).await));
    Outcome::failed(error, status.as_u16(), after)
}

/// Reads a stream up to its first data event.
async fn first_event(
    response: Response<UpstreamBody>,
    idle: Duration,
    from: Origin,
) -> Outcome<Answer> {
    let (parts, mut body) = response.into_parts();
    let mut read: Option<Bytes> = None;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Outcome::Fail(ProxyError::GatewayTimeout(format!(
                    "{} sent nothing of its stream within {}s (UPSTREAM_IDLE_TIMEOUT_SECS)",
                    from.subject(),
                    idle.as_secs()
                )));
            }
            Ok(None) => break,
            // A thinking model is silent before its first event, and working: cut then, it
            // may already have done (and billed) the work, so it is not asked again.
            Ok(Some(Err(_))) => return Outcome::Fail(super::connect::during_the_request(from)),
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
            First::Error(mut error) => {
                said_by(&mut error, from);
                let status = error.status;
                return Outcome::failed(ProxyError::Upstream(Box::new(error)), status, None);
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
    Error(UpstreamError),
}

/// The first SSE event with data in `bytes`: content, or an error (Google's envelope, or
/// Claude's `event: error`). Comments and events without data come before it and are passed
/// over. Lines end at CRLF, LF or CR, as SSE says.
fn first_data(bytes: &[u8]) -> First {
    let mut data: Vec<&[u8]> = Vec::new();
    let mut rest = bytes;
    while let Some(end) = memchr::memchr2(b'\n', b'\r', rest) {
        let line = &rest[..end];
        let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
        rest = &rest[end + 1 + usize::from(crlf)..];
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
    let Some(inner) = data.trim_ascii_start().strip_prefix(b"{") else {
        return First::Content;
    };
    let inner = inner.trim_ascii_start();
    if inner.starts_with(b"\"error\"") {
        if let Some(google) = envelope::parse(data) {
            let status = if google.code == 0 { 500 } else { google.code };
            return First::Error(upstream_error(status, data, true));
        }
    } else if inner.starts_with(b"\"type\"")
        && memchr::memmem::find(data, b"\"error\"").is_some()
        && let Some(claude) = envelope::parse_anthropic(data)
    {
        return First::Error(upstream_error(claude.status(), data, true));
    }
    First::Content
}

/// Reads an error answer's body (bounded, and within the idle limit) for its message.
async fn read_error(
    response: Response<UpstreamBody>,
    idle: Duration,
    from: Origin,
) -> UpstreamError {
    let status = response.status().as_u16();
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let body = http_body_util::Limited::new(response.into_body(), ERROR_BODY).collect();
    let body = match tokio::time::timeout(idle, body).await {
        Ok(Ok(body)) => body.to_bytes(),
        _ => Bytes::new(),
    };
    let mut error = upstream_error(status, &body, false);
    error.retry_after = retry_after;
    said_by(&mut error, from);
    error
}

/// Names who answered `error`, and gives it a message if its body had none.
fn said_by(error: &mut UpstreamError, from: Origin) {
    error.from = from;
    if error.message.is_empty() {
        let status = error.status;
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error");
        error.message = format!(
            "{} answered HTTP {status} ({reason}) without an error message",
            from.subject()
        );
    }
}

/// The error `body` holds, Google's, Claude's or OpenAI's (a service's), as the proxy passes
/// it on; the message is empty if it holds none. Claude's is kept whole, to go back unchanged
/// on the Messages route.
fn upstream_error(status: u16, body: &[u8], in_stream: bool) -> UpstreamError {
    let mut error = UpstreamError {
        from: Origin::Vertex,
        status,
        message: String::new(),
        code: None,
        retry_after: None,
        in_stream,
        anthropic: None,
    };
    if let Some(claude) = envelope::parse_anthropic(body) {
        error.message = claude.message;
        error.code = Some(claude.kind);
        error.anthropic = Some(Bytes::copy_from_slice(body));
    } else if let Some(openai) = envelope::parse_openai(body) {
        error.message = openai.message;
        error.code = Some(openai.kind);
    } else if let Some(google) = envelope::parse(body)
        && (!google.message.is_empty() || !google.status.is_empty())
    {
        error.message = google.message;
        error.code = (!google.status.is_empty()).then_some(google.status);
    }
    error
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
            First::Error(e) => {
                assert_eq!(
                    (e.status, e.code.as_deref()),
                    (429, Some("RESOURCE_EXHAUSTED"))
                );
                assert!(e.in_stream);
            }
            other => panic!("{other:?}"),
        }
        // Claude's error event, kept whole for the Messages route.
        let claude = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        match first_data(claude) {
            First::Error(e) => {
                assert_eq!(e.status, 529);
                assert_eq!(e.anthropic.as_deref(), Some(&claude[19..claude.len() - 2]));
            }
            other => panic!("{other:?}"),
        }
        let message_start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"error\":null}}\n\n";
        assert_eq!(first_data(message_start), First::Content);
        // An error later in the stream is content's business, not a reason to hold it.
        let later = b"data: {\"choices\":[]}\n\ndata: {\"error\":{\"code\":429}}\n\n";
        assert_eq!(first_data(later), First::Content);
        // Data split over lines is joined, as SSE says.
        let split = b"data: {\"error\":\ndata: {\"code\":503,\"status\":\"UNAVAILABLE\"}}\n\n";
        assert!(matches!(first_data(split), First::Error(e) if e.status == 503));
        assert_eq!(first_data(b"data: [DONE]\n\n"), First::Content);
        // Bare CRs end lines too.
        let cr = b": hi\r\rdata: {\"error\": {\"code\": 503, \"status\": \"UNAVAILABLE\"}}\r\r";
        assert!(matches!(first_data(cr), First::Error(e) if e.status == 503));
        assert_eq!(first_data(b"data: {\"id\":1}\r"), First::Incomplete);
        assert_eq!(first_data(b"data: {\"id\":1}\r\r"), First::Content);
    }

    #[test]
    fn an_error_that_is_not_googles_still_says_what_happened() {
        let e = upstream_error(502, b"<html>", false);
        assert_eq!((e.message.as_str(), e.code.as_deref()), ("", None));
        let mut e = upstream_error(429, br#"{"error":{"code":429}}"#, true);
        said_by(&mut e, Origin::Service);
        assert_eq!(
            e.message,
            "The service answered HTTP 429 (Too Many Requests) without an error message"
        );
        assert_eq!(e.from, Origin::Service);
        // vLLM's errors, in OpenAI's shape and in its older flat one.
        let e = upstream_error(
            400,
            br#"{"error":{"message":"max_tokens is too large","type":"BadRequestError","param":null,"code":400}}"#,
            false,
        );
        assert_eq!(e.message, "max_tokens is too large");
        assert_eq!(e.code.as_deref(), Some("BadRequestError"));
        let e = upstream_error(
            404,
            br#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}"#,
            false,
        );
        assert_eq!(e.message, "The model `x` does not exist.");
        assert_eq!(e.code.as_deref(), Some("NotFoundError"));
    }
}
