//! The way in: a Responses request (`instructions`, `input` items, `tools`) becomes the Chat
//! Completions body the route's kind sends, and the tool names it had to change are kept for
//! the way out.

use serde_json::{Map, Value, json};

use crate::error::ProxyError;

/// Fields of the request the response object repeats, as OpenAI's does.
const ECHOED: [&str; 8] = [
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "max_output_tokens",
    "reasoning",
    "text",
    "metadata",
];

/// A Responses request, translated.
pub(crate) struct Translated {
    /// The Chat Completions body.
    pub body: Vec<u8>,
    pub model: String,
    pub stream: bool,
    pub tools: Tools,
    /// What the response object repeats of the request.
    pub echo: Map<String, Value>,
    /// Hosted tools Vertex cannot run, dropped (Codex always offers `web_search`).
    pub dropped: Vec<String>,
}

/// How each tool the model sees is named, and what it was in the request.
#[derive(Debug, Default)]
pub(crate) struct Tools(Vec<Tool>);

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Tool {
    /// The function's name in Chat Completions.
    pub chat: String,
    /// Its name in the Responses API, and its namespace's.
    pub name: String,
    pub namespace: Option<String>,
    /// A `custom` (freeform) tool: one string argument, `input`.
    pub custom: bool,
}

impl Tools {
    /// The tool a chat function name stands for.
    pub fn by_chat(&self, chat: &str) -> Option<&Tool> {
        self.0.iter().find(|t| t.chat == chat)
    }

    /// The chat name for a Responses name (and namespace); unknown ones stay as they are.
    fn chat_name(&self, name: &str, namespace: Option<&str>) -> String {
        let found = (self.0.iter()).find(|t| t.name == name && t.namespace.as_deref() == namespace);
        match (found, namespace) {
            (Some(tool), _) => tool.chat.clone(),
            (None, Some(namespace)) => format!("{namespace}__{name}"),
            (None, None) => name.to_owned(),
        }
    }

    /// Adds a tool under a chat name no other has: a namespace's member is `{ns}__{name}`,
    /// with `_2`, `_3`, … if that is taken.
    fn add(&mut self, name: &str, namespace: Option<&str>, custom: bool) -> String {
        let base = match namespace {
            Some(namespace) => format!("{namespace}__{name}"),
            None => name.to_owned(),
        };
        let mut chat = base.clone();
        let mut n = 1;
        while self.by_chat(&chat).is_some() {
            n += 1;
            chat = format!("{base}_{n}");
        }
        self.0.push(Tool {
            chat: chat.clone(),
            name: name.to_owned(),
            namespace: namespace.map(str::to_owned),
            custom,
        });
        chat
    }
}

fn bad(message: impl Into<String>) -> ProxyError {
    ProxyError::bad_request("invalid_request_error", message)
}

fn stateless(field: &str) -> ProxyError {
    ProxyError::bad_request(
        "stateless",
        format!(
            "this proxy is stateless and keeps no responses or conversations: `{field}` cannot be used; send the full input with every request (and `store: false`)"
        ),
    )
}

/// Translates a Responses request body.
pub(crate) fn translate(body: &[u8]) -> Result<Translated, ProxyError> {
    let request: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| ProxyError::bad_request("invalid_json", format!("invalid JSON: {e}")))?;
    let model = match request.get("model") {
        Some(Value::String(model)) => model.clone(),
        _ => return Err(bad("`model` is required, as a string")),
    };
    for field in ["previous_response_id", "conversation"] {
        if request.get(field).is_some_and(|v| !v.is_null()) {
            return Err(stateless(field));
        }
    }
    if request.get("background") == Some(&Value::Bool(true)) {
        return Err(stateless("background"));
    }
    let stream = request.get("stream") == Some(&Value::Bool(true));
    let (tools, chat_tools, dropped) = tools(request.get("tools"))?;
    let messages = messages(&request, &tools)?;
    let mut chat = Map::new();
    chat.insert("model".into(), json!(model));
    chat.insert("messages".into(), Value::Array(messages));
    if !chat_tools.is_empty() {
        chat.insert("tools".into(), Value::Array(chat_tools));
        if let Some(choice) = request.get("tool_choice") {
            chat.insert("tool_choice".into(), tool_choice(choice, &tools));
        }
    }
    for field in ["parallel_tool_calls", "temperature", "top_p", "user"] {
        if let Some(value) = request.get(field).filter(|v| !v.is_null()) {
            chat.insert(field.into(), value.clone());
        }
    }
    if let Some(max) = request.get("max_output_tokens").filter(|v| !v.is_null()) {
        chat.insert("max_tokens".into(), max.clone());
    }
    if let Some(effort) = (request.get("reasoning"))
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
    {
        let effort = if effort == "xhigh" { "high" } else { effort };
        chat.insert("reasoning_effort".into(), json!(effort));
    }
    if let Some(format) = request
        .get("text")
        .and_then(|t| response_format(&t["format"]))
    {
        chat.insert("response_format".into(), format);
    }
    // Google's own options, which the OpenAI SDKs merge from `extra_body` into the top level.
    if let Some(google) = request.get("google") {
        chat.insert("google".into(), google.clone());
    }
    if stream {
        chat.insert("stream".into(), json!(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let echo = ECHOED
        .iter()
        .filter_map(|f| request.get(*f).map(|v| ((*f).to_owned(), v.clone())))
        .collect();
    Ok(Translated {
        body: serde_json::to_vec(&chat).expect("a JSON value serializes"),
        model,
        stream,
        tools,
        echo,
        dropped,
    })
}

/// The function tools the model is offered, their names, and the hosted tools dropped.
fn tools(tools: Option<&Value>) -> Result<(Tools, Vec<Value>, Vec<String>), ProxyError> {
    let (mut names, mut chat, mut dropped) = (Tools::default(), Vec::new(), Vec::new());
    let Some(tools) = tools.filter(|t| !t.is_null()) else {
        return Ok((names, chat, dropped));
    };
    let tools = tools
        .as_array()
        .ok_or_else(|| bad("`tools` must be an array"))?;
    for tool in tools {
        let kind = tool["type"].as_str().unwrap_or_default();
        match kind {
            "function" => chat.push(function(&mut names, tool, None)?),
            "namespace" => {
                let namespace = tool["name"]
                    .as_str()
                    .ok_or_else(|| bad("a namespace tool needs a `name`"))?;
                for member in tool["tools"].as_array().into_iter().flatten() {
                    match member["type"].as_str() {
                        Some("custom") => chat.push(custom(&mut names, member, Some(namespace))?),
                        _ => chat.push(function(&mut names, member, Some(namespace))?),
                    }
                }
            }
            "custom" => chat.push(custom(&mut names, tool, None)?),
            other => dropped.push(other.to_owned()),
        }
    }
    Ok((names, chat, dropped))
}

fn tool_name(tool: &Value) -> Result<&str, ProxyError> {
    tool["name"]
        .as_str()
        .ok_or_else(|| bad("every function and custom tool needs a `name`"))
}

fn function(names: &mut Tools, tool: &Value, namespace: Option<&str>) -> Result<Value, ProxyError> {
    let chat = names.add(tool_name(tool)?, namespace, false);
    let mut function = json!({"name": chat});
    for field in ["description", "parameters", "strict"] {
        if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
            function[field] = value.clone();
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

/// A freeform tool as a function of one string, `input`; its grammar, if any, is described.
fn custom(names: &mut Tools, tool: &Value, namespace: Option<&str>) -> Result<Value, ProxyError> {
    let chat = names.add(tool_name(tool)?, namespace, true);
    let mut description = tool["description"].as_str().unwrap_or_default().to_owned();
    if let Some(definition) = tool["format"]["definition"].as_str() {
        let syntax = tool["format"]["syntax"].as_str().unwrap_or("grammar");
        description.push_str(&format!(
            "\n\nThe input must follow this {syntax} grammar:\n{definition}"
        ));
    }
    Ok(json!({"type": "function", "function": {
        "name": chat,
        "description": description,
        "parameters": {"type": "object", "properties": {"input": {"type": "string", "description": "The tool's raw input text."}}, "required": ["input"]},
    }}))
}

fn tool_choice(choice: &Value, tools: &Tools) -> Value {
    match choice["type"].as_str() {
        Some("function" | "custom") => {
            let name = choice["name"].as_str().unwrap_or_default();
            let chat = tools.chat_name(name, choice["namespace"].as_str());
            json!({"type": "function", "function": {"name": chat}})
        }
        Some("allowed_tools") => json!(choice["mode"].as_str().unwrap_or("auto")),
        _ if choice.is_string() => choice.clone(),
        _ => json!("auto"),
    }
}

fn response_format(format: &Value) -> Option<Value> {
    match format["type"].as_str()? {
        "json_schema" => {
            let mut schema = json!({"name": format["name"].as_str().unwrap_or("response"), "schema": format["schema"]});
            if let Some(strict) = format.get("strict").filter(|v| !v.is_null()) {
                schema["strict"] = strict.clone();
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        "json_object" => Some(json!({"type": "json_object"})),
        _ => None,
    }
}

/// `instructions`, then every input item, as chat messages in order.
fn messages(request: &Map<String, Value>, tools: &Tools) -> Result<Vec<Value>, ProxyError> {
    let mut messages = Vec::new();
    if let Some(instructions) = request.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    let items = match request.get("input") {
        Some(Value::String(text)) => {
            messages.push(json!({"role": "user", "content": text}));
            return Ok(messages);
        }
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Ok(messages),
        Some(_) => return Err(bad("`input` must be a string or an array of items")),
    };
    for item in items {
        let kind = item["type"].as_str().unwrap_or("message");
        match kind {
            "message" => messages.push(message(item)?),
            "function_call" | "custom_tool_call" => {
                let name = item["name"].as_str().unwrap_or_default();
                let chat = tools.chat_name(name, item["namespace"].as_str());
                let arguments = match kind {
                    "function_call" => item["arguments"].as_str().unwrap_or("{}").to_owned(),
                    _ => json!({"input": item["input"].as_str().unwrap_or_default()}).to_string(),
                };
                let call = json!({"id": item["call_id"], "type": "function",
                                  "function": {"name": chat, "arguments": arguments}});
                // Consecutive calls, and calls after the assistant's text, are one message.
                match messages.last_mut() {
                    Some(last) if last["role"] == "assistant" => {
                        let calls = last.as_object_mut().expect("a message is an object");
                        let calls = calls.entry("tool_calls").or_insert_with(|| json!([]));
                        calls
                            .as_array_mut()
                            .expect("tool_calls is an array")
                            .push(call);
                    }
                    _ => messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" | "custom_tool_call_output" => {
                messages.push(json!({"role": "tool", "tool_call_id": item["call_id"],
                                     "content": output_text(&item["output"])}));
            }
            "item_reference" => {
                return Err(ProxyError::bad_request(
                    "stateless",
                    "this proxy is stateless: an `item_reference` cannot be resolved; send every item whole (with the Vercel AI SDK, set providerOptions.openai.store to false)",
                ));
            }
            // Reasoning is the model's own, and Gemini's comes back in its signatures; other
            // items (hosted tools' calls) have nothing Chat Completions can take.
            _ => {}
        }
    }
    Ok(messages)
}

/// A message item: developer and system become system messages (text), user and assistant
/// keep their parts.
fn message(item: &Value) -> Result<Value, ProxyError> {
    let role = match item["role"].as_str() {
        Some("developer" | "system") => "system",
        Some(role @ ("user" | "assistant")) => role,
        _ => {
            return Err(bad(
                "a message's `role` must be user, assistant, system or developer",
            ));
        }
    };
    let content = &item["content"];
    if content.is_string() {
        return Ok(json!({"role": role, "content": content}));
    }
    let parts = content.as_array().map(Vec::as_slice).unwrap_or_default();
    let text_only = parts.iter().all(|p| p.get("text").is_some());
    if role != "user" || text_only {
        let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        return Ok(json!({"role": role, "content": text.join("")}));
    }
    let parts: Vec<Value> = (parts.iter())
        .filter_map(|part| match part["type"].as_str() {
            Some("input_text" | "output_text") => {
                Some(json!({"type": "text", "text": part["text"]}))
            }
            Some("input_image") => {
                let mut image = json!({"url": part["image_url"]});
                if let Some(detail) = part["detail"].as_str() {
                    image["detail"] = json!(detail);
                }
                Some(json!({"type": "image_url", "image_url": image}))
            }
            _ => None,
        })
        .collect();
    Ok(json!({"role": role, "content": parts}))
}

/// A tool's output as text: a string, or the text of its parts (images are named, not sent:
/// Chat Completions' tool messages take text).
fn output_text(output: &Value) -> String {
    match output {
        Value::String(text) => text.clone(),
        Value::Array(parts) => (parts.iter())
            .map(|p| match p["type"].as_str() {
                Some("input_image") => "[image]",
                _ => p["text"].as_str().unwrap_or_default(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
