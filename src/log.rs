//! Structured logs: one JSON object per line on stdout, in Cloud Logging's format, and the
//! one line written for every request when its response ends.
//!
//! SECURITY: nothing here is given keys, key hashes, tokens or bodies, and nothing may be.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use serde::Serialize;
use serde_json::{Value, json};

use crate::body::{BoxError, ProxyBody};
use crate::usage::{Price, Tail, Usage};

/// Writes one line. A closed stdout must not take a request down with it, so errors are
/// ignored rather than panicking as `println!` would.
pub fn emit(line: &Value) {
    write_line(line);
}

/// Serialises `line` and writes it with one call, so lines from concurrent requests never
/// interleave.
fn write_line(line: &impl Serialize) {
    let mut text = Vec::with_capacity(512);
    if serde_json::to_writer(&mut text, line).is_ok() {
        text.push(b'\n');
        let _ = std::io::stdout().lock().write_all(&text);
    }
}

fn message(severity: &str, message: &str) {
    emit(&json!({"severity": severity, "message": message}));
}

pub fn info(text: &str) {
    message("INFO", text);
}

pub fn warning(text: &str) {
    message("WARNING", text);
}

pub fn error(text: &str) {
    message("ERROR", text);
}

/// How a response ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Still open: if it is dropped in this state, the client went away.
    Open,
    Complete,
    /// The upstream body failed mid-stream; the client saw a cut stream.
    UpstreamFailed(String),
}

/// What is known about one request; written once, when it is dropped.
pub struct RequestLog {
    start: Instant,
    method: Method,
    path: String,
    user_agent: Option<String>,
    protocol: Version,
    pub key_id: Option<String>,
    pub alias: Option<String>,
    pub model: Option<String>,
    pub location: Option<String>,
    pub upstream_status: Option<u16>,
    /// The status sent to the client; `None` until a response exists.
    pub status: Option<u16>,
    /// The proxy's own error message, which is written for clients and so holds no secret.
    pub error: Option<String>,
    /// `projects/P/traces/ID`, so Cloud Logging groups this line with Cloud Run's own.
    pub trace: Option<String>,
    pub span_id: Option<String>,
    /// When Vertex's response head arrived.
    ttfb: Option<Duration>,
    /// Set when the response's usage should be read and priced.
    usage_tail: Option<Tail>,
    pub price: Option<Price>,
    response_bytes: u64,
    outcome: Outcome,
}

impl RequestLog {
    pub fn new(method: &Method, path: &str, user_agent: Option<&str>, protocol: Version) -> Self {
        RequestLog {
            start: Instant::now(),
            method: method.clone(),
            path: path.to_owned(),
            user_agent: user_agent.map(str::to_owned),
            protocol,
            key_id: None,
            alias: None,
            model: None,
            location: None,
            upstream_status: None,
            status: None,
            error: None,
            trace: None,
            span_id: None,
            ttfb: None,
            usage_tail: None,
            price: None,
            response_bytes: 0,
            outcome: Outcome::Open,
        }
    }

    /// Vertex has answered: records the time to first byte and whether to look for usage in
    /// the body (only in a success that is not compressed).
    pub fn upstream_answered(&mut self, status: u16, compressed: bool) {
        self.ttfb = Some(self.start.elapsed());
        self.upstream_status = Some(status);
        if (200..300).contains(&status) && !compressed {
            self.usage_tail = Some(Tail::default());
        }
    }

    /// Takes the trace id from `X-Cloud-Trace-Context` (`TRACE/SPAN;o=1`, span in decimal) or
    /// W3C `traceparent` (`00-TRACE-SPAN-01`, span in hex).
    pub fn set_trace(&mut self, headers: &http::HeaderMap, project: &str) {
        let cloud = headers
            .get("x-cloud-trace-context")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let (trace, rest) = v.split_once('/').unwrap_or((v, ""));
                let span = rest.split(';').next().and_then(|s| s.parse::<u64>().ok());
                (trace, span.map(|s| format!("{s:016x}")))
            });
        let w3c = || {
            let value = headers.get("traceparent")?.to_str().ok()?;
            let mut parts = value.split('-');
            let (_, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
            Some((trace, Some(span.to_owned())))
        };
        let Some((trace, span)) = cloud.filter(|(t, _)| is_hex(t, 32)).or_else(w3c) else {
            return;
        };
        if is_hex(trace, 32) {
            self.trace = Some(format!("projects/{project}/traces/{trace}"));
            self.span_id = span.filter(|s| is_hex(s, 16));
        }
    }

    /// The line, borrowing from the log: built once per request on the hot path, so it is a
    /// struct serialised straight to bytes rather than a tree of `Value`s.
    fn line(&self) -> Line<'_> {
        // 499 is nginx's "client closed request": there was no status to send.
        let status = self.status.unwrap_or(499);
        let severity = match (&self.outcome, status) {
            (Outcome::UpstreamFailed(_), _) => "ERROR",
            (_, 500..) => "ERROR",
            (_, 400..) => "WARNING",
            _ => "INFO",
        };
        let latency = self.start.elapsed();
        let usage = self.usage_tail.as_ref().and_then(Tail::usage);
        Line {
            severity,
            message: Text(Message {
                method: &self.method,
                path: &self.path,
                status,
            }),
            http_request: HttpRequest {
                request_method: self.method.as_str(),
                request_url: &self.path,
                status,
                latency: Text(Seconds(latency)),
                response_size: Text(self.response_bytes),
                protocol: match self.protocol {
                    Version::HTTP_2 => "HTTP/2.0",
                    Version::HTTP_10 => "HTTP/1.0",
                    _ => "HTTP/1.1",
                },
                user_agent: self.user_agent.as_deref(),
            },
            key_id: self.key_id.as_deref(),
            alias: self.alias.as_deref(),
            model: self.model.as_deref(),
            location: self.location.as_deref(),
            error: self.error.as_deref(),
            upstream_status: self.upstream_status,
            trace: self.trace.as_deref(),
            span_id: self.span_id.as_deref(),
            ttfb_ms: self.ttfb.map(millis),
            duration_ms: millis(latency),
            response_bytes: self.response_bytes,
            cost_usd: usage
                .zip(self.price)
                .map(|(usage, price)| price.cost(&usage)),
            usage,
            cancelled: (self.outcome == Outcome::Open).then_some(true),
            stream_error: match &self.outcome {
                Outcome::UpstreamFailed(reason) => Some(reason),
                _ => None,
            },
        }
    }

    #[cfg(test)]
    fn to_json(&self) -> Value {
        serde_json::to_value(self.line()).expect("a log line serialises")
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Milliseconds with microsecond precision.
fn millis(duration: Duration) -> f64 {
    (duration.as_micros() as f64) / 1000.0
}

/// One request's line, in Cloud Logging's structured format.
#[derive(Serialize)]
struct Line<'a> {
    severity: &'static str,
    message: Text<Message<'a>>,
    #[serde(rename = "httpRequest")]
    http_request: HttpRequest<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alias: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_status: Option<u16>,
    #[serde(
        rename = "logging.googleapis.com/trace",
        skip_serializing_if = "Option::is_none"
    )]
    trace: Option<&'a str>,
    #[serde(
        rename = "logging.googleapis.com/spanId",
        skip_serializing_if = "Option::is_none"
    )]
    span_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttfb_ms: Option<f64>,
    duration_ms: f64,
    response_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancelled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_error: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpRequest<'a> {
    request_method: &'a str,
    request_url: &'a str,
    status: u16,
    latency: Text<Seconds>,
    /// A string, as Cloud Logging's `HttpRequest.responseSize` (int64 in JSON) expects.
    response_size: Text<u64>,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
}

/// Serialises as a JSON string through `Display`, with no `String` built on the way: the line
/// is written for every request.
struct Text<T>(T);

impl<T: std::fmt::Display> Serialize for Text<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// `POST /v1/chat/completions 200`.
struct Message<'a> {
    method: &'a Method,
    path: &'a str,
    status: u16,
}

impl std::fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} {} {}", self.method, self.path, self.status)
    }
}

/// A duration as Cloud Logging's `latency` wants it: `"0.001234s"`.
struct Seconds(Duration);

impl std::fmt::Display for Seconds {
    // Integer formatting: a float with a precision costs thousands of instructions.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}.{:06}s", self.0.as_secs(), self.0.subsec_micros())
    }
}

/// Owns a [`RequestLog`] and writes it when dropped, wherever that happens: after the last
/// byte, when the client leaves, or when the handler itself is dropped mid-way.
pub struct LogGuard(Option<RequestLog>);

impl LogGuard {
    pub fn new(log: RequestLog) -> Self {
        LogGuard(Some(log))
    }

    pub fn get(&mut self) -> &mut RequestLog {
        self.0.as_mut().expect("the log is taken only in drop")
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(log) = self.0.take() {
            write_line(&log.line());
        }
    }
}

/// A response body that counts what passes and logs the request when it ends.
/// It adds no buffering: each frame is handed on as it is polled.
pub struct LoggedBody {
    inner: ProxyBody,
    guard: LogGuard,
}

impl LoggedBody {
    pub fn new(inner: ProxyBody, mut guard: LogGuard) -> Self {
        if inner.is_end_stream() {
            guard.get().outcome = Outcome::Complete;
        }
        LoggedBody { inner, guard }
    }

    /// Boxes it back into the one body type the server returns.
    pub fn boxed(self) -> ProxyBody {
        BodyExt::boxed(self)
    }
}

impl Body for LoggedBody {
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
                    log.response_bytes += data.len() as u64;
                    if let Some(tail) = &mut log.usage_tail {
                        tail.push(data);
                    }
                }
                if ended {
                    log.outcome = Outcome::Complete;
                }
            }
            Poll::Ready(Some(Err(e))) => log.outcome = Outcome::UpstreamFailed(e.to_string()),
            Poll::Ready(None) => log.outcome = Outcome::Complete,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> RequestLog {
        RequestLog::new(
            &Method::POST,
            "/v1/chat/completions",
            Some("curl/8"),
            Version::HTTP_11,
        )
    }

    #[test]
    fn a_dropped_request_is_logged_as_cancelled() {
        let line = log().to_json();
        assert_eq!(line["cancelled"], true);
        assert_eq!(line["httpRequest"]["status"], 499);
    }

    #[test]
    fn fields_follow_cloud_logging() {
        let mut entry = log();
        entry.status = Some(502);
        entry.key_id = Some("raj".into());
        entry.upstream_status = Some(503);
        entry.outcome = Outcome::Complete;
        let line = entry.to_json();
        assert_eq!(line["severity"], "ERROR");
        assert_eq!(line["httpRequest"]["requestMethod"], "POST");
        assert_eq!(line["httpRequest"]["requestUrl"], "/v1/chat/completions");
        assert_eq!(line["httpRequest"]["userAgent"], "curl/8");
        assert!(
            line["httpRequest"]["latency"]
                .as_str()
                .unwrap()
                .ends_with('s')
        );
        assert_eq!(line["key_id"], "raj");
        assert_eq!(line["upstream_status"], 503);
        assert!(line.get("cancelled").is_none() && line.get("alias").is_none());
    }
}
