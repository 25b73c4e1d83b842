//! Hostile and broken requests, table-driven over raw TCP. Each case checks the documented
//! status, an OpenAI-shaped error with the documented type and code that says what was wrong,
//! and that nothing reached Vertex.

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The body limit for these tests, small so the limit cases stay small.
const LIMIT: usize = 4096;

struct Case {
    name: &'static str,
    /// The bytes sent, as they go on the wire.
    request: Vec<u8>,
    /// Shut the write side after sending: the client lied about its length and stopped.
    half_close: bool,
    status: u16,
    /// The error's documented `code` (empty: hyper answers before the proxy runs, with no
    /// body, because the bytes are not HTTP it can hand on).
    code: &'static str,
    /// Words the error message must contain.
    says: &'static str,
}

/// SPEC.md §6: the `type` and the `code`s of the proxy's own errors, by status.
const DOCUMENTED: &[(u16, &str, &[&str])] = &[
    (
        400,
        "invalid_request_error",
        &[
            "invalid_body",
            "invalid_json",
            "missing_model",
            "invalid_model",
            "model_not_found",
            "wrong_endpoint",
        ],
    ),
    (401, "invalid_request_error", &["invalid_api_key"]),
    (403, "permission_error", &["model_not_allowed"]),
    (404, "invalid_request_error", &["not_found"]),
    (405, "invalid_request_error", &["method_not_allowed"]),
    (408, "invalid_request_error", &["request_timeout"]),
    (413, "invalid_request_error", &["request_too_large"]),
];

/// Checks an error body against SPEC.md §6: OpenAI's shape, the type documented for the
/// status, the expected code (itself one documented for the status), and a message that says
/// what was wrong.
fn check_error(body: &str, status: u16, code: &str, says: &str) -> Result<(), String> {
    let Some(&(_, kind, codes)) = DOCUMENTED.iter().find(|(s, ..)| *s == status) else {
        return Err(format!("no documented error for status {status}"));
    };
    if !codes.contains(&code) {
        return Err(format!("{code} is not a documented code for {status}"));
    }
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|_| format!("not JSON: {body:?}"))?;
    let error = &json["error"];
    let message = error["message"].as_str().unwrap_or_default();
    if error["type"] != kind
        || error["code"] != code
        || error.get("param") != Some(&serde_json::Value::Null)
        || !message.contains(says)
    {
        return Err(format!(
            "expected type {kind}, code {code}, param null and a message saying {says:?}: {body}"
        ));
    }
    Ok(())
}

fn raw(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{method} {path} HTTP/1.1\r\nhost: proxy\r\nconnection: close\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    }) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn chat(body: &[u8]) -> Vec<u8> {
    raw("POST", "/v1/chat/completions", &[("x-api-key", KEY)], body)
}

fn with_key(key_header: (&str, &str)) -> Vec<u8> {
    raw(
        "POST",
        "/v1/chat/completions",
        &[key_header],
        CHAT.as_bytes(),
    )
}

fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = raw(
        "POST",
        "/v1/chat/completions",
        &[("x-api-key", KEY), ("transfer-encoding", "chunked")],
        b"",
    );
    for part in body.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A body of exactly `len` bytes that is not valid JSON (so, at the limit, it must get 400,
/// not 413, and never reach Vertex).
fn invalid_body_of(len: usize) -> Vec<u8> {
    let mut body = b"{\"model\":\"flash\",\"pad\":\"".to_vec();
    body.resize(len, b'x');
    body
}

fn case(
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    code: &'static str,
    says: &'static str,
) -> Case {
    Case {
        name,
        request,
        half_close: false,
        status,
        code,
        says,
    }
}

/// A case hyper answers itself, with `status` and no body.
fn by_hyper(name: &'static str, request: Vec<u8>, status: u16) -> Case {
    case(name, request, status, "", "")
}

fn cases() -> Vec<Case> {
    let near_miss_last = format!("{}X", &KEY[..KEY.len() - 1]);
    let near_miss_first = format!("X{}", &KEY[1..]);
    let prefix = KEY[..KEY.len() - 1].to_owned();
    let longer = format!("{KEY}0");
    let deep_129 = format!(
        "{{\"model\":\"flash\",\"a\":{}{}}}",
        "[".repeat(128),
        "]".repeat(128)
    );
    let deep_huge = format!("{{\"model\":\"flash\",\"a\":{}", "[".repeat(3000));
    let valid_bearer = format!("Bearer {KEY}");
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut lying = raw(
        "POST",
        "/v1/chat/completions",
        &[("x-api-key", KEY), ("content-length", "500")],
        b"",
    );
    lying.extend_from_slice(b"{\"model\":\"flash\"}");
    let mut flood = raw("GET", "/v1/models", &[("x-api-key", KEY)], b"");
    let at = flood.len() - 4;
    let extra: Vec<u8> = (0..300)
        .flat_map(|i| format!("\r\nx-flood-{i}: y").into_bytes())
        .collect();
    flood.splice(at..at, extra);

    vec![
        // Bodies.
        case("not JSON", chat(b"hello"), 400, "invalid_body", "JSON object"),
        case("empty body", chat(b""), 400, "invalid_body", "JSON object"),
        case("JSON array", chat(b"[{\"model\":\"flash\"}]"), 400, "invalid_body", "JSON object"),
        case("JSON string", chat(b"\"flash\""), 400, "invalid_body", "JSON object"),
        case("JSON number", chat(b"42"), 400, "invalid_body", "JSON object"),
        case("JSON null", chat(b"null"), 400, "invalid_body", "JSON object"),
        case("JSON true", chat(b"true"), 400, "invalid_body", "JSON object"),
        case("empty object", chat(b"{}"), 400, "missing_model", "no \"model\""),
        case("model missing", chat(b"{\"messages\":[]}"), 400, "missing_model", "no \"model\""),
        case("model only nested", chat(b"{\"x\":{\"model\":\"flash\"}}"), 400, "missing_model", "no \"model\""),
        case("model a number", chat(b"{\"model\":1}"), 400, "invalid_model", "must be a string"),
        case("model null", chat(b"{\"model\":null}"), 400, "invalid_model", "must be a string"),
        case("model an array", chat(b"{\"model\":[\"flash\"]}"), 400, "invalid_model", "must be a string"),
        case("model an object", chat(b"{\"model\":{\"id\":\"flash\"}}"), 400, "invalid_model", "must be a string"),
        case("model a boolean", chat(b"{\"model\":true}"), 400, "invalid_model", "must be a string"),
        case("model twice", chat(b"{\"model\":\"flash\",\"model\":\"flash\"}"), 400, "invalid_body", "more than one"),
        case("model twice, escaped", chat(b"{\"model\":\"flash\",\"mod\\u0065l\":\"pro-preview\"}"), 400, "invalid_body", "more than one"),
        case("model twice, both escaped", chat(b"{\"\\u006dodel\":\"flash\",\"m\\u006fdel\":\"x\"}"), 400, "invalid_body", "more than one"),
        case("nested 129 deep", chat(deep_129.as_bytes()), 400, "invalid_body", "nested deeper"),
        case("nested 3000 deep", chat(deep_huge.as_bytes()), 400, "invalid_body", "nested deeper"),
        case("invalid UTF-8 in a string", chat(b"{\"model\":\"fl\xffash\"}"), 400, "invalid_body", "UTF-8"),
        case("invalid UTF-8 outside strings", chat(b"{\"model\":\"flash\"}\xc3"), 400, "invalid_body", "UTF-8"),
        case("truncated JSON", chat(b"{\"model\":\"flash\",\"messages\":["), 400, "invalid_json", "not valid JSON"),
        case("trailing garbage", chat(b"{\"model\":\"flash\"} {}"), 400, "invalid_json", "not valid JSON"),
        case("trailing comma", chat(b"{\"model\":\"flash\",}"), 400, "invalid_json", "not valid JSON"),
        case("single quotes", chat(b"{'model':'flash'}"), 400, "invalid_json", "not valid JSON"),
        case("bad escape", chat(b"{\"model\":\"fl\\qash\"}"), 400, "invalid_json", "not valid JSON"),
        case("unknown alias", chat(b"{\"model\":\"gpt-4o\"}"), 400, "model_not_found", "unknown model"),
        case("empty model", chat(b"{\"model\":\"\"}"), 400, "model_not_found", "unknown model"),
        case("path in model", chat(b"{\"model\":\"../../v1/projects/other\"}"), 400, "model_not_found", "unknown model"),
        case("raw id not allowed", chat(b"{\"model\":\"meta/llama-3.3-70b-instruct-maas\"}"), 400, "model_not_found", "unknown model"),
        case(
            "alias the key may not use",
            raw("POST", "/v1/chat/completions", &[("x-api-key", KEY_FLASH_ONLY)], b"{\"model\":\"pro-preview\"}"),
            403,
            "model_not_allowed",
            "may not use",
        ),
        // Sizes.
        case("at the limit, declared", chat(&invalid_body_of(LIMIT)), 400, "invalid_json", "not valid JSON"),
        case("one byte over, declared", chat(&invalid_body_of(LIMIT + 1)), 413, "request_too_large", "MAX_BODY_BYTES"),
        case("at the limit, chunked", chunked(&invalid_body_of(LIMIT), 1000), 400, "invalid_json", "not valid JSON"),
        case("one byte over, chunked", chunked(&invalid_body_of(LIMIT + 1), 1000), 413, "request_too_large", "MAX_BODY_BYTES"),
        case(
            "declares more than the limit, sends little",
            raw("POST", "/v1/chat/completions", &[("x-api-key", KEY), ("content-length", "999999")], b"{}"),
            413,
            "request_too_large",
            "MAX_BODY_BYTES",
        ),
        Case { name: "lying Content-Length, then silence", request: lying, half_close: true, status: 400, code: "invalid_body", says: "could not be read" },
        by_hyper(
            "Content-Length not a number",
            raw("POST", "/v1/chat/completions", &[("x-api-key", KEY), ("content-length", "ten")], b""),
            400,
        ),
        by_hyper(
            "two different Content-Lengths",
            raw("POST", "/v1/chat/completions", &[("x-api-key", KEY), ("content-length", "2"), ("content-length", "3")], b"{}"),
            400,
        ),
        // Keys.
        case("no key", raw("POST", "/v1/chat/completions", &[], CHAT.as_bytes()), 401, "invalid_api_key", "missing API key"),
        case(
            "wrong x-api-key beside a valid Bearer",
            raw("POST", "/v1/chat/completions", &[("authorization", valid_bearer.as_str()), ("x-api-key", "sk_wrong_000000000000")], CHAT.as_bytes()),
            401,
            "invalid_api_key",
            "invalid API key",
        ),
        case("Bearer with no token", with_key(("authorization", "Bearer")), 401, "invalid_api_key", "Bearer KEY"),
        case("Bearer and spaces only", with_key(("authorization", "Bearer     ")), 401, "invalid_api_key", "Bearer KEY"),
        case("Bearer, spaces, a wrong key", with_key(("authorization", "Bearer    sk_wrong_0000000000  ")), 401, "invalid_api_key", "invalid API key"),
        case("lowercase bearer, wrong key", with_key(("authorization", "bearer sk_wrong_0000000000")), 401, "invalid_api_key", "invalid API key"),
        case("Basic auth", with_key(("authorization", "Basic dXNlcjpwYXNz")), 401, "invalid_api_key", "Bearer KEY"),
        case("key with the last byte changed", with_key(("x-api-key", leak(near_miss_last))), 401, "invalid_api_key", "invalid API key"),
        case("key with the first byte changed", with_key(("x-api-key", leak(near_miss_first))), 401, "invalid_api_key", "invalid API key"),
        case("a prefix of the key", with_key(("x-api-key", leak(prefix))), 401, "invalid_api_key", "invalid API key"),
        case("the key and one byte more", with_key(("x-api-key", leak(longer))), 401, "invalid_api_key", "invalid API key"),
        case("a disabled key", with_key(("x-api-key", KEY_DISABLED)), 401, "invalid_api_key", "invalid API key"),
        case("an empty x-api-key", with_key(("x-api-key", "")), 401, "invalid_api_key", "empty"),
        case(
            "two x-api-key headers",
            raw("POST", "/v1/chat/completions", &[("x-api-key", KEY), ("x-api-key", KEY_HASHED)], CHAT.as_bytes()),
            401,
            "invalid_api_key",
            "more than one",
        ),
        case("the key's hash as the key", with_key(("x-api-key", leak(sha256_hex(KEY_HASHED)))), 401, "invalid_api_key", "invalid API key"),
        // Paths.
        case("double slash", chat_at("//v1/chat/completions"), 404, "not_found", "no such endpoint"),
        case("dot-dot", chat_at("/v1/../healthz"), 404, "not_found", "no such endpoint"),
        case("encoded dots", chat_at("/v1/%2e%2e/v1/chat/completions"), 404, "not_found", "no such endpoint"),
        case("trailing slash", chat_at("/v1/chat/completions/"), 404, "not_found", "no such endpoint"),
        case("upper case", chat_at("/V1/CHAT/COMPLETIONS"), 404, "not_found", "no such endpoint"),
        case("query string is ignored", raw("POST", "/v1/chat/completions?model=flash", &[("x-api-key", KEY)], b"{}"), 400, "missing_model", "no \"model\""),
        case("absolute-form URI", raw("POST", "http://evil.example.com/v1/embeddings", &[("x-api-key", KEY)], b"[]"), 400, "invalid_body", "JSON object"),
        // Methods.
        case("GET on chat", raw("GET", "/v1/chat/completions", &[("x-api-key", KEY)], b""), 405, "method_not_allowed", "allowed: POST"),
        case("PUT on chat", raw("PUT", "/v1/chat/completions", &[("x-api-key", KEY)], CHAT.as_bytes()), 405, "method_not_allowed", "allowed: POST"),
        case("DELETE on models", raw("DELETE", "/v1/models", &[("x-api-key", KEY)], b""), 405, "method_not_allowed", "allowed: GET"),
        case("POST on healthz", raw("POST", "/healthz", &[], b"{}"), 405, "method_not_allowed", "allowed: GET"),
        case("a made-up method", raw("FROBNICATE", "/v1/embeddings", &[("x-api-key", KEY)], b""), 405, "method_not_allowed", "allowed: POST"),
        // The protocol.
        case(
            "HTTP/1.0 with a broken body",
            format!("POST /v1/chat/completions HTTP/1.0\r\nx-api-key: {KEY}\r\ncontent-length: 5\r\n\r\nhello").into_bytes(),
            400,
            "invalid_body",
            "JSON object",
        ),
        case("HTTP/1.0 with no key", b"GET /v1/models HTTP/1.0\r\n\r\n".to_vec(), 401, "invalid_api_key", "missing API key"),
        by_hyper("a header flood", flood, 431),
        case(
            "a 64 KiB header",
            raw("GET", "/v1/models", &[("x-junk", leak("j".repeat(64 * 1024)))], b""),
            401,
            "invalid_api_key",
            "missing API key",
        ),
        // Past 72 KiB of head, before any key is read: no connection holds more.
        by_hyper("a 300 KiB header", raw("GET", "/v1/models", &[("x-junk", leak("j".repeat(300 * 1024)))], b""), 431),
        by_hyper("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(), 400),
    ]
}

fn chat_at(path: &str) -> Vec<u8> {
    raw("POST", path, &[("x-api-key", KEY)], CHAT.as_bytes())
}

/// Sends one raw request and returns (status, body) of the answer; the proxy closes after it.
async fn send_raw(proxy: &Proxy, case: &Case) -> (u16, String) {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(&case.request).await.unwrap();
    if case.half_close {
        stream.shutdown().await.unwrap();
    }
    let mut received = Vec::new();
    let _ = within(case.name, stream.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{}: no HTTP response: {text:?}", case.name));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn every_bad_request_is_refused_clearly_and_never_reaches_vertex() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    env.insert("MAX_BODY_BYTES".into(), LIMIT.to_string());
    env.insert("BODY_READ_TIMEOUT_SECS".into(), "5".into());
    let mut proxy = spawn(&env).await;
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let (status, body) = send_raw(&proxy, case).await;
        if status != case.status {
            failures.push(format!(
                "{}: status {status}, expected {}: {body}",
                case.name, case.status
            ));
            continue;
        }
        if case.code.is_empty() {
            if !body.is_empty() {
                failures.push(format!(
                    "{}: hyper's answer has a body: {body:?}",
                    case.name
                ));
            }
            continue;
        }
        if let Err(wrong) = check_error(&body, case.status, case.code, case.says) {
            failures.push(format!("{}: {wrong}", case.name));
        }
        for secret in [KEY, KEY_HASHED, KEY_FLASH_ONLY, GOOGLE_TOKEN] {
            if body.contains(secret) {
                failures.push(format!("{}: the error holds a secret", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(vertex.count(), 0, "a bad request reached Vertex");

    // Still serving, and no panic on the way.
    proxy.assert_healthy_and_stop().await;
    println!("bad input: {} cases, 0 reached Vertex", cases.len());
}

#[tokio::test]
async fn every_method_on_every_path() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let proxy = spawn(&env(&vertex, &metadata)).await;
    let methods = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
    ];
    // (path, allowed methods, the status for an allowed method without a key)
    let paths = [
        ("/", "GET HEAD", 200),
        ("/docs", "GET HEAD", 200),
        ("/healthz", "GET HEAD", 200),
        ("/health", "GET HEAD", 200),
        ("/v1/models", "GET HEAD", 401),
        ("/models", "GET HEAD", 401),
        ("/v1/models/flash", "GET HEAD", 401),
        ("/v1/chat/completions", "POST", 401),
        ("/chat/completions", "POST", 401),
        ("/v1/embeddings", "POST", 401),
        ("/embeddings", "POST", 401),
        ("/v1/completions", "", 404),
        ("/nope", "", 404),
    ];
    let mut checked = 0;
    for (path, allowed, status) in paths {
        for method in methods {
            let expected = if allowed.is_empty() {
                404
            } else if allowed.split(' ').any(|m| m == method) {
                status
            } else {
                405
            };
            let case = Case {
                name: "matrix",
                request: raw(method, path, &[], b""),
                half_close: false,
                status: expected,
                code: "",
                says: "",
            };
            let (got, body) = send_raw(&proxy, &case).await;
            assert_eq!(got, expected, "{method} {path}: {body}");
            if expected >= 400 && method != "HEAD" {
                let (code, says) = match expected {
                    401 => ("invalid_api_key", "missing API key".to_owned()),
                    404 => ("not_found", format!("no such endpoint: {path}")),
                    405 => (
                        "method_not_allowed",
                        format!("allowed: {}", allowed.replace(' ', ", ")),
                    ),
                    _ => unreachable!("{expected}"),
                };
                if let Err(wrong) = check_error(&body, expected, code, &says) {
                    panic!("{method} {path}: {wrong}");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, methods.len() * paths.len());
    assert_eq!(vertex.count(), 0);
}

#[tokio::test]
async fn bad_h2c_frames_do_not_hurt_the_proxy() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let mut proxy = spawn(&env(&vertex, &metadata)).await;
    let garbage: [&[u8]; 3] = [
        // The preface, then a frame header claiming 16 MiB of DATA on stream 1.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\x00\x00\x00\x00\x00\x01",
        // The preface, then a SETTINGS frame of the wrong length.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x05\x04\x00\x00\x00\x00\x00abcde",
        // Half a preface.
        b"PRI * HTTP/2.0\r\n",
    ];
    for bytes in garbage {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut sink = Vec::new();
        // The proxy ends the connection (GOAWAY, or just closing); it must not hang.
        let _ = within(
            "the proxy to end a broken h2c connection",
            stream.read_to_end(&mut sink),
        )
        .await;
    }
    assert_eq!(vertex.count(), 0);
    proxy.assert_healthy_and_stop().await;
}
