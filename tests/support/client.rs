//! Requests to the proxy, and what must never come back in them.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::channel::Sender;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::*;

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Checks the status, showing the body when it is not the one expected.
    pub fn expect(&self, status: StatusCode) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
    }

    /// The message of an OpenAI-shaped error, checking the shape on the way.
    pub fn error_message(&self) -> String {
        let json = self.json();
        let error = &json["error"];
        assert!(error["type"].is_string(), "not OpenAI-shaped: {json}");
        assert!(error["code"].is_string(), "not OpenAI-shaped: {json}");
        error["message"].as_str().expect("a message").to_owned()
    }
}

/// Starts a request and returns the response head with its body still streaming.
pub async fn start_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    let uri: http::Uri = url.parse().unwrap();
    let stream = tokio::net::TcpStream::connect(format!(
        "{}:{}",
        uri.host().unwrap(),
        uri.port_u16().unwrap()
    ))
    .await
    .expect("connect to the proxy");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(uri.path_and_query().unwrap().as_str());
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", uri.authority().unwrap().as_str());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).unwrap();
    within("the response head", sender.send_request(request))
        .await
        .expect("a response")
}

/// Starts a streaming chat completion and returns the response with its body still open.
pub async fn start_stream(proxy: &impl Served) -> Response<Incoming> {
    start_request(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[("x-api-key", KEY)],
        r#"{"model":"flash","stream":true}"#,
    )
    .await
}

/// Has the fake send a first chunk, starts a stream through the proxy, and returns the body
/// once the client holds that chunk: a stream provably in flight. (The proxy holds a stream's
/// head until its first event, so the chunk goes first.)
pub async fn stream_in_flight(proxy: &impl Served, tx: &mut Sender<Bytes>) -> Incoming {
    tx.send_data(Bytes::from("data: one\n\n")).await.unwrap();
    let mut body = start_stream(proxy).await.into_body();
    let first = within("the first chunk", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: one\n\n");
    body
}

pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let response = start_request(method, url, headers, body).await;
    let (parts, body) = response.into_parts();
    let body = within("the response body", body.collect())
        .await
        .expect("a complete body")
        .to_bytes();
    // The Google token never reaches a client, in a header or a body; nor does any key.
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains(GOOGLE_TOKEN),
            "the token is in response header {name}"
        );
    }
    let text = String::from_utf8_lossy(&body);
    for credential in credentials() {
        assert!(
            !text.contains(&credential),
            "a key, hash or token is in a response"
        );
    }
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn post(proxy: &impl Served, path: &str, key: &str, body: &str) -> Answer {
    request(
        Method::POST,
        &proxy.url(path),
        &[("x-api-key", key), ("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

/// The status of a chat completion with `key`.
pub async fn chat_status(proxy: &impl Served, key: &str) -> StatusCode {
    post(proxy, "/v1/chat/completions", key, CHAT).await.status
}

pub async fn get(proxy: &impl Served, path: &str, key: &str) -> Answer {
    request(
        Method::GET,
        &proxy.url(path),
        &[("x-api-key", key)],
        Bytes::new(),
    )
    .await
}

/// A chat request whose prompt is a sentinel: it must never appear in a log line.
pub const CHAT: &str =
    r#"{"model":"flash","messages":[{"role":"user","content":"prompt-sentinel-1f2e"}]}"#;
pub const PROMPT_SENTINEL: &str = "prompt-sentinel-1f2e";
/// What the fake Vertex answers in `completion`; it must never appear in a log line either.
pub const ANSWER_SENTINEL: &str = "answer-sentinel-9c8d";

/// What must never reach a client or a log: the keys, their hashes, the Google token.
pub fn credentials() -> Vec<String> {
    let mut credentials: Vec<String> = [KEY, KEY_FLASH_ONLY, KEY_DISABLED, KEY_HASHED]
        .iter()
        .flat_map(|k| [k.to_string(), sha256_hex(k)])
        .collect();
    credentials.push(GOOGLE_TOKEN.into());
    credentials
}

/// What must never appear in a log line: the credentials, and request and response content.
pub fn secrets() -> Vec<String> {
    let mut secrets = credentials();
    secrets.extend([PROMPT_SENTINEL.into(), ANSWER_SENTINEL.into()]);
    secrets
}
