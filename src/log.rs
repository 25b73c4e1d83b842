//! Structured logs: one JSON object per line on stdout, in Cloud Logging's format, and the
//! record of each request, written as one line when its response ends ([`json`] encodes it).
//! Lines go to stdout through one writer thread ([`writer`]), never from a request's thread.
//!
//! SECURITY: nothing here is given keys, key hashes, tokens or bodies, and nothing may be.

mod json;
mod logged;
mod trace;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Version};
use serde_json::Value;

pub use logged::logged;
use writer::queue_line;
pub use writer::{QUEUE_BYTES, flush};

use crate::usage::{Head, Price, Tail};

/// Writes one line. A closed stdout must not take a request down with it, so errors are
/// ignored rather than panicking as `println!` would.
pub fn emit(line: &Value) {
    queue_line(|out| {
        let _ = serde_json::to_writer(out, line);
    });
}

fn message(severity: &str, text: &str) {
    queue_line(|out| json::message(out, severity, text, None));
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

/// The most of a client's path or User-Agent a line holds: Cloud Logging drops entries over
/// 256 KB, and a client chooses these.
const MAX_CLIENT_TEXT: usize = 1024;

/// `text`, cut at [`MAX_CLIENT_TEXT`] bytes (on a character boundary) with a marker saying so.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_CLIENT_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_CLIENT_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated from {} bytes]", &text[..end], text.len())
}

/// Thought signatures the proxy put in one request's body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignatureCounts {
    /// Signatures a client dropped, put back from what an earlier answer carried.
    pub restored: usize,
    /// Sentinels, where no signature was known.
    pub filled: usize,
}

/// One attempt upstream, as the line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub location: String,
    /// The upstream's status, or the proxy's own (502, 504) when none came.
    pub status: u16,
    /// How long the proxy waited before making this attempt.
    pub wait: Duration,
}

/// A fan-out's upstream calls, counted by the calls as they are made: the line reads the
/// counts when it is written, after the last call.
#[derive(Debug, Default)]
pub struct Calls {
    /// Requests sent upstream, retries included.
    pub made: AtomicUsize,
    /// Of those, retries.
    pub retried: AtomicUsize,
    /// Shutdown stopped the fan-out before its end.
    pub ended_by_shutdown: AtomicBool,
}

/// What the log records of an upstream answer's head.
pub struct Answered {
    pub status: u16,
    /// The body is compressed: its usage cannot be read as it passes.
    pub compressed: bool,
    /// Every upstream connection was at its stream limit: the request waited for a stream.
    pub queued: bool,
    /// The answer gives usage at its start as well as its end (Claude's streams).
    pub usage_at_start: bool,
    /// The answer is an SSE stream: its usage is in an event, not the whole answer.
    pub sse: bool,
}

/// How a response ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
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
    key_id: Option<String>,
    /// The client API, when it was translated (`responses`).
    api: Option<&'static str>,
    alias: Option<String>,
    model: Option<String>,
    location: Option<String>,
    upstream_status: Option<u16>,
    /// Every upstream connection was at its stream limit: the request waited for a stream.
    upstream_queued: bool,
    signatures: SignatureCounts,
    /// Every attempt upstream, when there was more than one.
    attempts: Vec<Attempt>,
    /// The status sent to the client; `None` until a response exists.
    status: Option<u16>,
    /// The proxy's own error message, which is written for clients and so holds no secret.
    error: Option<String>,
    /// `projects/P/traces/ID`, so Cloud Logging groups this line with Cloud Run's own.
    trace: Option<String>,
    span_id: Option<String>,
    /// When Vertex's response head arrived.
    ttfb: Option<Duration>,
    /// Set when the response's usage should be read and priced.
    usage_tail: Option<Tail>,
    /// Also set for Claude, whose streams give their input counts first.
    usage_head: Option<Head>,
    price: Option<Price>,
    response_bytes: u64,
    outcome: Ending,
    /// Shutdown ended the request's retries (or its fan-out) early.
    ended_by_shutdown: bool,
    /// A fan-out's calls, when the request made several.
    calls: Option<Arc<Calls>>,
}

impl RequestLog {
    pub fn new(method: &Method, path: &str, user_agent: Option<&str>, protocol: Version) -> Self {
        RequestLog {
            start: Instant::now(),
            method: method.clone(),
            path: bounded(path),
            user_agent: user_agent.map(bounded),
            protocol,
            key_id: None,
            api: None,
            alias: None,
            model: None,
            location: None,
            upstream_status: None,
            upstream_queued: false,
            signatures: SignatureCounts::default(),
            attempts: Vec::new(),
            status: None,
            error: None,
            trace: None,
            span_id: None,
            ttfb: None,
            usage_tail: None,
            usage_head: None,
            price: None,
            response_bytes: 0,
            outcome: Ending::Open,
            ended_by_shutdown: false,
            calls: None,
        }
    }

    /// The upstream has answered: records the time to first byte, whether the request had to
    /// wait for a free upstream stream, and where to look for usage in the body (only in a
    /// success that is not compressed).
    pub fn upstream_answered(&mut self, answered: Answered) {
        self.ttfb = Some(self.start.elapsed());
        self.upstream_status = Some(answered.status);
        self.upstream_queued = answered.queued;
        if (200..300).contains(&answered.status) && !answered.compressed {
            self.usage_tail = Some(Tail::new(answered.sse));
            if answered.usage_at_start && answered.sse {
                self.usage_head = Some(Head::default());
            }
        }
    }

    /// Vertex answered with an error, which the proxy passes on in OpenAI's shape.
    pub fn upstream_failed(&mut self, status: u16) {
        self.ttfb = Some(self.start.elapsed());
        self.upstream_status = Some(status);
    }

    /// Takes the trace from the request's headers; Cloud Logging shows the line with Cloud
    /// Run's own for the same request.
    pub fn set_trace(&mut self, headers: &HeaderMap, project: &str) {
        if let Some((trace, span)) = trace::parse(headers, project) {
            self.trace = Some(trace);
            self.span_id = span;
        }
    }

    /// Thought signatures the proxy put in the request body.
    pub fn signatures(&mut self, counts: SignatureCounts) {
        self.signatures = counts;
    }

    /// Where the upstream attempts are recorded as they are made, so that a client that
    /// leaves mid-way still has them in its line.
    /// The server began to shut down: the request's waits ended, and no attempt or call
    /// was started after.
    pub fn ended_by_shutdown(&mut self) {
        self.ended_by_shutdown = true;
    }

    /// The request fans out to upstream calls, which count themselves in `calls`.
    pub fn fans_out(&mut self, calls: Arc<Calls>) {
        self.calls = Some(calls);
    }

    pub fn attempts(&mut self) -> &mut Vec<Attempt> {
        &mut self.attempts
    }

    /// The client API, when it is translated.
    pub fn api(&mut self, api: Option<&'static str>) {
        self.api = api;
    }

    pub fn authenticated(&mut self, key_id: &str) {
        self.key_id = Some(key_id.to_owned());
    }

    /// The route the request took: its alias, the upstream model and the location, and the
    /// price its usage is costed at.
    pub fn routed(&mut self, alias: &str, model: &str, location: &str, price: Option<Price>) {
        self.alias = Some(alias.to_owned());
        self.model = Some(model.to_owned());
        self.location = Some(location.to_owned());
        self.price = price;
    }

    /// The proxy's own error message, which is written for clients and so holds no secret.
    pub fn failed(&mut self, message: String) {
        self.error = Some(message);
    }

    /// The status sent to the client.
    pub fn responded(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// Bytes on their way to the client.
    pub fn sent(&mut self, data: &Bytes) {
        self.response_bytes += data.len() as u64;
        if let Some(tail) = &mut self.usage_tail {
            tail.push_shared(data);
        }
        if let Some(head) = &mut self.usage_head {
            head.push(data);
        }
    }

    pub fn completed(&mut self) {
        self.outcome = Ending::Complete;
    }

    /// The upstream body failed mid-stream; `reason` is the proxy's own text.
    pub fn stream_failed(&mut self, reason: String) {
        self.outcome = Ending::UpstreamFailed(reason);
    }

    /// The line, borrowing from the log.
    fn line(&self) -> json::Line<'_> {
        // 499 is nginx's "client closed request": there was no status to send.
        let status = self.status.unwrap_or(499);
        let severity = match (&self.outcome, status) {
            (Ending::UpstreamFailed(_), _) => "ERROR",
            (_, 500..) => "ERROR",
            (_, 400..) => "WARNING",
            _ => "INFO",
        };
        let first = self.usage_head.as_ref().and_then(Head::usage);
        let usage = match (first, self.usage_tail.as_ref().and_then(Tail::usage)) {
            (Some(first), Some(last)) => Some(first.then(last)),
            (first, last) => last.or(first),
        };
        json::Line {
            severity,
            method: self.method.as_str(),
            path: &self.path,
            status,
            latency: self.start.elapsed(),
            protocol: match self.protocol {
                Version::HTTP_2 => "HTTP/2.0",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            user_agent: self.user_agent.as_deref(),
            key_id: self.key_id.as_deref(),
            api: self.api,
            alias: self.alias.as_deref(),
            model: self.model.as_deref(),
            // The location that answered, when the attempts went to several.
            location: self
                .attempts
                .last()
                .map(|a| a.location.as_str())
                .or(self.location.as_deref()),
            error: self.error.as_deref(),
            upstream_status: self.upstream_status,
            upstream_queued: self.upstream_queued,
            signatures: self.signatures,
            attempts: &self.attempts,
            trace: self.trace.as_deref(),
            span_id: self.span_id.as_deref(),
            ttfb: self.ttfb,
            response_bytes: self.response_bytes,
            cost_usd: usage
                .zip(self.price)
                .map(|(usage, price)| price.cost(&usage)),
            usage,
            cancelled: self.outcome == Ending::Open,
            ended_by_shutdown: self.ended_by_shutdown
                || (self.calls.as_ref())
                    .is_some_and(|c| c.ended_by_shutdown.load(Ordering::Relaxed)),
            calls: self.calls.as_ref().map(|calls| {
                let made = calls.made.load(Ordering::Relaxed);
                (made, calls.retried.load(Ordering::Relaxed))
            }),
            stream_error: match &self.outcome {
                Ending::UpstreamFailed(reason) => Some(reason),
                _ => None,
            },
        }
    }

    #[cfg(test)]
    fn to_json(&self) -> Value {
        let mut text = Vec::new();
        self.line().encode(&mut text);
        serde_json::from_slice(&text).expect("the line is JSON")
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
            queue_line(|out| log.line().encode(out));
        }
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
    fn client_text_is_bounded_on_a_character_boundary() {
        let agent = "é".repeat(300_000);
        let entry = RequestLog::new(&Method::GET, "/health", Some(&agent), Version::HTTP_11);
        let line = entry.to_json();
        let logged = line["httpRequest"]["userAgent"].as_str().unwrap();
        assert!(logged.starts_with(&"é".repeat(512)), "{logged}");
        assert!(
            logged.ends_with("…[truncated from 600000 bytes]"),
            "{logged}"
        );
        assert!(logged.len() < MAX_CLIENT_TEXT + 40);
        assert_eq!(bounded("/v1/models"), "/v1/models");
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
        entry.outcome = Ending::Complete;
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

    #[test]
    fn a_full_line_has_every_field() {
        let mut entry = log();
        entry.status = Some(200);
        entry.key_id = Some("k\"1".into());
        entry.alias = Some("flash".into());
        entry.model = Some("google/gemini-2.5-flash".into());
        entry.location = Some("global".into());
        entry.error = Some("line\nbreak".into());
        entry.upstream_status = Some(200);
        entry.trace = Some("projects/p/traces/abc".into());
        entry.span_id = Some("00000000000000ff".into());
        entry.ttfb = Some(Duration::from_micros(1500));
        entry.response_bytes = 1234;
        entry.price = Some(Price {
            input: 1.0,
            output: 2.0,
            cache_read: None,
            cache_write: None,
        });
        let mut tail = Tail::default();
        tail.push(br#"{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":null}}"#);
        entry.usage_tail = Some(tail);
        entry.outcome = Ending::UpstreamFailed("cut".into());
        let line = entry.to_json();
        let expected = serde_json::json!({
            "severity": "ERROR",
            "message": "POST 200",
            "key_id": "k\"1",
            "alias": "flash",
            "model": "google/gemini-2.5-flash",
            "location": "global",
            "error": "line\nbreak",
            "upstream_status": 200,
            "logging.googleapis.com/trace": "projects/p/traces/abc",
            "logging.googleapis.com/spanId": "00000000000000ff",
            "ttfb_ms": 1.5,
            "response_bytes": 1234,
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": null},
            "cost_usd": 0.000011,
            "stream_error": "cut",
        });
        for (key, value) in expected.as_object().unwrap() {
            assert_eq!(&line[key], value, "{key}");
        }
        let http = &line["httpRequest"];
        assert_eq!(http["responseSize"], "1234");
        assert_eq!(http["protocol"], "HTTP/1.1");
        assert_eq!(http["status"], 200);
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
        assert!(line.get("cancelled").is_none());
    }
}
