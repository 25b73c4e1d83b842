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

/// What the stand-in "model" says: tool calls, a reply to a tool result, or an echo.
fn reply(body: &Value) -> (Vec<Value>, String) {
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
            Vec::new(),
            format!("The tool said: {}", text_of(&last["content"])),
        );
    }
    let tools = body["tools"].as_array().cloned().unwrap_or_default();
    // One call to the first tool; one to each, when the client allows parallel calls.
    let called = match body["parallel_tool_calls"] == true {
        true => tools.len(),
        false => tools.len().min(1),
    };
    let id = gemini3::call_id(body);
    let calls = tools[..called]
        .iter()
        .enumerate()
        .map(|(n, tool)| {
            let function = &tool["function"];
            let arguments = arguments_for(&function["parameters"], &last_user);
            let id = match n {
                0 => id.clone(),
                n => format!("{id}_{n}"),
            };
            let mut call = json!({
                "id": id,
                "type": "function",
                "function": {"name": function["name"], "arguments": Value::Object(arguments).to_string()},
            });
            // Gemini 3 signs the first call of each step, and wants it back.
            if n == 0 && gemini3::is_gemini3(body["model"].as_str().unwrap_or_default()) {
                let signature = gemini3::signature_for(&id);
                call["extra_content"] = json!({"google": {"thought_signature": signature}});
            }
            call
        })
        .collect::<Vec<_>>();
    if calls.is_empty() {
        return (calls, format!("You said: {last_user}"));
    }
    (calls, String::new())
}

/// A chat answer, before it is shaped as one JSON body or as a stream of chunks.
struct Chat {
    model: String,
    /// The calls to the tools offered; no text then.
    tool_calls: Vec<Value>,
    text: String,
    usage: Value,
}

/// Every answer has the same id and time: the stand-in is deterministic.
const ID: &str = "chatcmpl-demo";
const CREATED: u64 = 1_700_000_000;

fn chat(body: &Value) -> Response<ProxyBody> {
    let (tool_calls, text) = reply(body);
    let prompt_tokens: u64 = body["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| words(&text_of(&m["content"]))).sum())
        .unwrap_or(1);
    let completion_tokens = words(&text);
    let chat = Chat {
        model: body["model"].as_str().unwrap_or("unknown").to_owned(),
        tool_calls,
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
        if !self.tool_calls.is_empty() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    fn whole(&self) -> Response<ProxyBody> {
        let mut message = json!({"role": "assistant", "content": if self.tool_calls.is_empty() { json!(self.text) } else { Value::Null }});
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = json!(self.tool_calls);
        }
        json_ok(&json!({
            "id": ID, "object": "chat.completion", "created": CREATED, "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason()}],
            "usage": self.usage,
        }))
    }

    fn streamed(&self, with_usage: bool) -> Response<ProxyBody> {
        let mut events = vec![self.chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        if !self.tool_calls.is_empty() {
            events.extend(self.tool_call_deltas());
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

    /// The calls as deltas: all in one, or, for a model whose id ends in `-split`, each call
    /// in two, its arguments and its signature in the second, as a model that streams its
    /// arguments sends them.
    fn tool_call_deltas(&self) -> Vec<Value> {
        let calls = self.tool_calls.iter().enumerate().map(|(n, call)| {
            let mut call = call.clone();
            call["index"] = json!(n);
            call
        });
        if !self.model.ends_with("-split") {
            return vec![self.chunk(
                json!({"tool_calls": calls.collect::<Vec<_>>()}),
                Value::Null,
            )];
        }
        let mut deltas = Vec::new();
        for mut call in calls {
            let arguments = call["function"]["arguments"].take();
            let extra = call.as_object_mut().and_then(|c| c.remove("extra_content"));
            call["function"]["arguments"] = json!("");
            deltas.push(self.chunk(json!({"tool_calls": [call]}), Value::Null));
            let mut rest = json!({"index": call["index"], "function": {"arguments": arguments}});
            if let Some(extra) = extra {
                rest["extra_content"] = extra;
            }
            deltas.push(self.chunk(json!({"tool_calls": [rest]}), Value::Null));
        }
        deltas
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
        assert_eq!(reply(&body), (vec![], "You said: second".to_owned()));
    }

    #[test]
    fn calls_the_first_tool_then_reads_its_result() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]);
        let (calls, _) =
            reply(&json!({"tools": tools, "messages": [{"role": "user", "content": "Paris"}]}));
        let [call] = &calls[..] else {
            panic!("one tool call: {calls:?}")
        };
        assert_eq!(call["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"city": "Paris", "days": 1}));
        assert!(call.get("extra_content").is_none(), "only Gemini 3 signs");
        let gemini3 = json!({"model": "google/gemini-3.1-pro-preview", "tools": tools, "messages": [{"role": "user", "content": "Paris"}]});
        let (signed, _) = reply(&gemini3);
        let signed = &signed[0];
        let id = signed["id"].as_str().unwrap();
        assert_eq!(
            signed["extra_content"]["google"]["thought_signature"],
            gemini3::signature_for(id)
        );
        let (call, text) = reply(
            &json!({"tools": tools, "messages": [{"role": "user", "content": "Paris"}, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}),
        );
        assert!(call.is_empty());
        assert_eq!(text, "The tool said: sunny");
    }

    #[test]
    fn parallel_calls_go_to_each_tool_and_only_the_first_is_signed() {
        let tool = |name: &str| json!({"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}});
        let body = json!({"model": "google/gemini-3-split", "parallel_tool_calls": true, "tools": [tool("a"), tool("b")], "messages": [{"role": "user", "content": "go"}]});
        let (calls, _) = reply(&body);
        assert_eq!(calls.len(), 2);
        assert!(calls[0]["extra_content"].is_object() && calls[1].get("extra_content").is_none());
        assert_ne!(calls[0]["id"], calls[1]["id"]);
        // Split: each call in two deltas, the signature in the second.
        let chat = Chat {
            model: "google/gemini-3-split".into(),
            tool_calls: calls,
            text: String::new(),
            usage: json!({}),
        };
        let deltas = chat.tool_call_deltas();
        assert_eq!(deltas.len(), 4);
        let first = &deltas[0]["choices"][0]["delta"]["tool_calls"][0];
        let second = &deltas[1]["choices"][0]["delta"]["tool_calls"][0];
        assert!(first["id"].is_string() && first.get("extra_content").is_none());
        assert!(second.get("id").is_none() && second["extra_content"].is_object());
        assert_eq!(second["index"], 0);
    }
}
