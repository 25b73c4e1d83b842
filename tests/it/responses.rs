//! `/v1/responses` (Codex, `client.responses`): translated to a chat completion that the fake
//! Vertex receives byte for byte, and its answer translated back, whole or as a stream of
//! events; a Gemini 3 tool round trip whose second step passes the strict stand-in's
//! signature check; errors before and inside the stream; the log line.

use http::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const ALIASES: &str = r#"{"flash":"google/gemini-2.5-flash","pro-preview":"google/gemini-3.1-pro-preview","sonnet":{"model":"anthropic/claude-sonnet-4-5@20250929","location":"us-east5"}}"#;

fn settings() -> Vec<(&'static str, &'static str)> {
    vec![("MODEL_ALIASES_JSON", ALIASES)]
}

/// The events of a streamed answer, each checked for its `type` and the next
/// `sequence_number`.
fn events(answer: &Answer) -> Vec<Value> {
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    let text = std::str::from_utf8(&answer.body).expect("UTF-8");
    let events: Vec<Value> = (text.split_terminator("\n\n"))
        .map(|event| {
            let data = event.split_once("data: ").expect("a data line").1;
            assert!(!data.contains(['\n', '\r']), "one data line: {data}");
            serde_json::from_str(data).expect("JSON")
        })
        .collect();
    for (n, event) in events.iter().enumerate() {
        assert!(event["type"].is_string(), "{event}");
        assert_eq!(event["sequence_number"], n, "{event}");
    }
    events
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn weather() -> Value {
    json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
           {"type": "web_search"}])
}

#[tokio::test]
async fn a_streamed_text_answer_is_the_responses_events_and_vertex_gets_a_chat_completion() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings()).await;
    let body = r#"{"model":"flash","stream":true,"store":true,"instructions":"Be brief.","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hello there"}]}],"include":["reasoning.encrypted_content"],"prompt_cache_key":"k"}"#;
    let answer = post(&proxy, "/v1/responses", KEY, body).await;
    answer.expect(StatusCode::OK);
    let [received] = &vertex.received()[..] else {
        panic!("one request upstream")
    };
    assert!(
        received
            .path
            .ends_with("/endpoints/openapi/chat/completions")
    );
    assert_eq!(
        std::str::from_utf8(&received.body).unwrap(),
        r#"{"model":"google/gemini-2.5-flash","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hello there"}],"stream":true,"stream_options":{"include_usage":true}}"#
    );
    let events = events(&answer);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["model"], "flash");
    assert_eq!(done["store"], false);
    assert!(done["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(
        done["output"][0]["content"][0]["text"],
        "You said: hello there"
    );
    assert_eq!(done["usage"]["input_tokens"], 4);
    assert_eq!(done["usage"]["output_tokens"], 4);
    assert_eq!(done["usage"]["total_tokens"], 8);
}

/// Step one of a tool loop through `/v1/responses`: the `function_call` item the client got.
async fn call_item(proxy: &impl Served, model: &str, stream: bool) -> Value {
    let body = json!({"model": model, "stream": stream, "store": false, "tools": weather(),
                      "input": [{"type": "message", "role": "user", "content": "Paris"}]});
    let answer = post(proxy, "/v1/responses", KEY, &body.to_string()).await;
    answer.expect(StatusCode::OK);
    if !stream {
        let response = answer.json();
        assert_eq!(response["status"], "completed");
        return response["output"][0].clone();
    }
    let events = events(&answer);
    let done = (events.iter())
        .find(|e| e["type"] == "response.output_item.done")
        .expect("an item");
    let arguments = (events.iter())
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .expect("the arguments, done");
    assert_eq!(arguments["arguments"], done["item"]["arguments"]);
    assert_eq!(events.last().unwrap()["type"], "response.completed");
    done["item"].clone()
}

#[tokio::test]
async fn a_gemini_3_tool_round_trip_keeps_its_signature_in_the_call_id() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings()).await;
    for stream in [true, false] {
        let before = vertex.count();
        let call = call_item(&proxy, "pro-preview", stream).await;
        assert_eq!(call["type"], "function_call");
        assert_eq!(call["name"], "get_weather");
        assert_eq!(call["arguments"], r#"{"city":"Paris"}"#);
        let call_id = call["call_id"].as_str().unwrap();
        assert!(call_id.contains("__thought__"), "{call_id}");
        // Step two, as Codex replays it: the call item whole, then its output.
        let body = json!({"model": "pro-preview", "stream": stream, "tools": weather(), "input": [
            {"type": "message", "role": "user", "content": "Paris"},
            call,
            {"type": "function_call_output", "call_id": call_id, "output": "sunny"}]});
        let answer = post(&proxy, "/v1/responses", KEY, &body.to_string()).await;
        answer.expect(StatusCode::OK);
        let text = match stream {
            true => events(&answer).last().unwrap()["response"]["output"][0].clone(),
            false => answer.json()["output"][0].clone(),
        };
        assert_eq!(text["content"][0]["text"], "The tool said: sunny");
        // Vertex got its own id back, and the signature it issued on the call.
        let second = vertex.received()[before + 1].json();
        let own = call_id.split("__thought__").next().unwrap();
        let sent = &second["messages"][1]["tool_calls"][0];
        assert_eq!(sent["id"], own);
        assert_eq!(
            sent["extra_content"]["google"]["thought_signature"],
            vertex_proxy::demo::gemini3::signature_for(own)
        );
        assert_eq!(second["messages"][2]["tool_call_id"], own);
    }
}

#[tokio::test]
async fn refusals_and_errors_before_the_stream_are_in_openais_shape() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings()).await;
    let cases = [
        (r#"{"model":"sonnet","input":"hi"}"#, "/v1/messages"),
        (
            r#"{"model":"flash","input":"hi","previous_response_id":"resp_1"}"#,
            "stateless",
        ),
        (
            r#"{"model":"flash","input":[{"type":"item_reference","id":"msg_1"}]}"#,
            "store to false",
        ),
    ];
    for (body, says) in cases {
        let answer = post(&proxy, "/responses", KEY, body).await;
        answer.expect(StatusCode::BAD_REQUEST);
        assert!(answer.json()["error"]["type"].is_string());
        assert!(
            answer.error_message().contains(says),
            "{}",
            answer.error_message()
        );
    }
    assert_eq!(vertex.count(), 0);
    // Vertex's own refusal keeps its status (a 400 is not retried).
    vertex.set_behaviour(|_| google_error(400, "INVALID_ARGUMENT", None));
    let body = r#"{"model":"flash","stream":true,"input":"hi"}"#;
    let answer = post(&proxy, "/v1/responses", KEY, body).await;
    answer.expect(StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
    assert_eq!(answer.json()["error"]["code"], "INVALID_ARGUMENT");
}

#[tokio::test]
async fn an_error_as_the_streams_first_event_is_response_failed() {
    let vertex = FakeVertex::start_with(|_| error_in_stream(429, "RESOURCE_EXHAUSTED")).await;
    let (_metadata, proxy) = spawn_with(&vertex, &settings()).await;
    let body = r#"{"model":"flash","stream":true,"input":"hi"}"#;
    let answer = post(&proxy, "/v1/responses", KEY, body).await;
    answer.expect(StatusCode::OK);
    let events = events(&answer);
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
    let error = &events[2]["response"]["error"];
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"].as_str().unwrap().contains("try again in"));
    let line = proxy.request_line("/v1/responses", 200).await;
    assert_eq!(line["api"], "responses");
}

#[tokio::test]
async fn the_log_line_names_the_api_and_reads_the_usage() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let (_metadata, proxy) = spawn_with(&vertex, &settings()).await;
    let body = r#"{"model":"flash","stream":true,"input":"hello there"}"#;
    post(&proxy, "/v1/responses", KEY, body)
        .await
        .expect(StatusCode::OK);
    let line = proxy.request_line("/v1/responses", 200).await;
    assert_eq!(line["api"], "responses");
    assert_eq!(line["alias"], "flash");
    assert_eq!(line["usage"]["input_tokens"], 2);
    assert_eq!(line["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn a_tools_images_reach_vertex_in_a_user_message_after_the_tool_results() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings()).await;
    // The fake refuses what a strict endpoint refuses: images in a tool message, and a tool
    // message that does not follow the calls or another result.
    let call = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "view_image", "arguments": "{}"}}]});
    let image =
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}});
    for messages in [
        json!([{"role": "user", "content": "look"}, call, {"role": "tool", "tool_call_id": "call_a", "content": [image]}]),
        json!([{"role": "user", "content": "look"}, call, {"role": "user", "content": [image]}, {"role": "tool", "tool_call_id": "call_a", "content": "a.png"}]),
    ] {
        let body = json!({"model": "flash", "messages": messages});
        let answer = post(&proxy, "/v1/chat/completions", KEY, &body.to_string()).await;
        answer.expect(StatusCode::BAD_REQUEST);
    }
    let before = vertex.count();
    // Codex's view_image: the output is parts, text and an image.
    let body = json!({"model": "flash", "stream": true, "tools": [{"type": "function", "name": "view_image", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}],
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "look at a.png"}]},
            {"type": "function_call", "call_id": "call_a", "name": "view_image", "arguments": "{\"path\":\"a.png\"}"},
            {"type": "function_call_output", "call_id": "call_a", "output": [
                {"type": "input_text", "text": "a.png"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}]});
    let answer = post(&proxy, "/v1/responses", KEY, &body.to_string()).await;
    answer.expect(StatusCode::OK);
    assert_eq!(
        events(&answer).last().unwrap()["type"],
        "response.completed"
    );
    let received = vertex.received()[before].json();
    assert_eq!(
        received["messages"],
        json!([
            {"role": "user", "content": "look at a.png"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "view_image", "arguments": "{\"path\":\"a.png\"}"}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "a.png"},
            {"role": "user", "content": [
                {"type": "text", "text": "The image returned by tool call call_a:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        ])
    );
}

#[tokio::test]
async fn replayed_reasoning_items_are_accepted_and_not_sent() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings()).await;
    let body = json!({"model": "pro-preview", "stream": false, "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low", "summary": "auto"},
        "input": [
            {"type": "message", "role": "user", "content": "hi"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Thinking."}], "encrypted_content": "gAAAAB-opaque"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello."}]},
            {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": null},
            {"type": "message", "role": "user", "content": "again"}]});
    let answer = post(&proxy, "/v1/responses", KEY, &body.to_string()).await;
    answer.expect(StatusCode::OK);
    assert_eq!(
        answer.json()["output"][0]["content"][0]["text"],
        "You said: again"
    );
    let received = vertex.received()[0].json();
    assert_eq!(
        received["messages"],
        json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."},
               {"role": "user", "content": "again"}])
    );
    assert_eq!(received["reasoning_effort"], "low");
}

#[tokio::test]
async fn an_output_that_answers_no_call_is_not_a_tool_message() {
    // Codex adds `{"type": "function_call_output", "name", "namespace", "output"}`, with no
    // call_id, when the model sets a goal; as a tool message with no id, Gemini 3 refuses it.
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings()).await;
    let call = call_item(&proxy, "pro-preview", true).await;
    let call_id = call["call_id"].as_str().unwrap().to_owned();
    let body = json!({"model": "pro-preview", "stream": true, "tools": weather(), "input": [
        {"type": "message", "role": "user", "content": "Paris"},
        call,
        {"type": "function_call_output", "call_id": call_id, "output": "sunny"},
        {"type": "function_call_output", "name": "goal_objective", "namespace": "agent", "output": "find the weather"}]});
    let answer = post(&proxy, "/v1/responses", KEY, &body.to_string()).await;
    answer.expect(StatusCode::OK);
    assert_eq!(
        events(&answer).last().unwrap()["type"],
        "response.completed"
    );
    let messages = vertex.received()[1].json()["messages"].clone();
    assert_eq!(messages[2]["role"], "tool");
    assert_eq!(
        messages[3],
        json!({"role": "user", "content": [{"type": "text", "text": "The output of agent.goal_objective, which answers no call:\nfind the weather"}]})
    );
}

#[tokio::test]
async fn the_client_can_neither_forge_nor_hide_its_usage_in_the_log() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let (_metadata, proxy) = spawn_with(&vertex, &settings()).await;
    let forged = json!({"usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}});
    let padded = json!({"pad": "x".repeat(20_000)});
    for metadata in [forged, padded] {
        for stream in [true, false] {
            proxy.clear_lines();
            let body = json!({"model": "flash", "stream": stream, "input": "hello there", "metadata": metadata});
            let answer = post(&proxy, "/v1/responses", KEY, &body.to_string()).await;
            answer.expect(StatusCode::OK);
            let line = proxy.request_line("/v1/responses", 200).await;
            assert_eq!(line["usage"]["input_tokens"], 2, "stream {stream}");
            assert_eq!(line["usage"]["output_tokens"], 4, "stream {stream}");
        }
    }
}

#[tokio::test]
async fn an_error_event_later_in_the_stream_does_not_show_the_project() {
    let vertex = FakeVertex::start_with(|_| {
        let text = json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]});
        let message =
            format!("Quota of projects/{PROJECT}/locations/us-central1 for {PROJECT} is spent.");
        let error = json!({"error": {"code": 500, "message": message, "status": "INTERNAL"}});
        let events = format!("data: {text}\n\ndata: {error}\n\n");
        Reply::Respond(response(StatusCode::OK, "text/event-stream", full(events)))
    })
    .await;
    let proxy = in_process_with(&vertex, &settings()).await;
    let body = r#"{"model":"flash","stream":true,"input":"hi"}"#;
    let answer = post(&proxy, "/v1/responses", KEY, body).await;
    let events = events(&answer);
    let failed = events.last().unwrap();
    assert_eq!(failed["type"], "response.failed");
    let message = failed["response"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("projects/PROJECT/locations"), "{message}");
    assert!(!message.contains(PROJECT), "{message}");
}

#[tokio::test]
async fn a_claude_alias_is_told_the_endpoint_it_was_sent_to() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings()).await;
    let answer = post(
        &proxy,
        "/v1/responses",
        KEY,
        r#"{"model":"sonnet","input":"hi"}"#,
    )
    .await;
    answer.expect(StatusCode::BAD_REQUEST);
    let message = answer.error_message();
    assert!(
        message.contains("send it to /v1/messages, not /v1/responses"),
        "{message}"
    );
}

#[tokio::test]
async fn a_pretty_printed_streamed_request_gets_whole_events() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings()).await;
    let request = json!({"model": "flash", "input": "hi", "stream": true,
        "reasoning": {"effort": "low"}, "metadata": {"a": "b"}});
    let body = serde_json::to_string_pretty(&request).unwrap();
    let answer = post(&proxy, "/v1/responses", KEY, &body).await;
    answer.expect(StatusCode::OK);
    let events = events(&answer);
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["metadata"], request["metadata"]);
}
