//! The way in: a Responses request (`instructions`, `input` items, `tools`) becomes the Chat
//! Completions body the route's kind sends, and the tool names it had to change are kept for
//! the way out. The request is read into borrowed structs and the chat body written
//! straight: what passes through untouched (a tool's `parameters`, a schema) is copied as
//! the client's bytes.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::{Text, key, string};
use super::messages;
use super::refuse::{bad, stateful};
use super::tools::{Tools, tool_choice, write_tools};
use crate::error::ProxyError;

/// A Responses request, translated.
pub(crate) struct Translated {
    /// The Chat Completions body.
    pub body: Vec<u8>,
    pub model: String,
    pub stream: bool,
    pub tools: Tools,
    /// The response object's last members: `store`, `tools`, and what it repeats of the
    /// request, as OpenAI's does.
    pub echo: Vec<u8>,
    /// Hosted tools Vertex cannot run, dropped (Codex always offers `web_search`).
    pub dropped: Vec<String>,
}

type Raw<'a> = Option<&'a RawValue>;

/// The members of a request the translation reads; the rest (`store`, `include`,
/// `prompt_cache_key`, `client_metadata`, …) are not sent.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    model: Text<'a>,
    #[serde(borrow, default)]
    stream: Raw<'a>,
    #[serde(borrow, default)]
    previous_response_id: Raw<'a>,
    #[serde(borrow, default)]
    conversation: Raw<'a>,
    #[serde(borrow, default)]
    background: Raw<'a>,
    #[serde(borrow, default)]
    instructions: Text<'a>,
    #[serde(borrow, default)]
    input: Raw<'a>,
    #[serde(borrow, default)]
    tools: Raw<'a>,
    #[serde(borrow, default)]
    tool_choice: Raw<'a>,
    #[serde(borrow, default)]
    parallel_tool_calls: Raw<'a>,
    #[serde(borrow, default)]
    temperature: Raw<'a>,
    #[serde(borrow, default)]
    top_p: Raw<'a>,
    #[serde(borrow, default)]
    user: Raw<'a>,
    #[serde(borrow, default)]
    max_output_tokens: Raw<'a>,
    #[serde(borrow, default)]
    metadata: Raw<'a>,
    #[serde(borrow, default)]
    reasoning: Raw<'a>,
    #[serde(borrow, default)]
    text: Raw<'a>,
    /// Google's own options, which the OpenAI SDKs merge from `extra_body` into the top level.
    #[serde(borrow, default)]
    google: Raw<'a>,
}
/// Translates a Responses request body.
pub(crate) fn translate(body: &[u8]) -> Result<Translated, ProxyError> {
    let body = &*super::surrogates::replaced(body);
    let request: Request = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => bad(format!("the request is not understood: {e}")),
        _ => ProxyError::bad_request("invalid_json", format!("invalid JSON: {e}")),
    })?;
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(bad("the request must be a JSON object"));
    }
    let model = (request.model.get()).ok_or_else(|| bad("`model` is required, as a string"))?;
    if request.previous_response_id.is_some() {
        return Err(stateful("previous_response_id"));
    }
    if request.conversation.is_some() {
        return Err(stateful("conversation"));
    }
    if request.background.is_some_and(|b| b.get() == "true") {
        return Err(stateful("background"));
    }
    let stream = request.stream.is_some_and(|s| s.get() == "true");
    let mut chat = Vec::with_capacity(body.len() + 512);
    chat.extend_from_slice(b"{\"model\":");
    string(&mut chat, model);
    let (tools, dropped) = write_tools(&mut chat, request.tools)?;
    if let Some(choice) = request.tool_choice.filter(|_| !tools.is_empty()) {
        key(&mut chat, "tool_choice");
        tool_choice(&mut chat, choice, &tools);
    }
    key(&mut chat, "messages");
    messages::write(&mut chat, request.instructions.get(), request.input, &tools)?;
    let passed = [
        ("parallel_tool_calls", request.parallel_tool_calls),
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("user", request.user),
        ("max_tokens", request.max_output_tokens),
    ];
    for (name, value) in passed {
        if let Some(value) = value {
            key(&mut chat, name);
            chat.extend_from_slice(value.get().as_bytes());
        }
    }
    if let Some(effort) = request.reasoning.and_then(effort) {
        key(&mut chat, "reasoning_effort");
        string(&mut chat, if effort == "xhigh" { "high" } else { &effort });
    }
    if let Some(text) = request.text {
        response_format(&mut chat, text);
    }
    if let Some(google) = request.google {
        key(&mut chat, "google");
        chat.extend_from_slice(google.get().as_bytes());
    }
    if stream {
        chat.extend_from_slice(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    }
    chat.push(b'}');
    Ok(Translated {
        body: chat,
        model: model.to_owned(),
        stream,
        tools,
        echo: echo(&request)?,
        dropped,
    })
}

/// The response object's last members: `store: false`, no tools of its own, and what it
/// repeats of the request (`tool_choice` and `parallel_tool_calls` with their defaults).
fn echo(request: &Request) -> Result<Vec<u8>, ProxyError> {
    let mut echo = b",\"store\":false,\"tools\":[],\"previous_response_id\":null".to_vec();
    let defaulted = [
        ("tool_choice", request.tool_choice, "\"auto\""),
        ("parallel_tool_calls", request.parallel_tool_calls, "true"),
    ];
    for (name, value, default) in defaulted {
        key(&mut echo, name);
        echo.extend_from_slice(value.map_or(default, |v| v.get()).as_bytes());
    }
    let echoed = [
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("max_output_tokens", request.max_output_tokens),
        ("reasoning", request.reasoning),
        ("text", request.text),
        ("metadata", request.metadata),
    ];
    for (name, value) in echoed
        .into_iter()
        .chain([("tool_choice", request.tool_choice)])
    {
        // Inside an event's response object: two levels more, within serde_json's limit.
        let limit = crate::rewrite::MAX_DEPTH - 2;
        if value.is_some_and(|v| crate::rewrite::nesting_exceeds(v.get().as_bytes(), limit)) {
            return Err(ProxyError::bad_request(
                "invalid_body",
                format!("`{name}` is nested deeper than {limit} levels"),
            ));
        }
        if let Some(value) = value.filter(|_| name != "tool_choice") {
            key(&mut echo, name);
            echo.extend_from_slice(value.get().as_bytes());
        }
    }
    one_line(&mut echo);
    Ok(echo)
}

/// The client's JSON made one line, in place: a pretty-printed request's line breaks would
/// cut the `data:` line of the events that carry it. Outside strings they are whitespace,
/// and inside one JSON allows them only escaped, so a space stands in for each.
fn one_line(json: &mut [u8]) {
    if memchr::memchr2(b'\n', b'\r', json).is_some() {
        for byte in json.iter_mut().filter(|b| matches!(b, b'\n' | b'\r')) {
            *byte = b' ';
        }
    }
}

fn effort(reasoning: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Reasoning<'a> {
        #[serde(borrow, default)]
        effort: Text<'a>,
    }
    let reasoning: Reasoning = serde_json::from_str(reasoning.get()).ok()?;
    reasoning.effort.0.map(|e| e.into_owned())
}
/// `,"response_format":…` for `text.format` `json_schema` or `json_object`.
fn response_format(out: &mut Vec<u8>, text: &RawValue) {
    #[derive(Deserialize)]
    struct Options<'a> {
        #[serde(borrow, default)]
        format: Option<Format<'a>>,
    }
    #[derive(Deserialize)]
    struct Format<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Text<'a>,
        #[serde(borrow, default)]
        name: Text<'a>,
        #[serde(borrow, default)]
        schema: Raw<'a>,
        #[serde(borrow, default)]
        strict: Raw<'a>,
    }
    let Some(format) = serde_json::from_str::<Options>(text.get())
        .ok()
        .and_then(|o| o.format)
    else {
        return;
    };
    match format.kind.get() {
        Some("json_schema") => {
            out.extend_from_slice(
                b",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":",
            );
            string(out, format.name.get().unwrap_or("response"));
            key(out, "schema");
            out.extend_from_slice(format.schema.map_or("null", |s| s.get()).as_bytes());
            if let Some(strict) = format.strict {
                key(out, "strict");
                out.extend_from_slice(strict.get().as_bytes());
            }
            out.extend_from_slice(b"}}");
        }
        Some("json_object") => {
            out.extend_from_slice(b",\"response_format\":{\"type\":\"json_object\"}");
        }
        _ => {}
    }
}
