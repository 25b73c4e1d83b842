//! `vertex-proxy demo`: a built-in stand-in for Vertex on a loopback port, so a new user can
//! try the real proxy (keys, aliases, streaming, logs) with no Google account.
//!
//! The stand-in is deterministic: chat echoes the last user message, offers of tools are
//! answered with a call to the first tool, and embeddings are derived from a hash of the input.
//! It is as strict as Vertex where clients trip: errors come in Google's array-wrapped
//! envelope, and Gemini 3 wants its thought signatures back ([`gemini3`]).

pub mod claude;
pub mod gemini;
pub mod gemini3;
mod openai;

pub use openai::answer as openai_answer;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::body::{BoxError, ProxyBody};
use crate::config::Env;
use crate::error::json_response;

/// The key `demo` accepts when `API_KEYS_JSON` is not set. It is printed, so it is no secret;
/// the demo listens on loopback only.
pub const KEY: &str = "sk-demo-0123456789abcdef";
pub const PROJECT: &str = "demo-project";
/// What the proxy sends as its "Google token" in demo mode; the stand-in insists on it.
pub const TOKEN_HEADER: &str = "Bearer demo-google-token";

/// Supplies the demo key when the user has not configured their own.
pub struct DemoEnv<'a>(pub &'a dyn Env);

impl DemoEnv<'_> {
    /// Whether the user brought keys of their own; otherwise the demo key is the only one.
    pub fn has_own_keys(&self) -> bool {
        ["API_KEYS_JSON", "API_KEYS_FILE"]
            .iter()
            .any(|name| self.0.var(name).is_some_and(|v| !v.trim().is_empty()))
    }
}

/// The demo's aliases when the user sets none: the default ones, one named as Gemini CLI
/// names its model, and a Claude model, which the stand-in serves too.
pub const ALIASES: &str = r#"{"flash":"google/gemini-2.5-flash","pro-preview":"google/gemini-3.1-pro-preview","gemini-3.8-flash":"google/gemini-3-flash","sonnet":{"model":"anthropic/claude-sonnet-4-5@20250929","location":"us-east5"}}"#;

impl Env for DemoEnv<'_> {
    fn var(&self, name: &str) -> Option<String> {
        if name == "API_KEYS_JSON" && !self.has_own_keys() {
            return Some(format!(r#"[{{"id":"demo","key":"{KEY}"}}]"#));
        }
        let value = self.0.var(name);
        if name == "MODEL_ALIASES_JSON" && value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            return Some(ALIASES.to_owned());
        }
        value
    }
}

pub fn print_banner(listen: SocketAddr, demo_key: bool) {
    let key = if demo_key {
        KEY
    } else {
        "<one of your API_KEYS_JSON keys>"
    };
    let base = format!("http://{listen}");
    // Not eprintln!: a closed stderr must not take the demo down.
    let _ = writeln!(
        std::io::stderr(),
        r#"
vertex-proxy demo: the real proxy in front of a built-in stand-in for Vertex AI.

  base URL for the OpenAI SDKs: {base}/v1
  API key:                      {key}

Try it:

  curl -s {base}/v1/models -H 'x-api-key: {key}'

  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' \
    -H 'content-type: application/json' \
    -d '{{"model": "flash", "messages": [{{"role": "user", "content": "Hello there"}}]}}'

  curl -sN {base}/v1/chat/completions -H 'Authorization: Bearer {key}' \
    -H 'content-type: application/json' \
    -d '{{"model": "flash", "stream": true, "messages": [{{"role": "user", "content": "Stream this please"}}]}}'

  # Claude, through the Anthropic Messages API
  curl -s {base}/v1/messages -H 'x-api-key: {key}' -H 'content-type: application/json' \
    -d '{{"model": "sonnet", "max_tokens": 64, "messages": [{{"role": "user", "content": "Hello Claude"}}]}}'

  # Gemini's own API, as Gemini CLI and the google-genai SDKs call it
  curl -s '{base}/v1beta/models/flash:generateContent' -H 'x-goog-api-key: {key}'     -H 'content-type: application/json' -d '{{"contents": [{{"parts": [{{"text": "Hello Gemini"}}]}}]}}'

  # Gemini CLI (it renames short model names, so the alias is named as Gemini's id)
  mkdir -p ~/.gemini && echo '{{"security":{{"auth":{{"selectedType":"gemini-api-key"}}}}}}' > ~/.gemini/settings.json
  GOOGLE_GEMINI_BASE_URL={base} GEMINI_API_KEY={key} gemini -m gemini-3.8-flash --skip-trust -p "Hello"

Each request writes one JSON log line on stdout. Ctrl-C stops.
"#
    );
}

/// Starts the stand-in on an ephemeral loopback port; it lives as long as the process.
pub async fn start_stand_in() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    service_fn(|request| async { Ok::<_, Infallible>(answer(request).await) });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// An error in Google's envelope, wrapped in an array as Vertex's OpenAI endpoint often
/// sends it.
pub fn google_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let code = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    let payload = json!([{"error": {"code": status.as_u16(), "message": message, "status": code}}]);
    json_response(status, &payload)
}

async fn answer(request: Request<Incoming>) -> Response<ProxyBody> {
    if request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        != Some(TOKEN_HEADER.as_bytes())
    {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        );
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let headers = request.headers().clone();
    let Ok(collected) = request.into_body().collect().await else {
        return google_error(StatusCode::BAD_REQUEST, "Could not read the request body.");
    };
    let Ok(body) = serde_json::from_slice::<Value>(&collected.to_bytes()) else {
        return google_error(StatusCode::BAD_REQUEST, "Invalid JSON payload received.");
    };
    vertex_answer(&path, &headers, &body)
}

/// What the stand-in answers an authorized request to Vertex at `path` (with its query):
/// `:predict`, Gemini's native methods, Claude's endpoints or the OpenAI ones. The test suites' fake Vertex answers the same way.
pub fn vertex_answer(path: &str, headers: &http::HeaderMap, body: &Value) -> Response<ProxyBody> {
    if let Some(model) = path
        .split("/publishers/google/models/")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(":predict"))
    {
        return predict(model, body);
    }
    if let Some(native) = gemini::answer(path, body) {
        return native;
    }
    claude::answer(path, headers, body).unwrap_or_else(|| openai::answer(path, body))
}

/// Google's embedding models by `:predict`: `{"predictions": [{"embeddings": {"values",
/// "statistics": {"token_count", "truncated"}}}]}`, values derived from a hash of each
/// text. Strict as Vertex is: `gemini-embedding-001` takes one instance a call.
fn predict(model: &str, body: &Value) -> Response<ProxyBody> {
    let Some(instances) = body["instances"].as_array() else {
        return google_error(StatusCode::BAD_REQUEST, "\"instances\" is required.");
    };
    if model == "gemini-embedding-001" && instances.len() != 1 {
        let message =
            "Unable to submit request because the model supports only 1 instance per request.";
        return google_error(StatusCode::BAD_REQUEST, message);
    }
    if instances.len() > 250 {
        return google_error(
            StatusCode::BAD_REQUEST,
            "At most 250 instances per request.",
        );
    }
    let size = body["parameters"]["outputDimensionality"]
        .as_u64()
        .unwrap_or(8) as usize;
    let predictions: Vec<Value> = instances
        .iter()
        .map(|instance| {
            let text = instance["content"].as_str().unwrap_or_default();
            let digest = crate::keys::sha256(text.as_bytes());
            let values: Vec<f64> = (0..size)
                .map(|i| f64::from(digest[i % digest.len()]) / 256.0)
                .collect();
            json!({"embeddings": {"values": values, "statistics": {"token_count": words(text), "truncated": false}}})
        })
        .collect();
    json_response(StatusCode::OK, &json!({"predictions": predictions}))
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A tool call's arguments for a JSON schema: every property, a string being `said`.
fn arguments_for(schema: &Value, said: &str) -> serde_json::Map<String, Value> {
    let mut arguments = serde_json::Map::new();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            let value = match property["type"].as_str() {
                Some("number") | Some("integer") => json!(1),
                Some("boolean") => json!(true),
                _ => json!(said),
            };
            arguments.insert(name.clone(), value);
        }
    }
    arguments
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count().max(1) as u64
}

/// An SSE response that sends `frames` one at a time, paced like a model so that the stream
/// is visibly a stream; it stops "generating" when the reader goes away.
fn paced_events(frames: Vec<Bytes>) -> Response<ProxyBody> {
    let (mut sender, body) = Channel::<Bytes, BoxError>::new(1);
    tokio::spawn(async move {
        for frame in frames {
            if sender.send_data(frame).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    response
}
