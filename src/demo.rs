//! `vertex-proxy demo`: a built-in stand-in for Vertex on a loopback port, so a new user can
//! try the real proxy (keys, aliases, streaming, logs) with no Google account.
//!
//! The stand-in is deterministic: chat echoes the last user message, offers of tools are
//! answered with a call to the first tool, and embeddings are derived from a hash of the input.
//! It is as strict as Vertex where clients trip: errors come in Google's array-wrapped
//! envelope, and Gemini 3 wants its thought signatures back ([`gemini3`]).

pub mod claude;
pub mod gemini3;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::body::{self, BoxError, ProxyBody};
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

/// The demo's aliases when the user sets none: the default ones and a Claude model, which
/// the stand-in serves too.
pub const ALIASES: &str = r#"{"flash":"google/gemini-2.5-flash","pro-preview":"google/gemini-3.1-pro-preview","sonnet":{"model":"anthropic/claude-sonnet-4-5@20250929","location":"us-east5"}}"#;

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
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let Ok(collected) = request.into_body().collect().await else {
        return google_error(StatusCode::BAD_REQUEST, "Could not read the request body.");
    };
    let Ok(body) = serde_json::from_slice::<Value>(&collected.to_bytes()) else {
        return google_error(StatusCode::BAD_REQUEST, "Invalid JSON payload received.");
    };
    vertex_answer(&path, &headers, &body)
}

/// What the stand-in answers an authorized request to Vertex at `path`: Claude's endpoints
/// or the OpenAI ones. The test suites' fake Vertex answers the same way.
pub fn vertex_answer(path: &str, headers: &http::HeaderMap, body: &Value) -> Response<ProxyBody> {
    if let Some(model) = path
        .split("/publishers/google/models/")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(":predict"))
    {
        return predict(model, body);
    }
    claude::answer(path, headers, body).unwrap_or_else(|| openai_answer(path, body))
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

/// What the stand-in answers an authorized request to Vertex's OpenAI endpoint at `path`.
/// The test suites' fake Vertex answers the same way.
pub fn openai_answer(path: &str, body: &Value) -> Response<ProxyBody> {
    if let Some((status, _, message)) = gemini3::refusal(path, body) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        return google_error(status, &message);
    }
    if path.ends_with("/endpoints/openapi/chat/completions") {
        chat(body)
    } else if path.ends_with("/endpoints/openapi/embeddings") {
        embeddings(body)
    } else {
        google_error(
            StatusCode::NOT_FOUND,
            "The requested URL was not found on this server.",
        )
    }
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

/// What the stand-in "model" says: a tool call, a reply to a tool result, or an echo.
fn reply(body: &Value) -> (Option<Value>, String) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default();
    if last["role"] == "tool" {
        return (
            None,
            format!("The tool said: {}", text_of(&last["content"])),
        );
    }
    if let Some(function) = body["tools"]
        .as_array()
        .and_then(|t| t.first())
        .map(|t| &t["function"])
    {
        let arguments = arguments_for(&function["parameters"], &last_user);
        let id = gemini3::call_id(body);
        let mut call = json!({
            "id": id,
            "type": "function",
            "function": {"name": function["name"], "arguments": Value::Object(arguments).to_string()},
        });
        // Gemini 3 signs the first call of each step, and wants it back.
        if gemini3::is_gemini3(body["model"].as_str().unwrap_or_default()) {
            let signature = gemini3::signature_for(&id);
            call["extra_content"] = json!({"google": {"thought_signature": signature}});
        }
        return (Some(call), String::new());
    }
    (None, format!("You said: {last_user}"))
}

fn chat(body: &Value) -> Response<ProxyBody> {
    let model = body["model"].as_str().unwrap_or("unknown").to_owned();
    let (tool_call, text) = reply(body);
    let prompt_tokens: u64 = body["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| words(&text_of(&m["content"]))).sum())
        .unwrap_or(1);
    let completion_tokens = words(&text);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    let finish = if tool_call.is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    let created = 1_700_000_000u64;
    let id = "chatcmpl-demo";

    if body["stream"] != true {
        let mut message = json!({"role": "assistant", "content": if tool_call.is_some() { Value::Null } else { json!(text) }});
        if let Some(call) = &tool_call {
            message["tool_calls"] = json!([call]);
        }
        let payload = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        });
        let mut response = Response::new(body::full(payload.to_string()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        return response;
    }

    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if let Some(call) = tool_call {
        let mut call = call;
        call["index"] = json!(0);
        events.push(chunk(json!({"tool_calls": [call]}), Value::Null));
    } else {
        let mut words = text.split_inclusive(' ');
        for piece in words.by_ref() {
            events.push(chunk(json!({"content": piece}), Value::Null));
        }
    }
    events.push(chunk(json!({}), json!(finish)));
    if body["stream_options"]["include_usage"] == true {
        events.push(json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage}));
    }
    let mut frames: Vec<Bytes> = events
        .iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));

    // Paced like a model, so the stream is visibly a stream.
    let mut response = Response::new(ChannelBody::paced(frames, Duration::from_millis(30)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn embeddings(body: &Value) -> Response<ProxyBody> {
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => {
            return google_error(
                StatusCode::BAD_REQUEST,
                "\"input\" must be a string or an array of strings.",
            );
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let digest = crate::keys::sha256(input.as_bytes());
            let vector: Vec<f64> = digest[..8].iter().map(|b| f64::from(*b) / 255.0).collect();
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|i| words(i)).sum();
    let payload = json!({"object": "list", "data": data, "model": body["model"],
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    let mut response = Response::new(body::full(payload.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A body fed frame by frame from a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl ChannelBody {
    /// `frames`, one every `every`, as a model would send them; it stops when the reader
    /// goes away.
    fn paced(frames: Vec<Bytes>, every: Duration) -> ProxyBody {
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            for frame in frames {
                if sender.send(frame).await.is_err() {
                    return; // the proxy went away: stop "generating"
                }
                tokio::time::sleep(every).await;
            }
        });
        ChannelBody(receiver).boxed()
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_the_last_user_message() {
        let body = json!({"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": [{"type": "text", "text": "second"}]}]});
        assert_eq!(reply(&body), (None, "You said: second".to_owned()));
    }

    #[test]
    fn calls_the_first_tool_then_reads_its_result() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]);
        let (call, _) =
            reply(&json!({"tools": tools, "messages": [{"role": "user", "content": "Paris"}]}));
        let call = call.expect("a tool call");
        assert_eq!(call["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"city": "Paris", "days": 1}));
        assert!(call.get("extra_content").is_none(), "only Gemini 3 signs");
        let gemini3 = json!({"model": "google/gemini-3.1-pro-preview", "tools": tools, "messages": [{"role": "user", "content": "Paris"}]});
        let (signed, _) = reply(&gemini3);
        let signed = signed.expect("a tool call");
        let id = signed["id"].as_str().unwrap();
        assert_eq!(
            signed["extra_content"]["google"]["thought_signature"],
            gemini3::signature_for(id)
        );
        let (call, text) = reply(
            &json!({"tools": tools, "messages": [{"role": "user", "content": "Paris"}, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}),
        );
        assert!(call.is_none());
        assert_eq!(text, "The tool said: sunny");
    }
}
