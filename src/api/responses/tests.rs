//! Both directions of the translation, on the captured Codex request and on chat chunks.

use serde_json::{Value, json};

use super::ending::failure;
use super::events::Builder;
use super::items::Context;
use super::request::translate;
use super::stream::Sse;

const CODEX: &str = include_str!("../../../tests/captured/codex-0.171-responses-request.json");

fn chat_of(request: &Value) -> Value {
    let translated = translate(request.to_string().as_bytes()).expect("translated");
    serde_json::from_slice(&translated.body).unwrap()
}

#[test]
fn the_captured_codex_request_becomes_a_chat_completion() {
    let request: Value = serde_json::from_str(CODEX).unwrap();
    let translated = translate(CODEX.as_bytes()).expect("translated");
    assert_eq!(translated.model, "flash");
    assert!(translated.stream);
    assert_eq!(translated.dropped, ["web_search"]);
    let chat: Value = serde_json::from_slice(&translated.body).unwrap();
    let keys: Vec<&str> = chat
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "messages",
            "model",
            "parallel_tool_calls",
            "stream",
            "stream_options",
            "tool_choice",
            "tools"
        ]
    );
    assert_eq!(chat["stream_options"], json!({"include_usage": true}));
    assert_eq!(chat["tool_choice"], "auto");
    // Developer messages are system messages, in order; user messages keep their text.
    let input = request["input"].as_array().unwrap();
    let messages = chat["messages"].as_array().unwrap();
    assert_eq!(messages.len(), input.len());
    for (item, message) in input.iter().zip(messages) {
        let role = match item["role"].as_str().unwrap() {
            "developer" => "system",
            role => role,
        };
        assert_eq!(message["role"], role);
        // Parts are blocks apart: a blank line between them.
        let parts = item["content"].as_array().unwrap();
        let texts: Vec<&str> = parts.iter().map(|p| p["text"].as_str().unwrap()).collect();
        assert_eq!(message["content"], texts.join("\n\n").as_str());
    }
    // Every function, the namespace's members under their own names; no web_search.
    let names: Vec<&str> = (chat["tools"].as_array().unwrap().iter())
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"exec_command") && names.contains(&"multi_agent_v1__close_agent"));
    let functions = request["tools"].as_array().unwrap();
    let members: usize = (functions.iter())
        .filter(|t| t["type"] == "namespace")
        .map(|t| t["tools"].as_array().unwrap().len())
        .sum();
    let plain = functions.iter().filter(|t| t["type"] == "function").count();
    assert_eq!(names.len(), plain + members);
    let exec = &chat["tools"][0]["function"];
    assert_eq!(exec["parameters"], request["tools"][0]["parameters"]);
    assert_eq!(exec["strict"], false);
}

#[test]
fn calls_and_outputs_become_tool_calls_and_tool_messages() {
    let request = json!({"model": "flash", "instructions": "Be brief.", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "run ls"},
            {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running."}]},
        {"type": "reasoning", "summary": [], "encrypted_content": "xyz"},
        {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "call_a", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
        {"type": "function_call", "call_id": "call_b", "name": "close_agent", "namespace": "agents", "arguments": "{}"},
        {"type": "custom_tool_call", "call_id": "call_c", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "function_call_output", "id": "x", "call_id": "call_a", "output": "a.txt"},
        {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "closed"}]},
        {"type": "custom_tool_call_output", "call_id": "call_c", "output": "Done!"}],
        "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
                  {"type": "namespace", "name": "agents", "tools": [{"type": "function", "name": "close_agent"}]},
                  {"type": "custom", "name": "apply_patch", "description": "Patch files.", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
                  {"type": "web_search"}],
        "tool_choice": {"type": "custom", "name": "apply_patch"},
        "reasoning": {"effort": "low", "summary": "auto"}, "max_output_tokens": 100,
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}},
        "store": true, "include": ["reasoning.encrypted_content"]});
    let chat = chat_of(&request);
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "run ls"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}}]},
            {"role": "assistant", "content": "Running.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "agents__close_agent", "arguments": "{}"}},
                {"id": "call_c", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\"}"}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "a.txt"},
            {"role": "tool", "tool_call_id": "call_b", "content": "closed"},
            {"role": "tool", "tool_call_id": "call_c", "content": "Done!"},
        ])
    );
    assert_eq!(
        chat["tool_choice"],
        json!({"type": "function", "function": {"name": "apply_patch"}})
    );
    let patch = &chat["tools"][2]["function"];
    assert_eq!(patch["parameters"]["required"], json!(["input"]));
    assert!(
        patch["description"]
            .as_str()
            .unwrap()
            .contains("lark grammar:\nstart: x")
    );
    assert_eq!(chat["tools"].as_array().unwrap().len(), 3);
    assert_eq!(chat["reasoning_effort"], "low");
    assert_eq!(chat["max_tokens"], 100);
    assert_eq!(
        chat["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}})
    );
    for absent in [
        "store",
        "include",
        "stream",
        "stream_options",
        "reasoning",
        "text",
    ] {
        assert!(chat.get(absent).is_none(), "{absent}");
    }
}

#[test]
fn state_is_refused_with_a_reason_and_names_that_collide_stay_apart() {
    for field in [
        json!({"previous_response_id": "resp_1"}),
        json!({"conversation": "conv_1"}),
        json!({"background": true}),
        json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
    ] {
        let mut request = json!({"model": "flash", "input": "hi"});
        request
            .as_object_mut()
            .unwrap()
            .extend(field.as_object().unwrap().clone());
        let error = translate(request.to_string().as_bytes())
            .err()
            .expect("refused");
        assert_eq!(error.status(), 400);
        assert!(error.message().contains("stateless"), "{}", error.message());
    }
    let request = json!({"model": "flash", "input": "hi", "tools": [
        {"type": "function", "name": "ns__f"},
        {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "f"}]}]});
    let translated = translate(request.to_string().as_bytes()).unwrap();
    let chat: Value = serde_json::from_slice(&translated.body).unwrap();
    assert_eq!(chat["tools"][1]["function"]["name"], "ns__f_2");
    let tool = translated.tools.by_chat("ns__f_2").unwrap();
    assert_eq!(
        (tool.name.as_str(), tool.namespace.as_deref()),
        ("f", Some("ns"))
    );
    assert_eq!(translated.tools.by_chat("ns__f").unwrap().namespace, None);
}

fn builder(tools: Value) -> Builder {
    let request = json!({"model": "flash", "input": "hi", "tools": tools, "temperature": 0.5});
    let translated = translate(request.to_string().as_bytes()).unwrap();
    Builder::new(Context {
        id: "resp_1".into(),
        created_at: 7,
        model: translated.model,
        tools: translated.tools,
        echo: translated.echo,
    })
}

/// The events in `sse`, as JSON, checking each has its `type` after `event:` and the next
/// `sequence_number`.
fn events(sse: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(sse).unwrap();
    let events: Vec<Value> = (text.split_terminator("\n\n"))
        .map(|event| {
            let (head, data) = event.split_once("\ndata: ").expect("event and data lines");
            // SSE ends a line at \n, \r or both: the data is one line.
            assert!(!data.contains(['\n', '\r']), "{data}");
            let json: Value = serde_json::from_str(data).unwrap();
            assert_eq!(head.strip_prefix("event: "), json["type"].as_str());
            json
        })
        .collect();
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], n, "{event}");
    }
    events
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn chunk(delta: Value, finish: Value) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    )
}

const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n";

#[test]
fn a_streamed_text_answer_is_every_event_in_order() {
    let mut sse = Sse::new(builder(json!([])));
    let mut out = sse.start();
    let stream = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"reasoning_content": "Thinking."}), Value::Null),
        chunk(json!({"content": "Hel"}), Value::Null),
        chunk(json!({"content": "lo"}), json!("stop")),
        USAGE.to_owned(),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    // In awkward pieces: an event may be split anywhere.
    for piece in stream.as_bytes().chunks(7) {
        out.extend(sse.edit(piece));
    }
    out.extend(sse.finish(None));
    let events = events(&out);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[0]["response"]["status"], "in_progress");
    assert_eq!(events[0]["response"]["model"], "flash");
    assert_eq!(events[10]["delta"], "Hel");
    assert_eq!(events[12]["text"], "Hello");
    let done = &events[15]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["id"], "resp_1");
    assert_eq!(done["temperature"], 0.5);
    assert_eq!(done["store"], false);
    assert_eq!(done["output"][0]["summary"][0]["text"], "Thinking.");
    assert_eq!(done["output"][1]["content"][0]["text"], "Hello");
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 5, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 3,
               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 8})
    );
}

#[test]
fn streamed_tool_calls_come_out_as_the_tools_the_request_named() {
    let tools = json!([{"type": "function", "name": "exec_command"},
        {"type": "namespace", "name": "agents", "tools": [{"type": "function", "name": "close_agent"}]},
        {"type": "custom", "name": "apply_patch"}]);
    let mut sse = Sse::new(builder(tools));
    let mut out = sse.start();
    let call = |index: u64, id: &str, name: &str, arguments: &str| json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": arguments}}]});
    let more = |index: u64, arguments: &str| json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]});
    for piece in [
        chunk(json!({"content": "On it."}), Value::Null),
        chunk(
            call(0, "call_a__thought__sig", "exec_command", "{\"cmd\":"),
            Value::Null,
        ),
        chunk(more(0, "\"ls\"}"), Value::Null),
        chunk(call(1, "call_b", "agents__close_agent", "{}"), Value::Null),
        chunk(
            call(2, "call_c", "apply_patch", "{\"input\":\"*** Begin"),
            Value::Null,
        ),
        chunk(more(2, " Patch\"}"), json!("tool_calls")),
        USAGE.to_owned(),
    ] {
        out.extend(sse.edit(piece.as_bytes()));
    }
    out.extend(sse.finish(None));
    let events = events(&out);
    let done: Vec<&Value> = (events.iter())
        .filter(|e| e["type"] == "response.output_item.done")
        .map(|e| &e["item"])
        .collect();
    assert_eq!(done[0]["content"][0]["text"], "On it.");
    assert_eq!(
        *done[1],
        json!({"type": "function_call", "id": "fc_resp_1_1", "call_id": "call_a__thought__sig",
               "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}", "status": "completed"})
    );
    assert_eq!(done[2]["name"], "close_agent");
    assert_eq!(done[2]["namespace"], "agents");
    assert_eq!(
        *done[3],
        json!({"type": "custom_tool_call", "id": "fc_resp_1_3", "call_id": "call_c",
               "name": "apply_patch", "input": "*** Begin Patch", "status": "completed"})
    );
    let deltas: Vec<&Value> = (events.iter())
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| &e["delta"])
        .collect();
    assert_eq!(
        deltas,
        [&json!("{\"cmd\":"), &json!("\"ls\"}"), &json!("{}")]
    );
    assert!(types(&events).contains(&"response.custom_tool_call_input.done"));
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["output"].as_array().unwrap().len(), 4);
    assert_eq!(last["response"]["usage"]["total_tokens"], 8);
}

#[test]
fn errors_mid_stream_and_a_cut_stream_end_in_response_failed() {
    // Google's error as an event, after some text.
    let mut sse = Sse::new(builder(json!([])));
    let mut out = sse.start();
    out.extend(sse.edit(chunk(json!({"content": "Hi"}), Value::Null).as_bytes()));
    let error = json!({"error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}});
    out.extend(sse.edit(format!("data: {error}\n\n").as_bytes()));
    out.extend(sse.finish(None));
    let all = events(&out);
    let last = all.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "rate_limit_exceeded");
    assert!(
        last["response"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again in 5s")
    );
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], "Hi");
    // A stream that stops before its answer does, or breaks.
    for broken in [None, Some("the upstream sent nothing for 300s".to_owned())] {
        let mut sse = Sse::new(builder(json!([])));
        let mut out = sse.start();
        out.extend(sse.edit(chunk(json!({"content": "Hi"}), Value::Null).as_bytes()));
        out.extend(sse.finish(broken));
        let last = events(&out).pop().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["error"]["code"], "server_error");
    }
    // A length stop is incomplete.
    let mut sse = Sse::new(builder(json!([])));
    let mut out = sse.start();
    out.extend(sse.edit(chunk(json!({"content": "Hi"}), json!("length")).as_bytes()));
    out.extend(sse.finish(None));
    let last = events(&out).pop().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
}

#[test]
fn failures_use_the_codes_codex_acts_on() {
    let code = |status, google, message| failure(status, google, message, Some(12)).code;
    assert_eq!(
        code(429, Some("RESOURCE_EXHAUSTED"), "busy"),
        "rate_limit_exceeded"
    );
    assert_eq!(
        failure(429, None, "Busy.", Some(12)).message,
        "Busy. Please try again in 12s."
    );
    assert_eq!(
        code(
            400,
            Some("INVALID_ARGUMENT"),
            "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576)."
        ),
        "context_length_exceeded"
    );
    assert_eq!(
        code(403, None, "Quota exceeded for billing"),
        "insufficient_quota"
    );
    assert_eq!(code(400, None, "Bad."), "invalid_prompt");
    assert_eq!(code(503, Some("UNAVAILABLE"), "Down."), "server_error");
}

#[test]
fn a_whole_answer_is_one_response_object() {
    let mut builder = builder(json!([{"type": "function", "name": "get_weather"}]));
    builder.quiet();
    builder.start();
    let answer = json!({"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13,
                  "completion_tokens_details": {"reasoning_tokens": 2}}});
    assert!(builder.data(answer.to_string().as_bytes()));
    builder.finish(true);
    let response: Value = serde_json::from_slice(&builder.take()).unwrap();
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["model"], "flash");
    assert_eq!(response["output"][0]["type"], "message");
    assert_eq!(response["output"][0]["content"][0]["text"], "Let me look.");
    assert_eq!(response["output"][1]["type"], "function_call");
    assert_eq!(response["output"][1]["call_id"], "call_1");
    assert_eq!(response["output"][1]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(
        response["usage"]["output_tokens_details"]["reasoning_tokens"],
        2
    );
    assert_eq!(response["usage"]["input_tokens"], 9);
}

/// Every control character, quotes, backslashes, non-ASCII (kept as UTF-8), and text that
/// looks like an escape already.
fn nasty() -> String {
    let mut text: String = (0u8..0x20).map(char::from).collect();
    text.push_str("\"quoted\" back\\slash / 🦀 é \u{7f} \u{2028}\u{2029} \\u0000 \\\" \\n \u{fffd} \u{10ffff} </script>");
    text
}

#[test]
fn the_encoder_escapes_strings_as_json_requires() {
    let nasty = nasty();
    for text in [nasty.as_str(), "", "plain", "\\", "\"", "\u{0}", "🦀"] {
        let mut out = Vec::new();
        super::json::string(&mut out, text);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, text);
        // As serde_json writes it: non-ASCII as its UTF-8 bytes, control characters short or
        // as `\u00XX`.
        assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
    }
    let mut out = Vec::new();
    super::json::string(&mut out, &nasty);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("🦀 é") && out.contains("\\u001f") && out.contains("\\b\\t\\n"));
}

#[test]
fn awkward_strings_survive_both_directions() {
    let nasty = nasty();
    // The way in: instructions, a message, a call's arguments and its output.
    let request = json!({"model": "flash", "instructions": nasty, "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": nasty}]},
        {"type": "function_call", "call_id": nasty, "name": "f", "arguments": nasty},
        {"type": "custom_tool_call", "call_id": "c", "name": "p", "input": nasty},
        {"type": "function_call_output", "call_id": nasty, "output": nasty},
        {"type": "custom_tool_call_output", "call_id": "c", "output": [{"type": "input_text", "text": nasty}]}],
        "tools": [{"type": "function", "name": "f", "description": nasty, "parameters": {"type": "object", "description": nasty}},
                  {"type": "custom", "name": "p", "description": nasty}]});
    let chat = chat_of(&request);
    let messages = chat["messages"].as_array().unwrap();
    assert_eq!(messages[0]["content"], nasty.as_str());
    assert_eq!(messages[1]["content"], nasty.as_str());
    assert_eq!(messages[2]["tool_calls"][0]["id"], nasty.as_str());
    assert_eq!(
        messages[2]["tool_calls"][0]["function"]["arguments"],
        nasty.as_str()
    );
    let input: Value = serde_json::from_str(
        messages[2]["tool_calls"][1]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(input, json!({"input": nasty}));
    assert_eq!(messages[3]["content"], nasty.as_str());
    assert_eq!(messages[4]["content"], nasty.as_str());
    assert_eq!(chat["tools"][0]["function"]["description"], nasty.as_str());
    assert_eq!(
        chat["tools"][0]["function"]["parameters"]["description"],
        nasty.as_str()
    );
    assert!(
        chat["tools"][1]["function"]["description"]
            .as_str()
            .unwrap()
            .starts_with(&nasty)
    );
    // The way out: reasoning, text, a call's id, name and arguments, a custom tool's input.
    let tools = json!([{"type": "function", "name": nasty}, {"type": "custom", "name": "p"}]);
    let mut sse = Sse::new(builder(tools));
    let mut out = sse.start();
    let call = |index: u64, name: &str, arguments: &str| json!({"tool_calls": [{"index": index, "id": nasty, "type": "function", "function": {"name": name, "arguments": arguments}}]});
    let custom = json!({"input": nasty}).to_string();
    for piece in [
        chunk(json!({"reasoning_content": nasty}), Value::Null),
        chunk(json!({"content": nasty}), Value::Null),
        chunk(call(0, &nasty, &nasty), Value::Null),
        chunk(call(1, "p", &custom), json!("tool_calls")),
        USAGE.to_owned(),
    ] {
        out.extend(sse.edit(piece.as_bytes()));
    }
    out.extend(sse.finish(None));
    let events = events(&out);
    let done = &events.last().unwrap()["response"]["output"];
    assert_eq!(done[0]["summary"][0]["text"], nasty.as_str());
    assert_eq!(done[1]["content"][0]["text"], nasty.as_str());
    assert_eq!(
        (&done[2]["call_id"], &done[2]["name"], &done[2]["arguments"]),
        (&json!(nasty), &json!(nasty), &json!(nasty))
    );
    assert_eq!(done[3]["input"], nasty.as_str());
    let deltas: Vec<&Value> = (events.iter())
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| &e["delta"])
        .collect();
    assert_eq!(deltas, [&json!(nasty)]);
}

#[test]
fn a_tools_images_go_in_a_user_message_after_the_tool_messages() {
    let image = |url: &str| json!({"type": "input_image", "image_url": url});
    let request = json!({"model": "flash", "input": [
        {"type": "message", "role": "user", "content": "look"},
        {"type": "function_call", "call_id": "call_a__thought__c2ln", "name": "view_image", "arguments": "{\"path\":\"a.png\"}"},
        {"type": "function_call", "call_id": "call_b", "name": "view_image", "arguments": "{\"path\":\"b.png\"}"},
        {"type": "function_call_output", "call_id": "call_a__thought__c2ln", "output": [
            {"type": "input_text", "text": "a.png"}, image("data:image/png;base64,AAAA")]},
        {"type": "function_call_output", "call_id": "call_b", "output": [
            {"type": "input_image", "image_url": "https://example.com/b.png", "detail": "high"}]},
        {"type": "reasoning", "summary": [], "encrypted_content": null},
        {"type": "custom_tool_call", "call_id": "call_c", "name": "shot", "input": "x"},
        {"type": "custom_tool_call_output", "call_id": "call_c", "output": [
            image("data:image/jpeg;base64,BBBB"), {"type": "input_file", "filename": "notes.pdf", "file_data": "data:application/pdf;base64,CC"}]},
        {"type": "message", "role": "user", "content": "and now?"}]});
    let chat = chat_of(&request);
    let tool_text = "(the tool's output is the image in the next message)";
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "user", "content": "look"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a__thought__c2ln", "type": "function", "function": {"name": "view_image", "arguments": "{\"path\":\"a.png\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "view_image", "arguments": "{\"path\":\"b.png\"}"}}]},
            {"role": "tool", "tool_call_id": "call_a__thought__c2ln", "content": "a.png"},
            {"role": "tool", "tool_call_id": "call_b", "content": tool_text},
            {"role": "user", "content": [
                {"type": "text", "text": "The image returned by tool call call_a:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "The image returned by tool call call_b:"},
                {"type": "image_url", "image_url": {"url": "https://example.com/b.png", "detail": "high"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_c", "type": "function", "function": {"name": "shot", "arguments": "{\"input\":\"x\"}"}}]},
            {"role": "tool", "tool_call_id": "call_c", "content": "[notes.pdf: a file the proxy cannot pass on]"},
            {"role": "user", "content": [
                {"type": "text", "text": "The image returned by tool call call_c:"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BBBB"}}]},
            {"role": "user", "content": "and now?"},
        ])
    );
    // At the end of the input too.
    let request = json!({"model": "flash", "input": [
        {"type": "function_call", "call_id": "call_a", "name": "view_image", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": [image("data:image/png;base64,AAAA")]}]});
    let messages = chat_of(&request)["messages"].clone();
    assert_eq!(messages.as_array().unwrap().len(), 3);
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(
        messages[2]["content"][1]["image_url"]["url"],
        "data:image/png;base64,AAAA"
    );
}

#[test]
fn replayed_reasoning_items_are_dropped_and_ours_carry_no_encrypted_content() {
    // What Codex replays: the items it got, with or without encrypted content, any summary.
    let mut sse = Sse::new(builder(json!([])));
    let mut out = sse.start();
    out.extend(sse.edit(chunk(json!({"reasoning_content": "Hmm."}), Value::Null).as_bytes()));
    out.extend(sse.edit(chunk(json!({"content": "Hi"}), json!("stop")).as_bytes()));
    out.extend(sse.finish(None));
    let ours = events(&out).last().unwrap()["response"]["output"][0].clone();
    assert_eq!(ours["type"], "reasoning");
    assert!(ours.get("encrypted_content").is_none(), "{ours}");
    let replayed = [
        ours,
        json!({"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "x"}], "encrypted_content": "gAAAAB"}),
        json!({"type": "reasoning", "summary": [], "encrypted_content": null}),
        json!({"type": "reasoning", "summary": "odd", "content": [{"type": "reasoning_text", "text": "y"}]}),
        json!({"type": "reasoning"}),
    ];
    for item in replayed {
        let request = json!({"model": "flash", "include": ["reasoning.encrypted_content"],
            "input": [{"type": "message", "role": "user", "content": "hi"}, item,
                      {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}]});
        let chat = chat_of(&request);
        assert_eq!(
            chat["messages"],
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hi"}])
        );
    }
}

#[test]
fn odd_but_harmless_chunks_are_read_as_before() {
    let mut sse = Sse::new(builder(json!([])));
    let mut out = sse.start();
    for piece in [
        "data: {\"choices\":null,\"usage\":null}\n\n".to_owned(),
        ": a comment\n\ndata: : keepalive\n\n".to_owned(),
        chunk(
            json!({"content": null, "reasoning": {"text": "an object"}, "tool_calls": null}),
            Value::Null,
        ),
        // A second choice is not read; `\r\n` line ends; an escaped string.
        "data: {\"choices\":[{\"delta\":{\"content\":\"H\\u0069\"}},{\"delta\":{\"content\":\"no\"}}]}\r\n\r\n".to_owned(),
        chunk(json!({"role": "assistant"}), json!("stop")),
        "data: [DONE]\n\n".to_owned(),
    ] {
        out.extend(sse.edit(piece.as_bytes()));
    }
    out.extend(sse.finish(None));
    let events = events(&out);
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"].as_array().unwrap().len(), 1);
    assert_eq!(done["output"][0]["content"][0]["text"], "Hi");
    assert_eq!(done["usage"], Value::Null);
}

#[test]
fn an_output_that_answers_no_call_is_text_after_the_tool_messages() {
    // Codex adds a named output with no call_id when the model sets a goal.
    let request = json!({"model": "flash", "input": [
        {"type": "message", "role": "user", "content": "go"},
        {"type": "function_call", "call_id": "call_a", "name": "create_goal", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_b", "name": "view_image", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "{\"goal\":1}"},
        {"type": "function_call_output", "name": "goal_objective", "namespace": "agent", "output": "ship \"it\"\n"},
        {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
        {"type": "function_call_output", "name": "note", "output": {"n": 1}},
        {"type": "message", "role": "user", "content": "next"}]});
    let messages = chat_of(&request)["messages"].clone();
    let tool_text = "(the tool's output is the image in the next message)";
    assert_eq!(
        messages.as_array().unwrap()[2..],
        json!([
            {"role": "tool", "tool_call_id": "call_a", "content": "{\"goal\":1}"},
            {"role": "tool", "tool_call_id": "call_b", "content": tool_text},
            {"role": "user", "content": [
                {"type": "text", "text": "The output of agent.goal_objective, which answers no call:\nship \"it\"\n"},
                {"type": "text", "text": "The image returned by tool call call_b:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                {"type": "text", "text": "The output of note, which answers no call:\n{\"n\":1}"}]},
            {"role": "user", "content": "next"},
        ])
        .as_array()
        .unwrap()[..]
    );
}

#[test]
fn a_pretty_printed_request_keeps_every_event_on_one_data_line() {
    let request = json!({"model": "flash", "input": "hi", "stream": true,
        "reasoning": {"effort": "low"}, "metadata": {"a": "b\nc"}, "text": {"verbosity": "low"},
        "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []},
        "tools": [{"type": "function", "name": "f"}]});
    let pretty = serde_json::to_string_pretty(&request)
        .unwrap()
        .replace('\n', "\r\n");
    let translated = translate(pretty.as_bytes()).unwrap();
    let mut sse = Sse::new(Builder::new(Context {
        id: "resp_1".into(),
        created_at: 7,
        model: translated.model,
        tools: translated.tools,
        echo: translated.echo,
    }));
    let mut out = sse.start();
    out.extend(sse.edit(chunk(json!({"content": "Hi"}), json!("stop")).as_bytes()));
    out.extend(sse.finish(None));
    let events = events(&out);
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["metadata"], request["metadata"]);
    assert_eq!(done["reasoning"], request["reasoning"]);
    assert_eq!(done["tool_choice"], request["tool_choice"]);
}

#[test]
fn many_tools_map_back_exactly_and_too_many_are_refused() {
    // Past a handful, names are looked up by index: duplicates, a namespace's member that
    // collides with a plain function, and a name that looks like a generated one.
    let mut tools = vec![json!({"type": "function", "name": "a_3"})];
    tools.extend((0..300).map(|_| json!({"type": "function", "name": "a"})));
    tools.push(json!({"type": "function", "name": "ns__f"}));
    tools.push(
        json!({"type": "namespace", "name": "ns", "tools": [{"type": "custom", "name": "f"}]}),
    );
    let request = json!({"model": "flash", "input": [
        {"type": "custom_tool_call", "call_id": "c1", "name": "f", "namespace": "ns", "input": "x"},
        {"type": "function_call", "call_id": "c2", "name": "a", "arguments": "{}"}],
        "tools": tools});
    let translated = translate(request.to_string().as_bytes()).unwrap();
    let chat: Value = serde_json::from_slice(&translated.body).unwrap();
    let names: Vec<&str> = (chat["tools"].as_array().unwrap().iter())
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 303);
    let unique: std::collections::HashSet<&&str> = names.iter().collect();
    assert_eq!(unique.len(), 303, "every chat name differs");
    assert_eq!(names[..5], ["a_3", "a", "a_2", "a_4", "a_5"]);
    assert_eq!(names[302], "ns__f_2");
    let calls = &chat["messages"][0]["tool_calls"];
    assert_eq!(calls[0]["function"]["name"], "ns__f_2");
    assert_eq!(calls[1]["function"]["name"], "a");
    let member = translated.tools.by_chat("ns__f_2").unwrap();
    assert_eq!(
        (
            member.name.as_str(),
            member.namespace.as_deref(),
            member.custom
        ),
        ("f", Some("ns"), true)
    );
    assert_eq!(translated.tools.by_chat("a_300").unwrap().name, "a");
    assert_eq!(translated.tools.by_chat("a_3").unwrap().name, "a_3");
    // More functions than the cap (a namespace's members counted) is a clear 400.
    let many: Vec<Value> = (0..=512)
        .map(|n| json!({"type": "function", "name": format!("f{n}")}))
        .collect();
    let request = json!({"model": "flash", "input": "hi", "tools": many});
    let error = translate(request.to_string().as_bytes())
        .err()
        .expect("refused");
    assert_eq!(error.status(), 400);
    assert!(error.message().contains("512"), "{}", error.message());
}

#[test]
fn lone_surrogates_become_replacement_characters_on_every_path() {
    // Written by hand: serde_json cannot write a lone surrogate.
    let lone = r"a\ud83d b\uDE00 c\\ud83d \ud83d\ude00";
    let body = r#"{"model": "flash", "instructions": "I:LONE", "tools": [{"type": "function", "name": "f"}], "input": [
        {"role": "user", "content": "U:LONE"},
        {"role": "user", "content": [{"type": "input_text", "text": "P:LONE"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "A:LONE"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"x\":\"F:LONE\"}"},
        {"type": "function_call_output", "call_id": "c1", "output": "O:LONE"},
        {"type": "function_call_output", "name": "goal", "output": "G:LONE"}]}"#
        .replace("LONE", lone);
    let fixed = "a\u{fffd} b\u{fffd} c\\ud83d 😀";
    let translated = translate(body.as_bytes()).expect("translated");
    let chat: Value = serde_json::from_slice(&translated.body).unwrap();
    let messages = &chat["messages"];
    assert_eq!(messages[0]["content"], format!("I:{fixed}"));
    assert_eq!(messages[1]["content"], format!("U:{fixed}"));
    assert_eq!(messages[2]["content"], format!("P:{fixed}"));
    assert_eq!(messages[3]["content"], format!("A:{fixed}"));
    let arguments = messages[3]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    assert!(arguments.contains("F:a\u{fffd} b\u{fffd} c"), "{arguments}");
    assert_eq!(messages[4]["content"], format!("O:{fixed}"));
    let orphan = messages[5]["content"][0]["text"].as_str().unwrap();
    assert!(orphan.ends_with(&format!("G:{fixed}")), "{orphan}");
    // As a string input, too.
    let body = r#"{"model": "flash", "input": "S:LONE"}"#.replace("LONE", lone);
    let chat: Value = serde_json::from_slice(&translate(body.as_bytes()).unwrap().body).unwrap();
    assert_eq!(chat["messages"][0]["content"], format!("S:{fixed}"));
}

#[test]
fn a_streamed_answer_past_the_limit_fails_and_is_cut() {
    let mut sse = Sse::new(builder(json!([{"type": "function", "name": "f"}])).limited(100));
    let mut out = sse.start();
    let text = "x".repeat(60);
    let stream = [
        chunk(json!({"content": text}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": text}}]}), Value::Null),
        chunk(json!({"content": "never read"}), Value::Null),
    ]
    .concat();
    out.extend(sse.edit(stream.as_bytes()));
    assert!(sse.cut());
    let events = events(&out);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["error"]["code"], "server_error");
    let message = last["response"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("exceeded 100 bytes"), "{message}");
    assert!(!String::from_utf8_lossy(&out).contains("never read"));
    // What came before the limit is kept, the call without the arguments past it.
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], text);
    assert_eq!(last["response"]["output"][1]["arguments"], "");
}

#[test]
fn odd_upstream_values_are_read_without_panic_or_doubling() {
    let mut sse = Sse::new(builder(json!([{"type": "function", "name": "f"}])));
    let mut out = sse.start();
    let stream = [
        // vLLM sends reasoning under both names: once.
        chunk(json!({"reasoning_content": "Hm.", "reasoning": "Hm."}), Value::Null),
        // A call's later pieces without an index continue it.
        chunk(json!({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{\"a\""}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"function": {"arguments": ":1}"}}]}), json!("tool_calls")),
        // A total that would overflow, absent.
        format!("data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":1}}}}\n\n", u64::MAX),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    out.extend(sse.edit(stream.as_bytes()));
    out.extend(sse.finish(None));
    let read = events(&out);
    let done = &read.last().unwrap()["response"];
    assert_eq!(done["output"][0]["summary"][0]["text"], "Hm.");
    assert_eq!(done["output"].as_array().unwrap().len(), 2);
    assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
    assert_eq!(done["usage"]["total_tokens"], u64::MAX);
    // An error code past u16 is not read as the status it truncates to (65965 as u16 = 429).
    let mut sse = Sse::new(builder(json!([])));
    let mut out = sse.start();
    out.extend(sse.edit(b"data: {\"error\":{\"code\":65965,\"message\":\"Odd.\"}}\n\n"));
    out.extend(sse.finish(None));
    let read = events(&out);
    let error = &read.last().unwrap()["response"]["error"];
    assert_eq!(error["code"], "server_error");
}

#[test]
fn echoed_values_nested_too_deep_are_refused() {
    for name in ["metadata", "text", "tool_choice", "reasoning"] {
        let deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
        let body = format!(r#"{{"model": "flash", "input": "hi", "{name}": {{"a": {deep}}}}}"#);
        let error = translate(body.as_bytes()).err().expect("refused");
        assert_eq!(error.status(), 400);
        assert!(error.message().contains(name), "{}", error.message());
        assert!(
            error.message().contains("126 levels"),
            "{}",
            error.message()
        );
    }
    // Within the limit, with brackets in strings that do not count.
    let body = format!(
        r#"{{"model": "flash", "input": "hi", "metadata": {{"a": "[[[{{", "b": {}1{}}}}}"#,
        "[".repeat(120),
        "]".repeat(120)
    );
    assert!(translate(body.as_bytes()).is_ok());
}

#[test]
fn parts_arguments_and_call_ids_are_read_as_clients_send_them() {
    let request = json!({"model": "flash", "input": [
        {"role": "developer", "content": [{"type": "input_text", "text": "<a>"}, {"type": "input_text", "text": "<b>"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "A"}, {"type": "input_text", "text": "B"}]},
        {"role": "user", "content": [{"type": "input_text"}, {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hel"}, {"type": "output_text", "text": "lo"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": {"city": "Paris"}}]});
    let chat = chat_of(&request);
    let messages = &chat["messages"];
    assert_eq!(messages[0]["content"], "<a>\n\n<b>");
    assert_eq!(messages[1]["content"], "A\n\nB");
    // A text part without text is left out, not sent as null.
    assert_eq!(
        messages[2]["content"],
        json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}])
    );
    // The assistant's parts are pieces of what it said.
    assert_eq!(messages[3]["content"], "Hello");
    // Arguments sent as an object are its JSON.
    let arguments = messages[3]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(arguments).unwrap(),
        json!({"city": "Paris"})
    );
    // A call id that is not a string is refused, naming the field.
    for item in [
        json!({"type": "function_call", "call_id": 7, "name": "f", "arguments": "{}"}),
        json!({"type": "function_call_output", "call_id": {"id": 1}, "output": "ok"}),
    ] {
        let request = json!({"model": "flash", "input": [item]});
        let error = translate(request.to_string().as_bytes())
            .err()
            .expect("refused");
        assert_eq!(error.status(), 400);
        assert!(error.message().contains("`call_id`"), "{}", error.message());
    }
    let request = json!({"model": "flash", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": 7}]});
    let error = translate(request.to_string().as_bytes())
        .err()
        .expect("refused");
    assert!(
        error.message().contains("`arguments`"),
        "{}",
        error.message()
    );
}

#[test]
fn long_namespaced_names_are_shortened_within_geminis_limit_and_map_back() {
    let namespace = format!("mcp__{}", "server".repeat(10));
    let request = json!({"model": "flash", "input": [
        {"type": "function_call", "call_id": "c1", "namespace": namespace, "name": "read_file", "arguments": "{}"}],
        "tools": [{"type": "namespace", "name": namespace, "tools": [
            {"type": "function", "name": "read_file"}, {"type": "function", "name": "read_files"},
            {"type": "function", "name": "read_file"}]}]});
    let translated = translate(request.to_string().as_bytes()).unwrap();
    let chat: Value = serde_json::from_slice(&translated.body).unwrap();
    let names: Vec<&str> = (chat["tools"].as_array().unwrap().iter())
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3);
    for (n, name) in names.iter().enumerate() {
        assert!(name.len() <= 64, "{name}");
        assert!(names[..n].iter().all(|other| other != name), "{name} twice");
        let tool = translated.tools.by_chat(name).unwrap();
        assert_eq!(tool.namespace.as_deref(), Some(namespace.as_str()));
    }
    assert_eq!(
        translated.tools.by_chat(names[1]).unwrap().name,
        "read_files"
    );
    assert_eq!(
        chat["messages"][0]["tool_calls"][0]["function"]["name"],
        names[0]
    );
    // A short one is as it was.
    let request = json!({"model": "flash", "input": "hi", "tools": [{"type": "namespace", "name": "ns",
        "tools": [{"type": "function", "name": "f"}]}]});
    assert_eq!(chat_of(&request)["tools"][0]["function"]["name"], "ns__f");
}
