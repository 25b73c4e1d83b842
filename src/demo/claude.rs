//! The stand-in's Claude, as Vertex serves it: `…/publishers/anthropic/models/M:rawPredict`
//! (JSON), `:streamRawPredict` (Anthropic SSE with Vertex's own `vertex_event`) and
//! `count-tokens:rawPredict`. As strict as Vertex where clients trip: an `anthropic-beta` it
//! does not know is a 400, and so is a body with a `model` or without `anthropic_version`.

use http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};

use super::{arguments_for, paced_events, text_of, words};
use crate::body::ProxyBody;
use crate::error::json_response;

/// The betas the stand-in accepts, as Vertex does; any other is refused.
const KNOWN_BETAS: [&str; 3] = [
    "interleaved-thinking-2025-05-14",
    "context-1m-2025-08-07",
    "web-search-2025-03-05",
];

/// The stand-in's answer to a Claude path, or `None` if `path` is not one.
pub fn answer(path: &str, headers: &HeaderMap, body: &Value) -> Option<Response<ProxyBody>> {
    let rest = path.split("/publishers/anthropic/models/").nth(1)?;
    let (model, method) = rest.split_once(':')?;
    if let Some(refusal) = refusal(headers, body, model) {
        return Some(refusal);
    }
    Some(match (model, method) {
        ("count-tokens", "rawPredict") => count_tokens(body),
        (_, "rawPredict") => message(model, body),
        (_, "streamRawPredict") => stream(model, body),
        _ => error(StatusCode::NOT_FOUND, "not_found_error", "Unknown method."),
    })
}

/// Claude's error shape, as Vertex passes it on.
pub fn error(status: StatusCode, kind: &str, message: &str) -> Response<ProxyBody> {
    let payload = json!({"type": "error", "error": {"type": kind, "message": message}});
    json_response(status, &payload)
}

fn refusal(headers: &HeaderMap, body: &Value, model: &str) -> Option<Response<ProxyBody>> {
    let bad = StatusCode::BAD_REQUEST;
    for value in headers.get_all("anthropic-beta") {
        let value = value.to_str().unwrap_or_default();
        let unknown: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|b| !KNOWN_BETAS.contains(b))
            .collect();
        if !unknown.is_empty() {
            let message = format!(
                "Unexpected value(s) `{}` for the `anthropic-beta` header. Please consult our documentation at docs.anthropic.com or try again without the header.",
                unknown.join(", ")
            );
            return Some(error(bad, "invalid_request_error", &message));
        }
    }
    if body.get("anthropic_version").is_none() {
        let message = "anthropic_version: Field required";
        return Some(error(bad, "invalid_request_error", message));
    }
    let counting = model == "count-tokens";
    match (counting, body.get("model")) {
        (false, Some(_)) => Some(error(
            bad,
            "invalid_request_error",
            "model: Extra inputs are not permitted",
        )),
        (true, None) => Some(error(bad, "invalid_request_error", "model: Field required")),
        _ => None,
    }
}

/// What the stand-in's Claude says: a call to the first tool, a reply to a tool's result,
/// or an echo.
fn reply(body: &Value) -> Reply {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let blocks = last["content"].as_array().cloned().unwrap_or_default();
    if let Some(result) = blocks.iter().find(|b| b["type"] == "tool_result") {
        let said = match &result["content"] {
            Value::String(text) => text.clone(),
            other => text_of(other),
        };
        return Reply::Text(format!("The tool said: {said}"));
    }
    let said = text_of(&last["content"]);
    if let Some(tool) = body["tools"].as_array().and_then(|t| t.first()) {
        let input = arguments_for(&tool["input_schema"], &said);
        let digest = crate::keys::sha256(body["messages"].to_string().as_bytes());
        let id = format!("toolu_vrtx_{}", hex::encode(&digest[..8]));
        let name = tool["name"].as_str().unwrap_or("tool").to_owned();
        return Reply::Tool { id, name, input };
    }
    Reply::Text(format!("You said: {said}"))
}

enum Reply {
    Text(String),
    Tool {
        id: String,
        name: String,
        input: serde_json::Map<String, Value>,
    },
}

fn input_tokens(body: &Value) -> u64 {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    messages
        .iter()
        .map(|m| words(&text_of(&m["content"])))
        .sum::<u64>()
        .max(1)
}

fn count_tokens(body: &Value) -> Response<ProxyBody> {
    json_response(StatusCode::OK, &json!({"input_tokens": input_tokens(body)}))
}

fn message(model: &str, body: &Value) -> Response<ProxyBody> {
    let input = input_tokens(body);
    let (content, stop, output) = match reply(body) {
        Reply::Text(text) => (
            json!([{"type": "text", "text": text}]),
            "end_turn",
            words(&text),
        ),
        Reply::Tool { id, name, input } => (
            json!([{"type": "tool_use", "id": id, "name": name, "input": input}]),
            "tool_use",
            3,
        ),
    };
    let payload = json!({
        "id": "msg_vrtx_standin", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2, "output_tokens": output},
    });
    json_response(StatusCode::OK, &payload)
}

fn stream(model: &str, body: &Value) -> Response<ProxyBody> {
    let input = input_tokens(body);
    let start = json!({"type": "message_start", "message": {
        "id": "msg_vrtx_standin", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2, "output_tokens": 1},
    }});
    let mut events = vec![("message_start", start), ("ping", json!({"type": "ping"}))];
    let (stop, output) = match reply(body) {
        Reply::Text(text) => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            for piece in text.split_inclusive(' ') {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
            ("end_turn", words(&text))
        }
        Reply::Tool { id, name, input } => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
            ));
            let arguments = Value::Object(input).to_string();
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            ));
            ("tool_use", 3)
        }
    };
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output}}),
    ));
    // Vertex's own event, which strict clients fail on.
    events.push((
        "vertex_event",
        json!({"type": "vertex_event", "usage": {"input_tokens": input, "output_tokens": output}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    let frames = events
        .into_iter()
        .map(|(name, data)| bytes::Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
    paced_events(frames.collect())
}
