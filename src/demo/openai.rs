//! The stand-in's OpenAI endpoint, as Vertex serves it for Gemini: chat completions, whole or
//! streamed, and embeddings.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::{arguments_for, gemini3, google_error, paced_events, text_of, words};
use crate::body::{self, ProxyBody};

/// What the stand-in answers an authorized request to Vertex's OpenAI endpoint at `path`.
/// The test suites' fake Vertex answers the same way.
pub fn answer(path: &str, body: &Value) -> Response<ProxyBody> {
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

/// A chat answer, before it is shaped as one JSON body or as a stream of chunks.
struct Chat {
    model: String,
    /// The call to the first tool offered; no text then.
    tool_call: Option<Value>,
    text: String,
    usage: Value,
}

/// Every answer has the same id and time: the stand-in is deterministic.
const ID: &str = "chatcmpl-demo";
const CREATED: u64 = 1_700_000_000;

fn chat(body: &Value) -> Response<ProxyBody> {
    let (tool_call, text) = reply(body);
    let prompt_tokens: u64 = body["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| words(&text_of(&m["content"]))).sum())
        .unwrap_or(1);
    let completion_tokens = words(&text);
    let chat = Chat {
        model: body["model"].as_str().unwrap_or("unknown").to_owned(),
        tool_call,
        text,
        usage: json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}),
    };
    if body["stream"] == true {
        chat.streamed(body["stream_options"]["include_usage"] == true)
    } else {
        chat.whole()
    }
}

impl Chat {
    fn finish_reason(&self) -> &'static str {
        if self.tool_call.is_some() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    fn whole(&self) -> Response<ProxyBody> {
        let mut message = json!({"role": "assistant", "content": if self.tool_call.is_some() { Value::Null } else { json!(self.text) }});
        if let Some(call) = &self.tool_call {
            message["tool_calls"] = json!([call]);
        }
        json_ok(&json!({
            "id": ID, "object": "chat.completion", "created": CREATED, "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason()}],
            "usage": self.usage,
        }))
    }

    fn streamed(&self, with_usage: bool) -> Response<ProxyBody> {
        let mut events = vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        if let Some(call) = &self.tool_call {
            let mut call = call.clone();
            call["index"] = json!(0);
            events.push(self.chunk(json!({"tool_calls": [call]}), Value::Null));
        } else {
            let pieces = self.text.split_inclusive(' ');
            events.extend(pieces.map(|piece| self.chunk(json!({"content": piece}), Value::Null)));
        }
        events.push(self.chunk(json!({}), json!(self.finish_reason())));
        if with_usage {
            events.push(json!({"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": self.model, "choices": [], "usage": self.usage}));
        }
        let mut frames: Vec<Bytes> = events
            .iter()
            .map(|e| Bytes::from(format!("data: {e}\n\n")))
            .collect();
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        paced_events(frames)
    }

    fn chunk(&self, delta: Value, finish: Value) -> Value {
        json!({"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": self.model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }
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
    json_ok(&payload)
}

fn json_ok(payload: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(payload.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
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
