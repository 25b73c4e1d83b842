//! Vertex as it really behaves, against the strict fake: Google's error envelopes reach the
//! client in OpenAI's shape; 429s and 5xx are retried, across locations, until the first
//! content byte, and work Vertex may have begun is not; Gemini 3's thought signatures are
//! restored or filled.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};

/// Answers the n-th request (from 0) as `script` says.
fn scripted(
    script: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static,
) -> impl Fn(&Recorded) -> Reply {
    let count = AtomicUsize::new(0);
    move |r| script(count.fetch_add(1, Ordering::SeqCst), r)
}

fn ok(r: &Recorded) -> Reply {
    Reply::Json(
        StatusCode::OK,
        completion(r.json()["model"].as_str().unwrap_or_default()),
    )
}

fn sse(events: &[&str]) -> Reply {
    let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    Reply::Respond(response(StatusCode::OK, "text/event-stream", full(body)))
}

const STREAM: &str =
    r#"{"model":"flash","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

// ------------------------------------------------------------------------ errors

#[tokio::test]
async fn vertex_errors_reach_the_client_in_openai_shape_with_their_status() {
    let vertex = FakeVertex::start().await;
    let proxy = in_process_with(&vertex, &[("MAX_ATTEMPTS", "1")]).await;
    let cases = [
        (400, "INVALID_ARGUMENT", "invalid_request_error"),
        (404, "NOT_FOUND", "invalid_request_error"),
        (429, "RESOURCE_EXHAUSTED", "rate_limit_error"),
        (500, "INTERNAL", "api_error"),
        (503, "UNAVAILABLE", "api_error"),
    ];
    for (status, google, kind) in cases {
        vertex.set_behaviour(move |_| google_error(status, google, Some("7")));
        let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
        assert_eq!(answer.status.as_u16(), status);
        assert_eq!(answer.headers["content-type"], "application/json");
        assert_eq!(
            answer.json(),
            json!({"error": {
                "message": format!("{google}: the fake says so. Please try again later."),
                "type": kind,
                "code": google,
                "param": null,
            }})
        );
        assert_eq!(answer.headers["retry-after"], "7");
    }
    // A body that is not Google's envelope still gets a message that says what happened.
    vertex.set_behaviour(|_| {
        Reply::Respond(response(
            StatusCode::BAD_GATEWAY,
            "text/html",
            full("<html>bad</html>"),
        ))
    });
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        answer.error_message(),
        "Vertex answered HTTP 502 (Bad Gateway) without an error message"
    );
    assert_eq!(answer.json()["error"]["code"], "upstream_error");
}

#[tokio::test]
async fn googles_messages_reach_the_client_without_the_project_id() {
    let vertex = FakeVertex::start_with(model_not_found).await;
    let aliases = r#"{"flash":"google/gemini-2.5-flash","sonnet":{"model":"anthropic/claude-sonnet-4-5@20250929","location":"us-east5"}}"#;
    let settings = [("MAX_ATTEMPTS", "1"), ("MODEL_ALIASES_JSON", aliases)];
    let (_metadata, proxy) = spawn_with(&vertex, &settings).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.error_message(),
        "Publisher Model `projects/PROJECT/locations/global/endpoints/openapi/chat/completions` \
         was not found or your project does not have access to it. Project PROJECT may need to \
         enable it."
    );
    // As a stream's first event, too.
    vertex.set_behaviour(|_| {
        let message =
            format!("Invalid resource projects/{PROJECT}/locations/global (project {PROJECT}).");
        let error =
            json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}});
        let event = format!("data: {error}\n\n");
        Reply::Respond(response(StatusCode::OK, "text/event-stream", full(event)))
    });
    let answer = post(&proxy, "/v1/chat/completions", KEY, STREAM).await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(
        text.contains("Invalid resource projects/PROJECT/locations/global (project PROJECT)."),
        "{text}"
    );
    // And Claude's own errors, which otherwise pass unchanged.
    vertex.set_behaviour(|r: &Recorded| {
        let resource = r.path.trim_start_matches("/v1/").split(':').next().unwrap().to_owned();
        let error = json!({"type": "error", "error": {"type": "not_found_error", "message": format!("{resource} not found")}});
        Reply::Json(StatusCode::NOT_FOUND, error.to_string())
    });
    let body = r#"{"model":"sonnet","max_tokens":5,"messages":[]}"#;
    let answer = post(&proxy, "/v1/messages", KEY, body).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.json()["error"]["message"],
        "projects/PROJECT/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929 not found"
    );
    assert_eq!(vertex.count(), 3);
}

#[tokio::test]
async fn the_log_line_says_what_vertex_answered_without_its_message() {
    let vertex = FakeVertex::start_with(|_| google_error(400, "INVALID_ARGUMENT", None)).await;
    let (_metadata, proxy) = spawn_with(&vertex, &[]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let line = proxy.request_line("/v1/chat/completions", 400).await;
    assert_eq!(line["upstream_status"], 400);
    assert_eq!(line["error"], "Vertex answered 400 INVALID_ARGUMENT");
    assert!(
        line.get("attempts").is_none(),
        "a 400 is not retried: {line}"
    );
    assert_eq!(vertex.count(), 1);
}

// ----------------------------------------------------------------------- retries

#[tokio::test]
async fn a_429_then_a_200_is_retried_with_the_same_bytes_and_logged() {
    let vertex = FakeVertex::start_with(scripted(|n, r| match n {
        0 => google_error(429, "RESOURCE_EXHAUSTED", None),
        _ => ok(r),
    }))
    .await;
    let (_metadata, proxy) = spawn_with(&vertex, &[]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json()["choices"][0]["message"]["content"],
        ANSWER_SENTINEL
    );
    let received = vertex.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].body, received[1].body,
        "the retry sends the same bytes"
    );
    assert_eq!(received[0].path, received[1].path);
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    let attempts = line["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{line}");
    assert_eq!(
        attempts[0],
        json!({"location": "global", "status": 429, "wait_ms": 0})
    );
    assert_eq!(
        (&attempts[1]["location"], &attempts[1]["status"]),
        (&json!("global"), &json!(200))
    );
    // Full jitter under the first ceiling of one second.
    assert!(attempts[1]["wait_ms"].as_u64().unwrap() <= 1000, "{line}");
    assert_eq!(line["location"], "global");
}

#[tokio::test]
async fn a_5xx_is_retried_too() {
    let vertex = FakeVertex::start_with(scripted(|n, r| match n {
        0 => google_error(500, "INTERNAL", None),
        1 => google_error(503, "UNAVAILABLE", None),
        _ => ok(r),
    }))
    .await;
    let proxy = in_process_with(&vertex, &[]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(vertex.count(), 3);
}

#[tokio::test]
async fn work_vertex_may_have_begun_is_not_sent_again() {
    // Vertex read the request whole, worked on it for a while, then the connection was cut:
    // another attempt would do (and bill) the work again.
    let vertex = FakeVertex::start_with(|_| {
        let hangup = Box::new(Reply::Hangup);
        Reply::Late(std::time::Duration::from_millis(200), hangup)
    })
    .await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("MAX_ATTEMPTS", "3")]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.json()["error"]["code"], "upstream_error");
    let message = answer.error_message();
    assert!(
        message.starts_with("Vertex closed the connection during the request"),
        "{message}"
    );
    assert_eq!(vertex.count(), 1, "sent once");
    let line = proxy.request_line("/v1/chat/completions", 502).await;
    assert!(line.get("attempts").is_none(), "{line}");
    // A thinking model's stream cut in its silent phase, before its first event: the same.
    vertex.set_behaviour(|_| Reply::Paced {
        content_type: "text/event-stream",
        chunks: vec![Bytes::from(": thinking\n\n")],
        every: std::time::Duration::ZERO,
        end: End::Cut,
    });
    let answer = post(&proxy, "/v1/chat/completions", KEY, STREAM).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let message = answer.error_message();
    assert!(
        message.starts_with("Vertex closed the connection during the request"),
        "{message}"
    );
    assert_eq!(vertex.count(), 2, "sent once");
}

#[tokio::test]
async fn when_the_attempts_run_out_the_client_gets_the_last_error() {
    let vertex = FakeVertex::start_with(scripted(|n, _| {
        let envelope = json!([{"error": {"code": 429, "message": format!("busy, attempt {}", n + 1), "status": "RESOURCE_EXHAUSTED"}}]);
        Reply::Json(StatusCode::TOO_MANY_REQUESTS, envelope.to_string())
    }))
    .await;
    let proxy = in_process_with(&vertex, &[("MAX_ATTEMPTS", "3")]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.error_message(), "busy, attempt 3");
    assert_eq!(answer.json()["error"]["code"], "RESOURCE_EXHAUSTED");
    assert_eq!(vertex.count(), 3);
}

#[tokio::test]
async fn when_the_budget_runs_out_the_client_gets_the_last_error() {
    let vertex = FakeVertex::start_with(scripted(|n, _| {
        let envelope = json!([{"error": {"code": 429, "message": format!("busy, attempt {}", n + 1), "status": "RESOURCE_EXHAUSTED"}}]);
        let mut response = response(
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            full(envelope.to_string()),
        );
        response
            .headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("1"));
        Reply::Respond(response)
    }))
    .await;
    // Attempts are plenty; two seconds of waiting allow two waits of one second.
    let settings = [("MAX_ATTEMPTS", "10"), ("RETRY_BUDGET_SECS", "2")];
    let proxy = in_process_with(&vertex, &settings).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.error_message(), "busy, attempt 3");
    assert_eq!(answer.headers["retry-after"], "1");
    assert_eq!(vertex.count(), 3);
}

#[tokio::test]
async fn a_wait_past_the_budget_is_not_waited_and_retry_after_reaches_the_client() {
    let vertex =
        FakeVertex::start_with(|_| google_error(429, "RESOURCE_EXHAUSTED", Some("30"))).await;
    let proxy = in_process_with(&vertex, &[("RETRY_BUDGET_SECS", "20")]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "30");
    assert_eq!(
        vertex.count(),
        1,
        "30 s is past the 20 s budget: no second attempt"
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let vertex = FakeVertex::start_with(scripted(|n, r| match n {
        0 => google_error(503, "UNAVAILABLE", Some("1")),
        _ => ok(r),
    }))
    .await;
    let (_metadata, proxy) = spawn_with(&vertex, &[]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::OK);
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert_eq!(line["attempts"][0]["status"], 503);
    assert_eq!(line["attempts"][1]["wait_ms"], 1000, "{line}");
}

#[tokio::test]
async fn an_alias_fails_over_to_its_next_location_at_once() {
    let vertex = FakeVertex::start_with(|r: &Recorded| {
        if r.path.contains("/locations/us-central1/") {
            google_error(429, "RESOURCE_EXHAUSTED", None)
        } else {
            ok(r)
        }
    })
    .await;
    let aliases = r#"{"flash":{"model":"google/gemini-2.5-flash","locations":["us-central1","europe-west4"]}}"#;
    let (_metadata, proxy) = spawn_with(&vertex, &[("MODEL_ALIASES_JSON", aliases)]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::OK);
    let paths: Vec<String> = vertex.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/v1/projects/test-proj/locations/us-central1/endpoints/openapi/chat/completions",
            "/v1/projects/test-proj/locations/europe-west4/endpoints/openapi/chat/completions",
        ]
    );
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert_eq!(line["location"], "europe-west4");
    assert_eq!(
        line["attempts"],
        json!([
            {"location": "us-central1", "status": 429, "wait_ms": 0},
            {"location": "europe-west4", "status": 200, "wait_ms": 0},
        ])
    );
}

#[tokio::test]
async fn an_error_event_before_any_content_is_retried_and_the_client_sees_only_the_good_stream() {
    let good = [r#"{"choices":[{"delta":{"content":"Hello"}}]}"#, "[DONE]"];
    let vertex = FakeVertex::start_with(scripted(move |n, _| match n {
        0 => error_in_stream(429, "RESOURCE_EXHAUSTED"),
        _ => sse(&good),
    }))
    .await;
    let proxy = in_process_with(&vertex, &[]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, STREAM).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    let expected: String = good.iter().map(|e| format!("data: {e}\n\n")).collect();
    assert_eq!(String::from_utf8_lossy(&answer.body), expected);
    assert_eq!(vertex.count(), 2);
}

#[tokio::test]
async fn an_error_event_that_outlasts_the_retries_is_one_openai_event_without_done() {
    let vertex = FakeVertex::start_with(|_| error_in_stream(429, "RESOURCE_EXHAUSTED")).await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("MAX_ATTEMPTS", "2")]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, STREAM).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    let event = text
        .strip_prefix("data: ")
        .and_then(|t| t.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("one SSE event: {text:?}"));
    let error: Value = serde_json::from_str(event).unwrap();
    assert_eq!(
        error,
        json!({"error": {"message": "Resource exhausted. Please try again later.", "type": "rate_limit_error", "code": "RESOURCE_EXHAUSTED", "param": null}})
    );
    assert!(!text.contains("[DONE]"));
    assert_eq!(vertex.count(), 2);
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert_eq!(
        line["error"],
        "Vertex answered 429 RESOURCE_EXHAUSTED in its stream"
    );
}

#[tokio::test]
async fn nothing_is_retried_once_content_has_reached_the_client() {
    // An error after content is the stream's own business, passed on as it came.
    let events = [
        r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
        r#"{"error":{"code":429,"message":"late","status":"RESOURCE_EXHAUSTED"}}"#,
    ];
    let vertex = FakeVertex::start_with(move |_| sse(&events)).await;
    let proxy = in_process_with(&vertex, &[]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, STREAM).await;
    assert_eq!(answer.status, StatusCode::OK);
    let expected: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    assert_eq!(String::from_utf8_lossy(&answer.body), expected);
    assert_eq!(vertex.count(), 1);
    // A stream cut after its first content is cut for the client too, not sent again.
    vertex.set_behaviour(|_| Reply::Paced {
        content_type: "text/event-stream",
        chunks: vec![Bytes::from("data: {\"choices\":[]}\n\n")],
        every: std::time::Duration::ZERO,
        end: End::Cut,
    });
    let response = start_stream(&proxy).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        within("the cut", response.into_body().collect())
            .await
            .is_err()
    );
    assert_eq!(vertex.count(), 2);
}

#[tokio::test]
async fn a_client_that_leaves_during_the_backoff_ends_the_retries() {
    let vertex =
        FakeVertex::start_with(|_| google_error(429, "RESOURCE_EXHAUSTED", Some("3"))).await;
    let (_metadata, proxy) = spawn_with(&vertex, &[]).await;
    let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: p\r\nx-api-key: {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut client, request.as_bytes())
        .await
        .unwrap();
    // The first attempt has its whole 429, and the proxy starts its three seconds' wait. It
    // gives no sign of waiting, so this pause lets it get there; too short a pause fails the
    // test (no attempt in the line), never passes it.
    vertex.wait_for(1).await;
    vertex.wait_until_idle().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(client);
    // The request ends when the client leaves (its line says so), not after the wait.
    let line = proxy
        .wait_for_line("the abandoned request's line", |l| {
            l["httpRequest"]["requestUrl"] == "/v1/chat/completions"
        })
        .await;
    assert_eq!(line["cancelled"], true, "{line}");
    assert_eq!(line["attempts"][0]["status"], 429);
    assert_eq!(vertex.count(), 1, "no attempt after the client left");
}
/// A two-step tool loop's history as clients that rebuild it send it: the current turn's tool
/// call has no `extra_content`, an earlier one kept its real signature.
const TOOL_HISTORY: &str = r#"{"model":"pro-preview","messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_0","type":"function","function":{"name":"get_weather","arguments":"{}"},"extra_content":{"google":{"thought_signature":"c2lnLTA="}}}]},{"role":"tool","tool_call_id":"call_0","content":"sunny"},{"role":"user","content":"and tomorrow?"},{"role":"assistant","content":null,"tool_calls":[ {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"day\":\"tomorrow\"}"}},{"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},{"role":"tool","tool_call_id":"call_1","content":"rain"}],"tools":[]}"#;

#[tokio::test]
async fn gemini3_history_that_lost_its_signature_gets_the_sentinel_and_nothing_else_changes() {
    let vertex = FakeVertex::start().await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("THOUGHT_SIGNATURES", "fill")]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, TOOL_HISTORY).await;
    answer.expect(StatusCode::OK);
    let received = vertex.wait_for(1).await.remove(0);
    let expected = TOOL_HISTORY
        .replacen(r#""pro-preview""#, r#""google/gemini-3.1-pro-preview""#, 1)
        .replacen(
            r#"[ {"id":"call_1""#,
            r#"[ {"extra_content":{"google":{"thought_signature":"skip_thought_signature_validator"}},"id":"call_1""#,
            1,
        );
    assert_eq!(String::from_utf8_lossy(&received.body), expected);
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert_eq!(
        line["thought_signatures"],
        json!({"restored": 0, "filled": 1})
    );
}

#[tokio::test]
async fn the_strict_fake_refuses_the_same_history_when_filling_is_off() {
    let vertex = FakeVertex::start().await;
    let proxy = in_process_with(&vertex, &[("THOUGHT_SIGNATURES", "off")]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, TOOL_HISTORY).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&answer.body).contains("missing a thought_signature"));
    // Gemini 2.5 is not filled, byte for byte.
    let flash = TOOL_HISTORY.replacen(r#""pro-preview""#, r#""flash""#, 1);
    let vertex2 = FakeVertex::start().await;
    let proxy2 = in_process_with(&vertex2, &[]).await;
    assert_eq!(
        post(&proxy2, "/v1/chat/completions", KEY, &flash)
            .await
            .status,
        StatusCode::OK
    );
    let received = vertex2.wait_for(1).await.remove(0);
    assert_eq!(
        String::from_utf8_lossy(&received.body),
        flash.replacen(r#""flash""#, r#""google/gemini-2.5-flash""#, 1)
    );
    drop(vertex);
}

// ------------------------------------------------------------ restored signatures

const TOOLS: &str = r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]"#;

/// Step one of a tool loop on `pro-preview`: Vertex answers with a call to the tool, signed.
/// Returns the call as the client got it.
async fn first_step(proxy: &impl Served, key: &str, stream: bool) -> Value {
    let body = format!(
        r#"{{"model":"pro-preview","stream":{stream},"tools":{TOOLS},"messages":[{{"role":"user","content":"Paris"}}]}}"#
    );
    let answer = post(proxy, "/v1/chat/completions", key, &body).await;
    answer.expect(StatusCode::OK);
    if !stream {
        return answer.json()["choices"][0]["message"]["tool_calls"][0].clone();
    }
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find_map(|chunk| {
            let call = &chunk["choices"][0]["delta"]["tool_calls"][0];
            call.is_object().then(|| call.clone())
        })
        .expect("a tool call in the stream")
}

/// Step two, as clients that rebuild history send it: the call without `extra_content`.
fn second_step(call: &Value) -> String {
    let mut rebuilt = call.clone();
    rebuilt.as_object_mut().unwrap().remove("extra_content");
    rebuilt.as_object_mut().unwrap().remove("index");
    json!({"model": "pro-preview", "tools": serde_json::from_str::<Value>(TOOLS).unwrap(), "messages": [
        {"role": "user", "content": "Paris"},
        {"role": "assistant", "content": null, "tool_calls": [rebuilt]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]})
    .to_string()
}

/// The signature Vertex received on the assistant message of step two.
fn signature_received(vertex: &FakeVertex) -> String {
    let last = vertex.received().pop().unwrap().json();
    last["messages"][1]["tool_calls"][0]["extra_content"]["google"]["thought_signature"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn restore_gives_vertex_back_the_signature_it_issued_from_json_and_sse() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let (_metadata, proxy) = spawn_with(&vertex, &[]).await;
    for stream in [false, true] {
        proxy.clear_lines();
        let call = first_step(&proxy, KEY, stream).await;
        let issued = call["extra_content"]["google"]["thought_signature"]
            .as_str()
            .expect("Gemini 3 signs its tool call")
            .to_owned();
        // Lines reach stdout a little after their responses: the first step's is waited
        // for, so that it is not taken for the second step's.
        proxy.request_line("/v1/chat/completions", 200).await;
        proxy.clear_lines();
        let answer = post(&proxy, "/v1/chat/completions", KEY, &second_step(&call)).await;
        answer.expect(StatusCode::OK);
        assert_eq!(
            answer.json()["choices"][0]["message"]["content"],
            "The tool said: sunny"
        );
        assert_eq!(signature_received(&vertex), issued, "stream: {stream}");
        let line = proxy.request_line("/v1/chat/completions", 200).await;
        assert_eq!(
            line["thought_signatures"],
            json!({"restored": 1, "filled": 0})
        );
    }
}

#[tokio::test]
async fn the_signature_goes_with_the_conversation_and_fill_sends_the_sentinel() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &[]).await;
    let call = first_step(&proxy, KEY, false).await;
    // The same history from another key: the signature is the conversation's, in its id.
    let issued = call["extra_content"]["google"]["thought_signature"].clone();
    let answer = post(
        &proxy,
        "/v1/chat/completions",
        KEY_HASHED,
        &second_step(&call),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(signature_received(&vertex), issued.as_str().unwrap());

    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &[("THOUGHT_SIGNATURES", "fill")]).await;
    let call = first_step(&proxy, KEY, false).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, &second_step(&call)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        signature_received(&vertex),
        "skip_thought_signature_validator"
    );

    // With `off`, the strict fake refuses: the proof that it checks.
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &[("THOUGHT_SIGNATURES", "off")]).await;
    let call = first_step(&proxy, KEY, false).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, &second_step(&call)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer
            .error_message()
            .contains("missing a thought_signature")
    );
    assert_eq!(answer.json()["error"]["code"], "INVALID_ARGUMENT");
}

#[tokio::test]
async fn gemini3_previews_outside_global_are_vertexs_404_not_retried() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let aliases = r#"{"flash":"google/gemini-2.5-flash","pro-preview":{"model":"google/gemini-3.1-pro-preview","location":"us-central1"}}"#;
    let proxy = in_process_with(&vertex, &[("MODEL_ALIASES_JSON", aliases)]).await;
    let body = r#"{"model":"pro-preview","messages":[{"role":"user","content":"hi"}]}"#;
    let answer = post(&proxy, "/v1/chat/completions", KEY, body).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(
        answer
            .error_message()
            .contains("was not found or your project does not have access")
    );
    assert_eq!(vertex.count(), 1);
}
