//! The way out: chat completion chunks (or one whole completion) become the Responses API's
//! output items and its stream of events, each with `type` and an increasing
//! `sequence_number`, ending in `response.completed`, `response.incomplete` or
//! `response.failed`.

use serde_json::{Map, Value, json};

use super::ending::{failure, usage_of};
use super::request::Tools;

/// What a response is, besides its output, from the request it answers.
pub(crate) struct Context {
    pub id: String,
    pub created_at: u64,
    /// The model as the client named it.
    pub model: String,
    pub tools: Tools,
    pub echo: Map<String, Value>,
}

/// The item being written, other than tool calls.
enum Open {
    None,
    Reasoning { id: String, at: usize, text: String },
    Message { id: String, at: usize, text: String },
}

/// A tool call being written: its arguments come in pieces.
struct Call {
    /// The chat delta's `index`.
    index: u64,
    id: String,
    at: usize,
    call_id: String,
    /// Its name in Chat Completions.
    chat: String,
    arguments: String,
}

/// The output of one response, built as chunks come, and the events that tell it.
pub(crate) struct Builder {
    cx: Context,
    sequence: u64,
    /// Events not yet sent.
    out: Vec<u8>,
    /// Finished items, by output index.
    items: Vec<(usize, Value)>,
    next_at: usize,
    open: Open,
    calls: Vec<Call>,
    usage: Option<Value>,
    finish: Option<String>,
    error: Option<Value>,
    /// Only the whole response is wanted (a JSON answer): events are not written.
    pub quiet: bool,
}

impl Builder {
    pub fn new(cx: Context) -> Builder {
        Builder {
            cx,
            sequence: 0,
            out: Vec::new(),
            items: Vec::new(),
            next_at: 0,
            open: Open::None,
            calls: Vec::new(),
            usage: None,
            finish: None,
            error: None,
            quiet: false,
        }
    }

    /// The events written since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    fn emit(&mut self, kind: &str, mut event: Value) {
        if self.quiet {
            // Serialising the events is most of a JSON answer's translation: not for nothing.
            self.sequence += 1;
            return;
        }
        event["type"] = json!(kind);
        event["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        self.out.extend_from_slice(b"event: ");
        self.out.extend_from_slice(kind.as_bytes());
        self.out.extend_from_slice(b"\ndata: ");
        serde_json::to_writer(&mut self.out, &event).expect("a JSON value serializes");
        self.out.extend_from_slice(b"\n\n");
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) {
        let response = self.response("in_progress");
        self.emit("response.created", json!({"response": response}));
        self.emit("response.in_progress", json!({"response": response}));
    }

    /// The response object in `status`, with the items finished so far.
    pub fn response(&self, status: &str) -> Value {
        let mut items = self.items.clone();
        items.sort_by_key(|(at, _)| *at);
        let output: Vec<Value> = items.into_iter().map(|(_, item)| item).collect();
        let mut response = json!({
            "id": self.cx.id, "object": "response", "created_at": self.cx.created_at,
            "status": status, "model": self.cx.model, "output": output,
            "error": self.error, "incomplete_details": null, "usage": self.usage,
            "store": false, "tools": [], "parallel_tool_calls": true, "tool_choice": "auto",
            "previous_response_id": null,
        });
        for (field, value) in &self.cx.echo {
            response[field] = value.clone();
        }
        if status == "incomplete" {
            let reason = match self.finish.as_deref() {
                Some("content_filter") => "content_filter",
                _ => "max_output_tokens",
            };
            response["incomplete_details"] = json!({"reason": reason});
        }
        response
    }

    /// One chat completion chunk, or a whole completion (its `message` read as one delta).
    pub fn chunk(&mut self, chunk: &Value) {
        if let Some(error) = chunk.get("error").filter(|e| e.is_object()) {
            let status = error["code"].as_u64().unwrap_or(500) as u16;
            let message = error["message"].as_str().unwrap_or("the upstream failed");
            self.fail(failure(status, error["status"].as_str(), message, None));
            return;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage_of(usage));
        }
        let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else {
            return;
        };
        let delta = match choice.get("delta") {
            Some(delta) => delta,
            None => &choice["message"],
        };
        for field in ["reasoning_content", "reasoning"] {
            if let Some(text) = delta[field].as_str().filter(|t| !t.is_empty()) {
                self.reasoning(text);
            }
        }
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.text(text);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            self.tool_call(call);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish = Some(reason.to_owned());
        }
    }

    fn reasoning(&mut self, text: &str) {
        if !matches!(self.open, Open::Reasoning { .. }) {
            self.close_open();
            let (id, at) = (format!("rs_{}_{}", self.cx.id, self.next_at), self.next_at);
            self.next_at += 1;
            let item = json!({"type": "reasoning", "id": id, "summary": []});
            self.emit(
                "response.output_item.added",
                json!({"output_index": at, "item": item}),
            );
            let part = json!({"type": "summary_text", "text": ""});
            self.emit(
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": at, "summary_index": 0, "part": part}),
            );
            self.open = Open::Reasoning {
                id,
                at,
                text: String::new(),
            };
        }
        let Open::Reasoning { id, at, text: all } = &mut self.open else {
            unreachable!("a reasoning item was just opened")
        };
        all.push_str(text);
        let event = json!({"item_id": id, "output_index": at, "summary_index": 0, "delta": text});
        self.emit("response.reasoning_summary_text.delta", event);
    }

    fn text(&mut self, text: &str) {
        if !matches!(self.open, Open::Message { .. }) {
            self.close_open();
            self.close_calls();
            let (id, at) = (format!("msg_{}_{}", self.cx.id, self.next_at), self.next_at);
            self.next_at += 1;
            let item = json!({"type": "message", "id": id, "status": "in_progress",
                              "role": "assistant", "content": []});
            self.emit(
                "response.output_item.added",
                json!({"output_index": at, "item": item}),
            );
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            self.emit(
                "response.content_part.added",
                json!({"item_id": id, "output_index": at, "content_index": 0, "part": part}),
            );
            self.open = Open::Message {
                id,
                at,
                text: String::new(),
            };
        }
        let Open::Message { id, at, text: all } = &mut self.open else {
            unreachable!("a message was just opened")
        };
        all.push_str(text);
        let event = json!({"item_id": id, "output_index": at, "content_index": 0,
                           "delta": text, "logprobs": []});
        self.emit("response.output_text.delta", event);
    }

    fn tool_call(&mut self, delta: &Value) {
        let index = delta["index"].as_u64().unwrap_or(self.calls.len() as u64);
        if !self.calls.iter().any(|c| c.index == index) {
            self.close_open();
            let (id, at) = (format!("fc_{}_{}", self.cx.id, self.next_at), self.next_at);
            self.next_at += 1;
            let call = Call {
                index,
                id,
                at,
                call_id: delta["id"].as_str().unwrap_or_default().to_owned(),
                chat: delta["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                arguments: String::new(),
            };
            let item = self.call_item(&call, "in_progress");
            self.emit(
                "response.output_item.added",
                json!({"output_index": at, "item": item}),
            );
            self.calls.push(call);
        }
        let custom = {
            let call = (self.calls.iter_mut())
                .find(|c| c.index == index)
                .expect("added above");
            if let Some(id) = delta["id"].as_str().filter(|_| call.call_id.is_empty()) {
                call.call_id = id.to_owned();
            }
            let arguments = delta["function"]["arguments"].as_str().unwrap_or_default();
            call.arguments.push_str(arguments);
            let custom = self.cx.tools.by_chat(&call.chat).is_some_and(|t| t.custom);
            (!custom && !arguments.is_empty()).then(|| (call.id.clone(), call.at, arguments))
        };
        // A custom tool's input is the string inside its arguments: it goes out whole.
        if let Some((id, at, arguments)) = custom {
            let event = json!({"item_id": id, "output_index": at, "delta": arguments});
            self.emit("response.function_call_arguments.delta", event);
        }
    }

    /// A call as an output item: `function_call`, or `custom_tool_call` for a freeform tool,
    /// named as the request named it.
    fn call_item(&self, call: &Call, status: &str) -> Value {
        let tool = self.cx.tools.by_chat(&call.chat);
        let name = tool.map_or(call.chat.as_str(), |t| t.name.as_str());
        let mut item = match tool.is_some_and(|t| t.custom) {
            true => {
                let input: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
                let input = input["input"].as_str().unwrap_or_default().to_owned();
                json!({"type": "custom_tool_call", "id": call.id, "call_id": call.call_id,
                       "name": name, "input": input, "status": status})
            }
            false => json!({"type": "function_call", "id": call.id, "call_id": call.call_id,
                            "name": name, "arguments": call.arguments, "status": status}),
        };
        if let Some(namespace) = tool.and_then(|t| t.namespace.as_deref()) {
            item["namespace"] = json!(namespace);
        }
        item
    }

    /// Finishes the reasoning item or message being written.
    fn close_open(&mut self) {
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::Reasoning { id, at, text } => {
                let base = json!({"item_id": id, "output_index": at, "summary_index": 0});
                let mut done = base.clone();
                done["text"] = json!(text);
                self.emit("response.reasoning_summary_text.done", done);
                let part = json!({"type": "summary_text", "text": text});
                let mut done = base;
                done["part"] = part.clone();
                self.emit("response.reasoning_summary_part.done", done);
                let item = json!({"type": "reasoning", "id": id, "summary": [part]});
                self.item_done(at, item);
            }
            Open::Message { id, at, text } => {
                let base = json!({"item_id": id, "output_index": at, "content_index": 0});
                let mut done = base.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                self.emit("response.output_text.done", done);
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                let mut done = base;
                done["part"] = part.clone();
                self.emit("response.content_part.done", done);
                let item = json!({"type": "message", "id": id, "status": "completed",
                                  "role": "assistant", "content": [part]});
                self.item_done(at, item);
            }
        }
    }

    /// Finishes every tool call being written, in the order they began.
    fn close_calls(&mut self) {
        for call in std::mem::take(&mut self.calls) {
            let item = self.call_item(&call, "completed");
            let (id, at) = (&call.id, call.at);
            if item["type"] == "custom_tool_call" {
                let input = &item["input"];
                let delta = json!({"item_id": id, "output_index": at, "delta": input});
                self.emit("response.custom_tool_call_input.delta", delta);
                let done = json!({"item_id": id, "output_index": at, "input": input});
                self.emit("response.custom_tool_call_input.done", done);
            } else {
                let done = json!({"item_id": id, "output_index": at, "name": item["name"],
                                  "arguments": call.arguments});
                self.emit("response.function_call_arguments.done", done);
            }
            self.item_done(at, item);
        }
    }

    fn item_done(&mut self, at: usize, item: Value) {
        self.emit(
            "response.output_item.done",
            json!({"output_index": at, "item": item}),
        );
        self.items.push((at, item));
    }

    /// The answer failed: `error` is `{code, message}`. Only the first failure counts.
    pub fn fail(&mut self, error: Value) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// The upstream's answer has ended: every item is finished, and the last event says how
    /// the response ended. `ended` says the answer came to its end (a finish reason or
    /// `[DONE]`), not merely that the bytes stopped.
    pub fn finish(&mut self, ended: bool) -> Value {
        self.close_open();
        self.close_calls();
        if self.error.is_none() && !ended && self.finish.is_none() {
            let message = "the upstream's stream ended before its answer did";
            self.fail(json!({"code": "server_error", "message": message}));
        }
        let (kind, status) = match (&self.error, self.finish.as_deref()) {
            (Some(_), _) => ("response.failed", "failed"),
            (None, Some("length" | "content_filter")) => ("response.incomplete", "incomplete"),
            (None, _) => ("response.completed", "completed"),
        };
        let response = self.response(status);
        self.emit(kind, json!({"response": response}));
        response
    }
}
