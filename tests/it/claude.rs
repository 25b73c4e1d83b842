//! Claude on Vertex through `/v1/messages`, against the stand-in's strict Claude: the URL, the
//! body bytes and the headers Vertex gets, the `vertex_event` filter, usage, errors in
//! Anthropic's shape, and retries.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

const ALIASES: &str = r#"{"flash":"google/gemini-2.5-flash","sonnet":{"model":"anthropic/claude-sonnet-4-5@20250929","location":"us-east5"}}"#;
const MESSAGES: &str =
    r#"{"model":"sonnet","max_tokens":64,"messages":[{"role":"user","content":"hello claude"}]}"#;
const RAW_PREDICT: &str = "/v1/projects/test-proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict";

fn settings<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("MODEL_ALIASES_JSON", ALIASES)];
    all.extend_from_slice(extra);
    all
}

async fn messages(proxy: &impl Served, headers: &[(&str, &str)], body: &str) -> Answer {
    request(
        Method::POST,
        &proxy.url("/v1/messages"),
        headers,
        body.to_owned(),
    )
    .await
}

async fn count_tokens(proxy: &impl Served, body: &str) -> Answer {
    let url = proxy.url("/v1/messages/count_tokens");
    request(Method::POST, &url, &[("x-api-key", KEY)], body.to_owned()).await
}

/// Claude's error shape, checked, with its type and message.
fn anthropic_error(answer: &Answer) -> (String, String) {
    let json = answer.json();
    assert_eq!(json["type"], "error", "{json}");
    let kind = json["error"]["type"].as_str().expect("a type").to_owned();
    let message = json["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned();
    (kind, message)
}

#[tokio::test]
async fn a_message_goes_to_raw_predict_with_the_model_in_the_url_and_the_version_in_the_body() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings(&[])).await;
    // pi and Claude Code send x-api-key; the Anthropic SDK was seen sending Bearer.
    let bearer = format!("Bearer {KEY}");
    for auth in [("x-api-key", KEY), ("authorization", bearer.as_str())] {
        let headers = [auth, ("anthropic-version", "2023-06-01")];
        let answer = messages(&proxy, &headers, MESSAGES).await;
        answer.expect(StatusCode::OK);
        assert_eq!(
            answer.json()["content"][0]["text"],
            "You said: hello claude"
        );
    }
    for received in vertex.received() {
        assert_eq!(received.path, RAW_PREDICT);
        assert_eq!(
            String::from_utf8_lossy(&received.body),
            r#"{"anthropic_version":"vertex-2023-10-16","max_tokens":64,"messages":[{"role":"user","content":"hello claude"}]}"#
        );
        assert_eq!(
            received.headers["authorization"],
            format!("Bearer {GOOGLE_TOKEN}")
        );
        for gone in ["x-api-key", "anthropic-version", "anthropic-beta"] {
            assert!(
                received.headers.get(gone).is_none(),
                "{gone} reached Vertex"
            );
        }
    }
}

/// `null` is a value given: the version takes its place rather than coming in beside it (a
/// second member, of which Vertex reads the last). A member given twice is refused here.
#[tokio::test]
async fn a_null_version_is_replaced_and_a_member_given_twice_is_refused() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings(&[])).await;
    let headers = [("x-api-key", KEY)];
    let body = r#"{"anthropic_version":null,"model":"sonnet","max_tokens":64,"messages":[{"role":"user","content":"hello claude"}]}"#;
    messages(&proxy, &headers, body)
        .await
        .expect(StatusCode::OK);
    let received = vertex.received().pop().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&received.body),
        r#"{"anthropic_version":"vertex-2023-10-16","max_tokens":64,"messages":[{"role":"user","content":"hello claude"}]}"#
    );
    let sent = vertex.received().len();
    for twice in [
        r#"{"stream":false,"model":"sonnet","max_tokens":64,"stream":true,"messages":[]}"#,
        r#"{"anthropic_version":"x","model":"sonnet","anthropic_version":null,"messages":[]}"#,
    ] {
        let answer = messages(&proxy, &headers, twice).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{twice}");
        let (kind, message) = anthropic_error(&answer);
        assert_eq!(kind, "invalid_request_error");
        assert!(message.contains("duplicate field"), "{message}");
    }
    assert_eq!(vertex.received().len(), sent);
}

#[tokio::test]
async fn a_stream_goes_to_stream_raw_predict_without_vertex_events_and_its_usage_is_priced() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let prices = r#"{"sonnet":{"input":3,"output":15,"cache_read":0.3,"cache_write":3.75}}"#;
    let (_metadata, proxy) = spawn_with(&vertex, &settings(&[("PRICES_JSON", prices)])).await;
    let body = MESSAGES.replacen(r#""max_tokens":64"#, r#""max_tokens":64,"stream":true"#, 1);
    let answer = messages(&proxy, &[("x-api-key", KEY)], &body).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    let received = vertex.wait_for(1).await.remove(0);
    assert_eq!(
        received.path,
        RAW_PREDICT.replace(":rawPredict", ":streamRawPredict")
    );
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(!text.contains("vertex_event"), "{text}");
    let names: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("event: "))
        .map(|e| e.split('\n').next().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"message_delta") && names.contains(&"content_block_delta"));
    let words: String = text
        .split("\n\n")
        .filter_map(|e| e.split_once("data: ").map(|(_, d)| d))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|d| d["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(words, "You said: hello claude");
    let line = proxy.request_line("/v1/messages", 200).await;
    // input and cache counts from message_start, output from message_delta.
    assert_eq!(
        line["usage"],
        json!({"input_tokens": 2, "output_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2})
    );
    let cost = line["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (2.0 * 3.0 + 4.0 * 15.0 + 2.0 * 0.3) / 1e6).abs() < 1e-12,
        "{line}"
    );
    assert_eq!(line["model"], "anthropic/claude-sonnet-4-5@20250929");
    assert_eq!(line["location"], "us-east5");
}

#[tokio::test]
async fn vertex_events_go_whatever_the_line_endings_and_nothing_else_is_lost() {
    // SSE ends a line at CR, LF or CRLF; the last line of a stream may have none.
    let events = [
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
        "event: vertex_event\ndata: {\"type\":\"vertex_event\",\"usage\":{}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}",
    ];
    let vertex = FakeVertex::start().await;
    let proxy = in_process_with(&vertex, &settings(&[])).await;
    let body = MESSAGES.replacen(r#""max_tokens":64"#, r#""max_tokens":64,"stream":true"#, 1);
    for ending in ["\r", "\n", "\r\n"] {
        let stream: String = events.concat().replace('\n', ending);
        // Cut where it hurts: a CR at a chunk's end whose LF starts the next, an event name
        // in two halves.
        let chunks: Vec<bytes::Bytes> = stream
            .as_bytes()
            .chunks(7)
            .map(bytes::Bytes::copy_from_slice)
            .collect();
        vertex.set_behaviour(move |_| Reply::Paced {
            content_type: "text/event-stream",
            chunks: chunks.clone(),
            every: std::time::Duration::ZERO,
            end: End::Complete,
        });
        let answer = messages(&proxy, &[("x-api-key", KEY)], &body).await;
        answer.expect(StatusCode::OK);
        let expected = [events[0], events[2], events[3]]
            .concat()
            .replace('\n', ending);
        assert_eq!(
            String::from_utf8_lossy(&answer.body),
            expected,
            "line ending {ending:?}"
        );
    }
}

#[tokio::test]
async fn count_tokens_keeps_the_model_as_vertex_names_it() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings(&[])).await;
    let body = r#"{"model":"sonnet","messages":[{"role":"user","content":"one two three"}]}"#;
    let answer = count_tokens(&proxy, body).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({"input_tokens": 3}));
    let received = vertex.wait_for(1).await.remove(0);
    assert_eq!(
        received.path,
        "/v1/projects/test-proj/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
    );
    assert_eq!(
        String::from_utf8_lossy(&received.body),
        r#"{"anthropic_version":"vertex-2023-10-16","model":"claude-sonnet-4-5@20250929","messages":[{"role":"user","content":"one two three"}]}"#
    );
}

#[tokio::test]
async fn only_the_betas_vertex_knows_go_on_and_each_dropped_one_is_logged_once() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let (_metadata, proxy) = spawn_with(&vertex, &settings(&[])).await;
    // What pi sends with its eager tool streaming off.
    let betas = "fine-grained-tool-streaming-2025-05-14,interleaved-thinking-2025-05-14";
    for _ in 0..2 {
        let headers = [("x-api-key", KEY), ("anthropic-beta", betas)];
        let answer = messages(&proxy, &headers, MESSAGES).await;
        answer.expect(StatusCode::OK);
    }
    for received in vertex.received() {
        assert_eq!(
            received.headers["anthropic-beta"],
            "interleaved-thinking-2025-05-14"
        );
    }
    proxy
        .wait_for_line("two request lines", |l| {
            l["httpRequest"]["requestUrl"] == "/v1/messages"
        })
        .await;
    let warnings = proxy
        .lines()
        .iter()
        .filter(|l| l.contains("fine-grained-tool-streaming-2025-05-14") && l.contains("dropped"))
        .count();
    assert_eq!(warnings, 1, "{:?}", proxy.lines());
}

#[tokio::test]
async fn a_beta_vertex_refuses_is_its_own_400_in_claudes_shape() {
    // Allowed here, so it reaches the strict fake, which refuses it as Vertex does.
    let vertex = FakeVertex::start_with(stand_in).await;
    let extra = [("ANTHROPIC_BETAS", "effort-2025-11-24")];
    let proxy = in_process_with(&vertex, &settings(&extra)).await;
    let headers = [("x-api-key", KEY), ("anthropic-beta", "effort-2025-11-24")];
    let answer = messages(&proxy, &headers, MESSAGES).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let (kind, message) = anthropic_error(&answer);
    assert_eq!(kind, "invalid_request_error");
    assert!(
        message.contains("Unexpected value(s) `effort-2025-11-24`"),
        "{message}"
    );
}

#[tokio::test]
async fn the_proxys_own_errors_on_this_route_are_in_claudes_shape() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &settings(&[])).await;
    let bad_key = messages(&proxy, &[("x-api-key", "sk_wrong_0000000000000")], MESSAGES).await;
    assert_eq!(bad_key.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anthropic_error(&bad_key).0, "authentication_error");
    let unknown = messages(&proxy, &[("x-api-key", KEY)], r#"{"model":"opus"}"#).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(anthropic_error(&unknown).0, "invalid_request_error");
    let forbidden = messages(&proxy, &[("x-api-key", KEY_FLASH_ONLY)], MESSAGES).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(anthropic_error(&forbidden).0, "permission_error");
    // A Gemini alias here, and a Claude alias on the OpenAI endpoint: each is sent to the
    // right endpoint, in its endpoint's shape.
    let gemini = messages(
        &proxy,
        &[("x-api-key", KEY)],
        r#"{"model":"flash","messages":[]}"#,
    )
    .await;
    assert_eq!(gemini.status, StatusCode::BAD_REQUEST);
    let (kind, message) = anthropic_error(&gemini);
    assert_eq!(kind, "invalid_request_error");
    assert!(
        message.contains("send it to /v1/chat/completions"),
        "{message}"
    );
    let claude = post(&proxy, "/v1/chat/completions", KEY, MESSAGES).await;
    assert_eq!(claude.status, StatusCode::BAD_REQUEST);
    assert!(claude.error_message().contains("send it to /v1/messages"));
    // Routing's own errors too: the path says whose shape.
    let url = proxy.url("/v1/messages");
    let get = request(Method::GET, &url, &[("x-api-key", KEY)], String::new()).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(anthropic_error(&get).0, "invalid_request_error");
    let url = proxy.url("/v1/messages/nothing");
    let missing = request(
        Method::POST,
        &url,
        &[("x-api-key", KEY)],
        MESSAGES.to_owned(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(anthropic_error(&missing).0, "not_found_error");
    assert_eq!(vertex.count(), 0);
}

#[tokio::test]
async fn vertexs_errors_keep_their_status_googles_converted_claudes_unchanged() {
    let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_vrtx_1"}"#;
    let vertex = FakeVertex::start_with(move |r: &Recorded| {
        if r.json()["max_tokens"] == 1 {
            google_error(429, "RESOURCE_EXHAUSTED", Some("3"))
        } else {
            let mut response = response(
                StatusCode::from_u16(529).unwrap(),
                "application/json",
                full(overloaded),
            );
            response
                .headers_mut()
                .insert("x-request-id", "req_vrtx_1".parse().unwrap());
            Reply::Respond(response)
        }
    })
    .await;
    let proxy = in_process_with(&vertex, &settings(&[("MAX_ATTEMPTS", "1")])).await;
    let quota = MESSAGES.replacen(r#""max_tokens":64"#, r#""max_tokens":1"#, 1);
    let answer = messages(&proxy, &[("x-api-key", KEY)], &quota).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "3");
    let (kind, message) = anthropic_error(&answer);
    assert_eq!(kind, "rate_limit_error");
    assert!(message.starts_with("RESOURCE_EXHAUSTED"), "{message}");
    let answer = messages(&proxy, &[("x-api-key", KEY)], MESSAGES).await;
    assert_eq!(answer.status.as_u16(), 529);
    assert_eq!(String::from_utf8_lossy(&answer.body), overloaded);
}

#[tokio::test]
async fn an_overloaded_claude_is_retried_before_the_first_event() {
    let count = AtomicUsize::new(0);
    let vertex = FakeVertex::start_with(move |r: &Recorded| match count.fetch_add(1, Ordering::SeqCst) {
        0 => {
            let overloaded = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
            Reply::Respond(response(
                StatusCode::from_u16(529).unwrap(),
                "application/json",
                full(overloaded.to_string()),
            ))
        }
        1 => {
            // 200, then Claude's error as the stream's first event.
            let event = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
            Reply::Respond(response(StatusCode::OK, "text/event-stream", full(event)))
        }
        _ => stand_in(r),
    })
    .await;
    let proxy = in_process_with(&vertex, &settings(&[("RETRY_BUDGET_SECS", "5")])).await;
    let body = MESSAGES.replacen(r#""max_tokens":64"#, r#""max_tokens":64,"stream":true"#, 1);
    let answer = messages(&proxy, &[("x-api-key", KEY)], &body).await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&answer.body);
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(!text.contains("overloaded_error"));
    assert_eq!(vertex.count(), 3);
}

#[tokio::test]
async fn models_lists_the_claude_alias() {
    let vertex = FakeVertex::start().await;
    let proxy = in_process_with(&vertex, &settings(&[])).await;
    let answer = get(&proxy, "/v1/models/sonnet", KEY).await;
    assert_eq!(answer.status, StatusCode::OK);
    let model = answer.json();
    assert_eq!(model["vertex_id"], "anthropic/claude-sonnet-4-5@20250929");
    assert_eq!(model["owned_by"], "anthropic");
    assert_eq!(model["location"], "us-east5");
}

#[tokio::test]
async fn a_location_without_token_counting_is_named_in_the_error() {
    let vertex = FakeVertex::start_with(|r: &Recorded| {
        if r.path.ends_with("/count-tokens:rawPredict") {
            let message =
                r#"{"type":"error","error":{"type":"not_found_error","message":"Not found."}}"#;
            Reply::Respond(response(
                StatusCode::NOT_FOUND,
                "application/json",
                full(message),
            ))
        } else {
            stand_in(r)
        }
    })
    .await;
    let proxy = in_process_with(&vertex, &settings(&[])).await;
    let body = r#"{"model":"sonnet","messages":[{"role":"user","content":"x"}]}"#;
    let answer = count_tokens(&proxy, body).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let (kind, message) = anthropic_error(&answer);
    assert_eq!(kind, "not_found_error");
    assert!(
        message.starts_with("Vertex does not serve token counting for this model in us-east5"),
        "{message}"
    );
}
