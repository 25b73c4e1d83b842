//! Gemini 3's thought signatures carried in tool-call ids, against the strict stand-in: a
//! conversation's second step lands on another instance, or on one started since, and Vertex
//! still gets its own ids and the signature it issued, byte for byte.

use http::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const MARKER: &str = "__thought__";

/// The defaults, and a Gemini 3 model that streams each call's signature in a later delta.
const ALIASES: &str = r#"{"flash":"google/gemini-2.5-flash","pro-preview":"google/gemini-3.1-pro-preview","split":"google/gemini-3-split"}"#;

fn tool(name: &str) -> Value {
    json!({"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})
}

/// Step one of a tool loop: the calls as the client got them (from the JSON answer, or each
/// put together from the stream's deltas).
async fn first_step(proxy: &impl Served, model: &str, stream: bool, tools: &[&str]) -> Vec<Value> {
    let tools: Vec<Value> = tools.iter().map(|t| tool(t)).collect();
    let body = json!({"model": model, "stream": stream, "parallel_tool_calls": tools.len() > 1,
                      "tools": tools, "messages": [{"role": "user", "content": "Paris"}]});
    let answer = post(proxy, "/v1/chat/completions", KEY, &body.to_string()).await;
    answer.expect(StatusCode::OK);
    if !stream {
        let calls = answer.json()["choices"][0]["message"]["tool_calls"].clone();
        return calls.as_array().cloned().expect("tool calls");
    }
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    let mut calls: Vec<Value> = Vec::new();
    let deltas = (text.split("\n\n"))
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
        });
    for delta in deltas.flatten() {
        let index = delta["index"].as_u64().expect("an index") as usize;
        if index == calls.len() {
            calls.push(json!({"function": {"arguments": ""}}));
        }
        let call = &mut calls[index];
        for field in ["id", "type", "extra_content"] {
            if !delta[field].is_null() {
                call[field] = delta[field].clone();
            }
        }
        if let Some(name) = delta["function"]["name"].as_str() {
            call["function"]["name"] = json!(name);
        }
        let arguments = delta["function"]["arguments"].as_str().unwrap_or_default();
        let so_far = call["function"]["arguments"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        call["function"]["arguments"] = json!(so_far + arguments);
    }
    calls
}

/// Step two as clients that rebuild history send it: the calls without `extra_content`
/// (unless `keep`), one result per call.
fn second_step(model: &str, calls: &[Value], keep: bool) -> String {
    let rebuilt: Vec<Value> = (calls.iter())
        .map(|call| {
            let mut call = call.clone();
            if !keep {
                call.as_object_mut().unwrap().remove("extra_content");
            }
            call
        })
        .collect();
    let mut messages = vec![
        json!({"role": "user", "content": "Paris"}),
        json!({"role": "assistant", "content": null, "tool_calls": rebuilt}),
    ];
    for call in calls {
        messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "sunny"}));
    }
    json!({"model": model, "tools": [tool("get_weather")], "messages": messages}).to_string()
}

/// Vertex's own id, before the marker.
fn own(id: &Value) -> String {
    let id = id.as_str().expect("a string id");
    id.split(MARKER).next().unwrap().to_owned()
}

/// The bytes Vertex should get for `sent`: the model spliced, every carried id back to
/// Vertex's own, and `signature` just inside the first call's `{`.
fn expected(
    sent: &str,
    model: &str,
    vertex_model: &str,
    calls: &[Value],
    signature: &str,
) -> String {
    let mut out = sent.replacen(&format!("\"{model}\""), &format!("\"{vertex_model}\""), 1);
    for call in calls {
        let id = call["id"].as_str().unwrap();
        out = out.replace(&format!("\"{id}\""), &format!("\"{}\"", own(&call["id"])));
    }
    out.replacen(
        r#""tool_calls":[{"#,
        &format!(
            r#""tool_calls":[{{"extra_content":{{"google":{{"thought_signature":"{signature}"}}}},"#
        ),
        1,
    )
}

fn issued(call: &Value) -> String {
    call["extra_content"]["google"]["thought_signature"]
        .as_str()
        .expect("Gemini 3 signs the first call")
        .to_owned()
}

#[tokio::test]
async fn the_second_step_keeps_its_signature_on_another_instance_and_after_a_restart() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    env.insert("MODEL_ALIASES_JSON".into(), ALIASES.into());
    let mut a = spawn(&env).await;
    let b = spawn(&env).await;
    for (model, vertex_model, stream) in [
        ("pro-preview", "google/gemini-3.1-pro-preview", false),
        ("pro-preview", "google/gemini-3.1-pro-preview", true),
        ("split", "google/gemini-3-split", true),
    ] {
        let calls = first_step(&a, model, stream, &["get_weather"]).await;
        let id = calls[0]["id"].as_str().unwrap();
        // The client sees Vertex's id with the signature on it, and the signature itself.
        let issued = issued(&calls[0]);
        assert!(id.starts_with("call_") && id.contains(MARKER), "{id}");
        let vertex_got = vertex.received().pop().unwrap().json();
        assert!(!vertex_got.to_string().contains(MARKER));
        b.clear_lines();
        let sent = second_step(model, &calls, false);
        let answer = post(&b, "/v1/chat/completions", KEY, &sent).await;
        answer.expect(StatusCode::OK);
        assert_eq!(
            answer.json()["choices"][0]["message"]["content"],
            "The tool said: sunny"
        );
        let received = vertex.received().pop().unwrap();
        let want = expected(&sent, model, vertex_model, &calls, &issued);
        assert_eq!(
            String::from_utf8_lossy(&received.body),
            want,
            "{model} stream {stream}"
        );
        let line = b.request_line("/v1/chat/completions", 200).await;
        assert_eq!(
            line["thought_signatures"],
            json!({"restored": 1, "filled": 0})
        );
    }
    // A restarted instance has nothing of the first step, and needs nothing.
    let calls = first_step(&a, "pro-preview", true, &["get_weather"]).await;
    a.stop().await;
    let a = spawn(&env).await;
    let sent = second_step("pro-preview", &calls, false);
    post(&a, "/v1/chat/completions", KEY, &sent)
        .await
        .expect(StatusCode::OK);
    let received = vertex.received().pop().unwrap();
    let want = expected(
        &sent,
        "pro-preview",
        "google/gemini-3.1-pro-preview",
        &calls,
        &issued(&calls[0]),
    );
    assert_eq!(String::from_utf8_lossy(&received.body), want);
}

#[tokio::test]
async fn parallel_calls_only_the_first_carries_one_and_a_kept_extra_content_wins() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let extra = [("MODEL_ALIASES_JSON", ALIASES)];
    let a = in_process_with(&vertex, &extra).await;
    let b = in_process_with(&vertex, &extra).await;
    for (model, stream) in [
        ("pro-preview", false),
        ("pro-preview", true),
        ("split", true),
    ] {
        let calls = first_step(&a, model, stream, &["get_weather", "get_time"]).await;
        assert_eq!(calls.len(), 2);
        assert!(calls[0]["id"].as_str().unwrap().contains(MARKER));
        assert!(
            !calls[1]["id"].as_str().unwrap().contains(MARKER),
            "{calls:?}"
        );
        assert!(calls[1].get("extra_content").is_none());
        let sent = second_step(model, &calls, false);
        post(&b, "/v1/chat/completions", KEY, &sent)
            .await
            .expect(StatusCode::OK);
        let received = vertex.received().pop().unwrap().json();
        let got = &received["messages"][1]["tool_calls"];
        assert_eq!(got[0]["id"], own(&calls[0]["id"]));
        assert_eq!(got[1]["id"], calls[1]["id"]);
        assert_eq!(
            got[0]["extra_content"]["google"]["thought_signature"],
            issued(&calls[0])
        );
        assert!(got[1].get("extra_content").is_none());
        assert_eq!(
            received["messages"][2]["tool_call_id"],
            own(&calls[0]["id"])
        );
    }
    // A client that keeps `extra_content`: its own goes, once; the id is still cleaned.
    let calls = first_step(&a, "pro-preview", false, &["get_weather"]).await;
    let sent = second_step("pro-preview", &calls, true);
    post(&b, "/v1/chat/completions", KEY, &sent)
        .await
        .expect(StatusCode::OK);
    let received = vertex.received().pop().unwrap();
    let text = String::from_utf8_lossy(&received.body);
    assert_eq!(text.matches("thought_signature").count(), 1, "{text}");
    let own_id = own(&calls[0]["id"]);
    let want = sent
        .replacen("\"pro-preview\"", "\"google/gemini-3.1-pro-preview\"", 1)
        .replace(calls[0]["id"].as_str().unwrap(), &own_id);
    assert_eq!(text, want);
}

#[tokio::test]
async fn a_null_extra_content_gets_the_signature_in_its_place() {
    // A client that writes every field of its call objects sends `"extra_content": null`.
    // Vertex takes a key's last value: a signature inserted beside the null would be
    // overruled, and the step refused. The null itself is replaced, in either mode.
    let vertex = FakeVertex::start_with(stand_in).await;
    let restore = in_process_with(&vertex, &[]).await;
    let fill = in_process_with(&vertex, &[("THOUGHT_SIGNATURES", "fill")]).await;
    let calls = first_step(&restore, "pro-preview", false, &["get_weather"]).await;
    let mut nulled = calls.clone();
    nulled[0]["extra_content"] = Value::Null;
    let sent = second_step("pro-preview", &nulled, true);
    assert_eq!(sent.matches(r#""extra_content":null"#).count(), 1, "{sent}");
    for (proxy, signature) in [
        (&restore, issued(&calls[0])),
        (&fill, "skip_thought_signature_validator".to_owned()),
    ] {
        let answer = post(proxy, "/v1/chat/completions", KEY, &sent).await;
        answer.expect(StatusCode::OK);
        let received = vertex.received().pop().unwrap();
        let want = sent
            .replacen("\"pro-preview\"", "\"google/gemini-3.1-pro-preview\"", 1)
            .replace(calls[0]["id"].as_str().unwrap(), &own(&calls[0]["id"]))
            .replacen(
                r#""extra_content":null"#,
                &format!(r#""extra_content":{{"google":{{"thought_signature":"{signature}"}}}}"#),
                1,
            );
        assert_eq!(String::from_utf8_lossy(&received.body), want);
    }
}

#[tokio::test]
async fn forged_truncated_and_foreign_ids_read_clearly() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let (_metadata, proxy) = spawn_with(&vertex, &[]).await;
    let calls = first_step(&proxy, "pro-preview", false, &["get_weather"]).await;
    let own_id = own(&calls[0]["id"]);
    // Forged: a well-formed carried part with another call's signature. Vertex refuses it,
    // and the client reads Vertex's words in OpenAI's shape.
    let mut forged = calls.clone();
    let other = vertex_proxy::demo::gemini3::signature_for("call_other");
    let carried = vertex_proxy::signatures::carry(&own_id, &other).unwrap();
    forged[0]["id"] = json!(carried);
    let answer = post(
        &proxy,
        "/v1/chat/completions",
        KEY,
        &second_step("pro-preview", &forged, false),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer
            .error_message()
            .contains("Thought signature is not valid"),
        "{}",
        answer.error_message()
    );
    assert_eq!(answer.json()["error"]["code"], "INVALID_ARGUMENT");
    // Truncated so that it is no base64: an ordinary id, sent as it came, with the sentinel.
    let mut truncated = calls.clone();
    let id = calls[0]["id"].as_str().unwrap();
    let cut = &id[..own_id.len() + MARKER.len() + 5];
    truncated[0]["id"] = json!(cut);
    // Lines reach stdout in order, a little after their responses: the forged request's has
    // come, and with it every line before it, before they are forgotten.
    proxy.request_line("/v1/chat/completions", 400).await;
    proxy.clear_lines();
    let sent = second_step("pro-preview", &truncated, false);
    post(&proxy, "/v1/chat/completions", KEY, &sent)
        .await
        .expect(StatusCode::OK);
    let received = vertex.received().pop().unwrap().json();
    assert_eq!(received["messages"][1]["tool_calls"][0]["id"], cut);
    assert_eq!(received["messages"][2]["tool_call_id"], cut);
    assert_eq!(
        received["messages"][1]["tool_calls"][0]["extra_content"]["google"]["thought_signature"],
        "skip_thought_signature_validator"
    );
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert_eq!(
        line["thought_signatures"],
        json!({"restored": 0, "filled": 1})
    );
    assert!(
        proxy
            .lines()
            .iter()
            .any(|l| l.contains("WARNING") && l.contains("sent as an ordinary id")),
        "{:?}",
        proxy.lines()
    );
}

#[tokio::test]
async fn ids_from_another_mode_never_reach_vertex_foreign() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let restore = in_process_with(&vertex, &[]).await;
    let calls = first_step(&restore, "pro-preview", false, &["get_weather"]).await;
    let sent = second_step("pro-preview", &calls, false);
    // `fill`: Vertex's own ids, and the sentinel.
    let fill = in_process_with(&vertex, &[("THOUGHT_SIGNATURES", "fill")]).await;
    post(&fill, "/v1/chat/completions", KEY, &sent)
        .await
        .expect(StatusCode::OK);
    let want = expected(
        &sent,
        "pro-preview",
        "google/gemini-3.1-pro-preview",
        &calls,
        "skip_thought_signature_validator",
    );
    assert_eq!(
        String::from_utf8_lossy(&vertex.received().pop().unwrap().body),
        want
    );
    // `fill` answers carry nothing in their ids.
    let plain = first_step(&fill, "pro-preview", true, &["get_weather"]).await;
    assert!(!plain[0]["id"].as_str().unwrap().contains(MARKER));
    // `off`: Vertex's own ids, nothing filled; the strict fake refuses the lost signature.
    let off = in_process_with(&vertex, &[("THOUGHT_SIGNATURES", "off")]).await;
    let answer = post(&off, "/v1/chat/completions", KEY, &sent).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer
            .error_message()
            .contains("missing a thought_signature")
    );
    let received = vertex.received().pop().unwrap();
    assert!(!String::from_utf8_lossy(&received.body).contains(MARKER));
    // History from `fill` sent under `restore`: the sentinel.
    let sent = second_step("pro-preview", &plain, false);
    post(&restore, "/v1/chat/completions", KEY, &sent)
        .await
        .expect(StatusCode::OK);
    let received = vertex.received().pop().unwrap().json();
    assert_eq!(
        received["messages"][1]["tool_calls"][0]["extra_content"]["google"]["thought_signature"],
        "skip_thought_signature_validator"
    );
}

#[tokio::test]
async fn the_stores_old_variables_warn_and_stop_nothing() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let (_metadata, proxy) = spawn_with(
        &vertex,
        &[
            ("THOUGHT_SIGNATURES_CACHE_BYTES", "1000"),
            ("THOUGHT_SIGNATURES_TTL_SECS", "5"),
        ],
    )
    .await;
    for var in [
        "THOUGHT_SIGNATURES_CACHE_BYTES",
        "THOUGHT_SIGNATURES_TTL_SECS",
    ] {
        let line = proxy
            .wait_for_line(var, |l| {
                l["severity"] == "WARNING"
                    && l["message"].as_str().is_some_and(|m| m.starts_with(var))
            })
            .await;
        assert!(
            line["message"]
                .as_str()
                .unwrap()
                .contains("no longer does anything")
        );
    }
    assert_eq!(chat_status(&proxy, KEY).await, StatusCode::OK);
}
