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
use serde_json::{Value, json};

use crate::body::{BoxError, ProxyBody};
use crate::usage::{Price, Tail, Usage};

/// Writes one line. A closed stdout must not take a request down with it, so errors are
/// ignored rather than panicking as `println!` would.
pub fn emit(line: &Value) {
    let mut text = Vec::with_capacity(512);
    if serde_json::to_writer(&mut text, line).is_ok() {
        write_out(text);
    }
}

/// Writes `text` and a newline with one call, so lines from concurrent requests never
/// interleave.
fn write_out(mut text: Vec<u8>) {
    text.push(b'\n');
    let _ = std::io::stdout().lock().write_all(&text);
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

    /// The line, borrowing from the log.
    fn line(&self) -> Line<'_> {
        // 499 is nginx's "client closed request": there was no status to send.
        let status = self.status.unwrap_or(499);
        let severity = match (&self.outcome, status) {
            (Outcome::UpstreamFailed(_), _) => "ERROR",
            (_, 500..) => "ERROR",
            (_, 400..) => "WARNING",
            _ => "INFO",
        };
        let usage = self.usage_tail.as_ref().and_then(Tail::usage);
        Line {
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
            alias: self.alias.as_deref(),
            model: self.model.as_deref(),
            location: self.location.as_deref(),
            error: self.error.as_deref(),
            upstream_status: self.upstream_status,
            trace: self.trace.as_deref(),
            span_id: self.span_id.as_deref(),
            ttfb: self.ttfb,
            response_bytes: self.response_bytes,
            cost_usd: usage
                .zip(self.price)
                .map(|(usage, price)| price.cost(&usage)),
            usage,
            cancelled: self.outcome == Outcome::Open,
            stream_error: match &self.outcome {
                Outcome::UpstreamFailed(reason) => Some(reason),
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

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One request's line, in Cloud Logging's structured format.
struct Line<'a> {
    severity: &'static str,
    method: &'a str,
    path: &'a str,
    status: u16,
    latency: Duration,
    protocol: &'static str,
    user_agent: Option<&'a str>,
    key_id: Option<&'a str>,
    alias: Option<&'a str>,
    model: Option<&'a str>,
    location: Option<&'a str>,
    error: Option<&'a str>,
    upstream_status: Option<u16>,
    trace: Option<&'a str>,
    span_id: Option<&'a str>,
    ttfb: Option<Duration>,
    response_bytes: u64,
    usage: Option<Usage>,
    cost_usd: Option<f64>,
    cancelled: bool,
    stream_error: Option<&'a str>,
}

impl Line<'_> {
    /// Writes the line as JSON. It is written for every request, so it is encoded by hand:
    /// the keys are constants, and only the values are escaped (about 5 k instructions per
    /// request fewer than serde).
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"severity\":");
        json::string(out, self.severity);
        out.extend_from_slice(b",\"message\":\"");
        json::escaped(out, self.method);
        out.push(b' ');
        json::escaped(out, self.path);
        out.push(b' ');
        json::uint(out, self.status.into());
        out.extend_from_slice(b"\",\"httpRequest\":{\"requestMethod\":");
        json::string(out, self.method);
        out.extend_from_slice(b",\"requestUrl\":");
        json::string(out, self.path);
        out.extend_from_slice(b",\"status\":");
        json::uint(out, self.status.into());
        // Cloud Logging's `latency` is a duration string, `"0.001234s"`.
        out.extend_from_slice(b",\"latency\":\"");
        json::uint(out, self.latency.as_secs());
        out.push(b'.');
        json::padded(out, self.latency.subsec_micros().into(), 6);
        // `responseSize` is an int64, which Cloud Logging's JSON wants as a string.
        out.extend_from_slice(b"s\",\"responseSize\":\"");
        json::uint(out, self.response_bytes);
        out.extend_from_slice(b"\",\"protocol\":");
        json::string(out, self.protocol);
        if let Some(agent) = self.user_agent {
            out.extend_from_slice(b",\"userAgent\":");
            json::string(out, agent);
        }
        out.push(b'}');
        let strings = [
            ("key_id", self.key_id),
            ("alias", self.alias),
            ("model", self.model),
            ("location", self.location),
            ("error", self.error),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                json::key(out, key);
                json::string(out, value);
            }
        }
        if let Some(status) = self.upstream_status {
            json::key(out, "upstream_status");
            json::uint(out, status.into());
        }
        if let Some(trace) = self.trace {
            json::key(out, "logging.googleapis.com/trace");
            json::string(out, trace);
        }
        if let Some(span) = self.span_id {
            json::key(out, "logging.googleapis.com/spanId");
            json::string(out, span);
        }
        if let Some(ttfb) = self.ttfb {
            json::key(out, "ttfb_ms");
            json::millis(out, ttfb);
        }
        json::key(out, "duration_ms");
        json::millis(out, self.latency);
        json::key(out, "response_bytes");
        json::uint(out, self.response_bytes);
        if let Some(usage) = &self.usage {
            json::key(out, "usage");
            let counts = [
                ("prompt_tokens", usage.prompt_tokens),
                ("completion_tokens", usage.completion_tokens),
                ("total_tokens", usage.total_tokens),
            ];
            for (i, (key, count)) in counts.into_iter().enumerate() {
                out.push(if i == 0 { b'{' } else { b',' });
                json::string(out, key);
                out.push(b':');
                match count {
                    Some(count) => json::uint(out, count),
                    None => out.extend_from_slice(b"null"),
                }
            }
            out.push(b'}');
        }
        if let Some(cost) = self.cost_usd {
            json::key(out, "cost_usd");
            json::float(out, cost);
        }
        if self.cancelled {
            json::key(out, "cancelled");
            out.extend_from_slice(b"true");
        }
        if let Some(reason) = self.stream_error {
            json::key(out, "stream_error");
            json::string(out, reason);
        }
        out.push(b'}');
    }
}

/// The JSON pieces the request line is made of.
mod json {
    use std::io::Write;
    use std::time::Duration;

    /// `,"key":` for a key that needs no escaping.
    pub fn key(out: &mut Vec<u8>, key: &str) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
    }

    pub fn string(out: &mut Vec<u8>, text: &str) {
        out.push(b'"');
        escaped(out, text);
        out.push(b'"');
    }

    /// `text` as the inside of a JSON string: runs of plain bytes are copied whole.
    pub fn escaped(out: &mut Vec<u8>, text: &str) {
        let bytes = text.as_bytes();
        // Almost every value needs no escaping. A check without early exit is vectorised: a
        // few instructions per 32 bytes instead of a branch per byte.
        let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        if !bytes.iter().fold(false, |found, &b| found | special(b)) {
            out.extend_from_slice(bytes);
            return;
        }
        let mut plain = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            let short = match byte {
                b'"' => b'"',
                b'\\' => b'\\',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                0x08 => b'b',
                0x0c => b'f',
                0..0x20 => b'u',
                _ => continue,
            };
            out.extend_from_slice(&bytes[plain..at]);
            plain = at + 1;
            if short == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let (high, low) = (HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]);
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', high, low]);
            } else {
                out.extend_from_slice(&[b'\\', short]);
            }
        }
        out.extend_from_slice(&bytes[plain..]);
    }

    pub fn uint(out: &mut Vec<u8>, value: u64) {
        padded(out, value, 1);
    }

    /// `value` in decimal, with leading zeros up to `width` digits.
    pub fn padded(out: &mut Vec<u8>, mut value: u64, width: usize) {
        let mut digits = [b'0'; 20];
        let mut start = digits.len();
        while value > 0 {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        start = start.min(digits.len() - width.clamp(1, 20));
        out.extend_from_slice(&digits[start..]);
    }

    /// Milliseconds with microsecond precision, as a number: `12.345`.
    pub fn millis(out: &mut Vec<u8>, duration: Duration) {
        let micros = duration.as_micros().min(u64::MAX.into()) as u64;
        uint(out, micros / 1000);
        out.push(b'.');
        padded(out, micros % 1000, 3);
    }

    /// A float as JSON has it: infinity has no JSON form, so it is `null`, as serde writes it.
    pub fn float(out: &mut Vec<u8>, value: f64) {
        if value.is_finite() {
            let _ = write!(out, "{value}");
        } else {
            out.extend_from_slice(b"null");
        }
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
            let mut text = Vec::with_capacity(1024);
            log.line().encode(&mut text);
            write_out(text);
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

    #[test]
    fn every_string_survives_the_hand_written_escaping() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é → 😀 \u{2028}\u{7f}");
        for text in [all.as_str(), "", "plain", "\"", "\\", "\u{1f}end"] {
            let mut out = Vec::new();
            json::string(&mut out, text);
            let back: String = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(back, text);
        }
    }

    #[test]
    fn numbers_are_written_exactly() {
        let write = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            f(&mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(write(&|o| json::uint(o, 0)), "0");
        assert_eq!(write(&|o| json::uint(o, u64::MAX)), u64::MAX.to_string());
        assert_eq!(write(&|o| json::padded(o, 42, 6)), "000042");
        let ms = |micros| write(&|o| json::millis(o, Duration::from_micros(micros)));
        assert_eq!(ms(0), "0.000");
        assert_eq!(ms(129), "0.129");
        assert_eq!(ms(61_234_567), "61234.567");
        assert_eq!(write(&|o| json::float(o, 1.25e-6)), "0.00000125");
        assert_eq!(write(&|o| json::float(o, f64::INFINITY)), "null");
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
        });
        let mut tail = Tail::default();
        tail.push(br#"{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":null}}"#);
        entry.usage_tail = Some(tail);
        entry.outcome = Outcome::UpstreamFailed("cut".into());
        let line = entry.to_json();
        let expected = serde_json::json!({
            "severity": "ERROR",
            "message": "POST /v1/chat/completions 200",
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
