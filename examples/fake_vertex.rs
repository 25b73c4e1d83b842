//! The tests' fake Vertex and fake metadata server (`tests/support`) as a program, for the
//! client suite (`tests/clients`), which drives stock SDKs from Python and Node.
//!
//! It answers as the demo's stand-in does (echo, a call to the first tool, SSE with usage,
//! embeddings from a hash), except that a request declaring Codex's shell tool, `exec_command`,
//! gets a call to that tool alone with the last user message as the command (or, for a message
//! that is a patch, to `apply_patch`); it records what it received (`GET /_recorded`, cleared by
//! `POST /_reset`), and fails on purpose for two models: `google/always-429` always answers
//! 429 with `Retry-After: 1`, and `google/flaky-503` answers 503 to its first call after each
//! reset, and `google/stream-429-once` answers its first streamed call after each reset with a
//! 200 whose first event is a 429, as Gemini does; errors come in Google's array-wrapped
//! envelope. Gemini 3 models sign their tool
//! calls and refuse history that lost the signature, as Vertex does. Under `/service/v1/` it
//! is a private Cloud Run service, which lets through only an ID token for its own origin.
//!
//! Prints one JSON line, `{"vertex": "127.0.0.1:P", "metadata": "127.0.0.1:Q", "token": …,
//! "project": …}`, then serves until its standard input closes.

// The tests' support, whole: this program uses a few of its fakes, and the test binary
// (`tests/it`), which has no such allowance, uses and so checks all of it.
#[path = "../tests/support/mod.rs"]
#[allow(dead_code, reason = "a program built from some of the fakes")]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use serde_json::{Value, json};
use support::{
    FakeMetadata, FakeVertex, GOOGLE_TOKEN, PROJECT, Recorded, Reply, cloud_run, error_in_stream,
    google_error,
};

/// What the client suite reads back: every request but the control ones, and the calls per
/// model since the last reset.
#[derive(Default)]
struct Log {
    requests: Vec<Value>,
    calls: HashMap<String, usize>,
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

    // A private Cloud Run service at /service/v1, behind the front end's check of its ID
    // token (audience: this origin), answering as Vertex's OpenAI endpoint does.
    if let Some(rest) = request.path.strip_prefix("/service/v1/") {
        let host = request.headers.get("host").and_then(|h| h.to_str().ok());
        let audience = format!("http://{}/", host.unwrap_or_default());
        let path = format!("/endpoints/openapi/{rest}");
        let service =
            move |_: &Recorded| Reply::Respond(vertex_proxy::demo::openai_answer(&path, &body));
        return cloud_run(&audience, service)(request);
    }
    let authorized = request.headers.get("authorization").map(|v| v.as_bytes())
        == Some(format!("Bearer {GOOGLE_TOKEN}").as_bytes());
    if !authorized {
        return google_error(401, "UNAUTHENTICATED", None);
    }
    if !body.is_object() {
        return google_error(400, "INVALID_ARGUMENT", None);
    }
    match model.as_str() {
        "google/always-429" => google_error(429, "RESOURCE_EXHAUSTED", Some("1")),
        "google/flaky-503" if first_call => google_error(503, "UNAVAILABLE", None),
        "google/stream-429-once" if first_call => error_in_stream(429, "RESOURCE_EXHAUSTED"),
        _ => Reply::Respond(vertex_proxy::demo::vertex_answer(
            &request.path,
            &request.headers,
            &codex_tools(body),
        )),
    }
}

/// Codex's tools, as the stand-in model uses them: a request that declares its shell tool,
/// `exec_command`, gets a call to that tool alone, with the last user message as its `cmd`; or,
/// when that message is a patch (`*** Begin Patch`) and `apply_patch` (Codex's freeform tool, a
/// function of one string `input` here) is declared, a call to `apply_patch` with the patch. The
/// first tool with every property filled, or every tool at once when parallel calls are allowed,
/// is not a call Codex can run. A tool's result still comes back as "The tool said: …".
fn codex_tools(mut body: Value) -> Value {
    let tools = body["tools"].as_array().cloned().unwrap_or_default();
    let named = |name: &str| {
        tools
            .iter()
            .find(|t| t["function"]["name"] == name)
            .cloned()
    };
    let Some(mut shell) = named("exec_command") else {
        return body;
    };
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let said = messages.iter().rev().find(|m| m["role"] == "user");
    let patch = said.is_some_and(|m| {
        m["content"]
            .as_str()
            .is_some_and(|text| text.starts_with("*** Begin Patch"))
    });
    let tool = match named("apply_patch") {
        Some(apply_patch) if patch => apply_patch,
        _ => {
            shell["function"]["parameters"] = json!({
                "type": "object",
                "properties": {"cmd": {"type": "string"}},
                "required": ["cmd"],
            });
            shell
        }
    };
    body["tools"] = json!([tool]);
    body["parallel_tool_calls"] = json!(false);
    body
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
