//! Alias forms beyond a model id: per-alias request defaults, filled in only where the
//! client's body lacks the field, by splice, on both kinds of route.

use crate::support::*;
use http::{Method, StatusCode};

const ALIASES: &str = r#"{
    "flash": "google/gemini-2.5-flash",
    "flash-fast": {"model": "google/gemini-2.5-flash", "defaults": {"reasoning_effort": "none", "extra_body": {"google": {"thinking_config": {"thinking_budget": 0}}}}},
    "claude-cold": {"model": "anthropic/claude-sonnet-4-5@20250929", "location": "us-east5", "defaults": {"temperature": 0}}
}"#;

#[tokio::test]
async fn defaults_are_spliced_in_only_where_the_client_left_them_out() {
    let vertex = FakeVertex::start().await;
    let proxy = in_process_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    let without = r#"{"model":"flash-fast","messages":[{"role":"user","content":"hi"}]}"#;
    post(&proxy, "/v1/chat/completions", KEY, without)
        .await
        .expect(StatusCode::OK);
    let with = r#"{"model":"flash-fast", "reasoning_effort" : "high","messages":[]}"#;
    post(&proxy, "/v1/chat/completions", KEY, with)
        .await
        .expect(StatusCode::OK);
    let received = vertex.received();
    assert_eq!(
        String::from_utf8_lossy(&received[0].body),
        r#"{"extra_body":{"google":{"thinking_config":{"thinking_budget":0}}},"reasoning_effort":"none","model":"google/gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#
    );
    // The client's own value wins, and its bytes stay as it sent them.
    assert_eq!(
        String::from_utf8_lossy(&received[1].body),
        r#"{"extra_body":{"google":{"thinking_config":{"thinking_budget":0}}},"model":"google/gemini-2.5-flash", "reasoning_effort" : "high","messages":[]}"#
    );
    // An alias without defaults is untouched.
    post(&proxy, "/v1/chat/completions", KEY, CHAT)
        .await
        .expect(StatusCode::OK);
    let plain = vertex.received().pop().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&plain.body),
        CHAT.replacen(r#""flash""#, r#""google/gemini-2.5-flash""#, 1)
    );
}

#[tokio::test]
async fn claudes_route_takes_defaults_beside_its_own_splices() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    let body =
        r#"{"model":"claude-cold","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    let answer = request(
        Method::POST,
        &proxy.url("/v1/messages"),
        &[("x-api-key", KEY)],
        body,
    )
    .await;
    answer.expect(StatusCode::OK);
    let received = vertex.wait_for(1).await.remove(0);
    assert_eq!(
        String::from_utf8_lossy(&received.body),
        r#"{"temperature":0,"anthropic_version":"vertex-2023-10-16","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#
    );
}

#[tokio::test]
async fn models_show_an_aliass_defaults() {
    let vertex = FakeVertex::start().await;
    let proxy = in_process_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    let answer = get(&proxy, "/v1/models/flash-fast", KEY).await;
    answer.expect(StatusCode::OK);
    assert_eq!(answer.json()["defaults"]["reasoning_effort"], "none");
    let docs = request(
        Method::GET,
        &proxy.url("/docs"),
        &[("accept", "text/plain")],
        bytes::Bytes::new(),
    )
    .await;
    let docs = String::from_utf8_lossy(&docs.body);
    assert!(docs.contains(r#""reasoning_effort":"none""#), "{docs}");
}
