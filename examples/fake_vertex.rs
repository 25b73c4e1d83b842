//! The tests' fake Vertex and fake metadata server (`tests/support`) as a program, for the
//! client suite (`tests/clients`), which drives stock SDKs from Python and Node.
//!
//! It answers as the demo's stand-in does (echo, a call to the first tool, SSE with usage,
//! embeddings from a hash), records what it received (`GET /_recorded`, cleared by
//! `POST /_reset`), and fails on purpose for two models: `google/always-429` always answers
//! 429, and `google/flaky-503` answers 503 to its first call after each reset.
//!
//! Prints one JSON line, `{"vertex": "127.0.0.1:P", "metadata": "127.0.0.1:Q", "token": …,
//! "project": …}`, then serves until its standard input closes.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use serde_json::{Value, json};
use support::{FakeMetadata, FakeVertex, GOOGLE_TOKEN, PROJECT, Recorded, Reply};

/// What the client suite reads back: every request but the control ones, and the calls per
/// model since the last reset.
#[derive(Default)]
struct Log {
    requests: Vec<Value>,
    calls: HashMap<String, usize>,
}

fn google_error(status: StatusCode, message: &str, reason: &str) -> Reply {
    let payload = json!({"error": {"code": status.as_u16(), "message": message, "status": reason}});
    Reply::Json(status, payload.to_string())
}

fn reply(log: &Mutex<Log>, request: &Recorded) -> Reply {
    let mut log = log.lock().unwrap();
    match request.path.as_str() {
        "/_recorded" => {
            return Reply::Json(
                StatusCode::OK,
                Value::from(log.requests.clone()).to_string(),
            );
        }
        "/_reset" => {
            *log = Log::default();
            return Reply::Json(StatusCode::OK, "{}".into());
        }
        _ => {}
    }
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let headers: serde_json::Map<String, Value> = request
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), Value::from(value))
        })
        .collect();
    log.requests
        .push(json!({"path": request.path, "headers": headers, "body": body}));
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let calls = log.calls.entry(model.clone()).or_default();
    *calls += 1;
    let first_call = *calls == 1;
    drop(log);

    let authorized = request.headers.get("authorization").map(|v| v.as_bytes())
        == Some(format!("Bearer {GOOGLE_TOKEN}").as_bytes());
    if !authorized {
        let message = "Request had invalid authentication credentials.";
        return google_error(StatusCode::UNAUTHORIZED, message, "UNAUTHENTICATED");
    }
    if !body.is_object() {
        let message = "Invalid JSON payload received.";
        return google_error(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT");
    }
    match model.as_str() {
        "google/always-429" => google_error(
            StatusCode::TOO_MANY_REQUESTS,
            "Resource exhausted. Please try again later.",
            "RESOURCE_EXHAUSTED",
        ),
        "google/flaky-503" if first_call => google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is currently unavailable.",
            "UNAVAILABLE",
        ),
        _ => Reply::Respond(vertex_proxy::demo::openai_answer(&request.path, &body)),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    vertex_proxy::install_crypto_provider();
    let log = Arc::new(Mutex::new(Log::default()));
    let vertex = FakeVertex::start_with(move |request: &Recorded| reply(&log, request)).await;
    let metadata = FakeMetadata::start().await;
    println!(
        "{}",
        json!({"vertex": vertex.addr.to_string(), "metadata": metadata.host(), "token": GOOGLE_TOKEN, "project": PROJECT})
    );
    // Served until whoever started it goes away.
    let _ =
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await;
}
