//! The operator's surface: keys from a file, command-line tools, pages and usage logs.

use std::collections::HashMap;

use crate::support::*;
use http::StatusCode;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vertex-proxy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const OLD_KEY: &str = "sk_test_old_key_000000000";
const NEW_KEY: &str = "sk_test_new_key_000000000";

#[tokio::test]
async fn keys_file_is_reloaded_without_a_restart() {
    let dir = temp_dir("keys-file");
    let file = dir.join("keys.json");
    std::fs::write(&file, format!(r#"[{{"id":"old","key":"{OLD_KEY}"}}]"#)).unwrap();
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    env.remove("API_KEYS_JSON");
    env.insert("API_KEYS_FILE".into(), file.to_string_lossy().into());
    env.insert("KEYS_RELOAD_SECS".into(), "1".into());
    let proxy = spawn(&env).await;
    assert_eq!(chat_status(&proxy, OLD_KEY).await, StatusCode::OK);
    assert_eq!(chat_status(&proxy, NEW_KEY).await, StatusCode::UNAUTHORIZED);

    // Rotate: the new key in, the old one out. Written whole, then renamed, as a secret mount does.
    let staged = dir.join("keys.json.new");
    std::fs::write(
        &staged,
        format!(r#"[{{"id":"new","key_sha256":"{}"}}]"#, sha256_hex(NEW_KEY)),
    )
    .unwrap();
    std::fs::rename(&staged, &file).unwrap();
    proxy
        .wait_for_line("the reload", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("keys reloaded"))
        })
        .await;
    assert_eq!(chat_status(&proxy, NEW_KEY).await, StatusCode::OK);
    assert_eq!(chat_status(&proxy, OLD_KEY).await, StatusCode::UNAUTHORIZED);

    // A broken file changes nothing, and the log says what is wrong without quoting keys.
    std::fs::write(&staged, format!(r#"[{{"id":"broken","key":"{OLD_KEY}"#)).unwrap();
    std::fs::rename(&staged, &file).unwrap();
    let error = proxy
        .wait_for_line("the reload error", |l| {
            l["severity"] == "ERROR"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("API_KEYS_FILE"))
        })
        .await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("not valid JSON") && message.contains("previous keys stay"),
        "{message}"
    );
    assert!(!message.contains(OLD_KEY));
    assert_eq!(chat_status(&proxy, NEW_KEY).await, StatusCode::OK);
    // An empty file, likewise.
    std::fs::write(&staged, "").unwrap();
    std::fs::rename(&staged, &file).unwrap();
    proxy
        .wait_for_line("the empty-file error", |l| {
            l["severity"] == "ERROR"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("line 1 column 0"))
        })
        .await;
    assert_eq!(chat_status(&proxy, NEW_KEY).await, StatusCode::OK);
    let log = proxy.lines().join("\n");
    for secret in [OLD_KEY, NEW_KEY, &sha256_hex(NEW_KEY)] {
        assert!(!log.contains(secret), "a key or hash was logged");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn keys_file_and_keys_json_together_are_refused() {
    let dir = temp_dir("keys-both");
    let file = dir.join("keys.json");
    std::fs::write(&file, format!(r#"[{{"id":"a","key":"{OLD_KEY}"}}]"#)).unwrap();
    let env: HashMap<String, String> = HashMap::from([
        ("API_KEYS_JSON".into(), keys_json()),
        ("API_KEYS_FILE".into(), file.to_string_lossy().into()),
        ("GOOGLE_CLOUD_PROJECT".into(), PROJECT.into()),
    ]);
    let (code, stderr) = try_spawn(&[], &env).await.err().expect("refused");
    assert_eq!(code, 1);
    assert!(
        stderr.contains("API_KEYS_FILE: and API_KEYS_JSON are both set"),
        "{stderr}"
    );
    let missing = HashMap::from([
        (
            "API_KEYS_FILE".to_owned(),
            dir.join("nope.json").to_string_lossy().into_owned(),
        ),
        ("GOOGLE_CLOUD_PROJECT".to_owned(), PROJECT.to_owned()),
    ]);
    let (_, stderr) = try_spawn(&[], &missing).await.err().expect("refused");
    assert!(stderr.contains("API_KEYS_FILE: cannot read"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vertex-proxy"))
        .args(args)
        .env_clear()
        .env("HOME", std::env::temp_dir())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn keygen_prints_a_key_and_entries_that_hash_key_agrees_with() {
    let (code, out, _) = run(&["keygen", "--id", "raj-laptop"], &[], "");
    assert_eq!(code, 0);
    let key = out.lines().next().unwrap();
    assert!(key.starts_with("sk_live_") && key.len() >= 8 + 43, "{key}");
    let entries: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect();
    assert_eq!(entries.len(), 2, "{out}");
    assert_eq!(
        entries[0],
        serde_json::json!({"id": "raj-laptop", "key": key})
    );
    let (code, hash, _) = run(&["hash-key"], &[], &format!("{key}\n"));
    assert_eq!(code, 0);
    assert_eq!(
        entries[1],
        serde_json::json!({"id": "raj-laptop", "key_sha256": hash.trim()})
    );
    assert_eq!(hash.trim(), sha256_hex(key));
    // A second key is a different key.
    let (_, again, _) = run(&["keygen"], &[], "");
    assert_ne!(again.lines().next().unwrap(), key);
    let (code, _, err) = run(&["hash-key"], &[], "");
    assert_eq!(code, 1);
    assert!(err.contains("no key on stdin"), "{err}");
}

#[test]
fn check_validates_like_startup_and_prints_no_secret() {
    let keys = keys_json();
    let env = [
        ("API_KEYS_JSON", keys.as_str()),
        ("GOOGLE_CLOUD_PROJECT", PROJECT),
        ("VERTEX_LOCATION", "us-central1"),
    ];
    let (code, out, err) = run(&["check"], &env, "");
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["project"], PROJECT);
    assert_eq!(summary["aliases"]["flash"]["location"], "us-central1");
    assert_eq!(summary["keys_enabled"], 3);
    for secret in [KEY, KEY_HASHED, &sha256_hex(KEY_HASHED)] {
        assert!(!out.contains(secret) && !err.contains(secret));
    }
    let (code, _, err) = run(
        &["check"],
        &[
            ("API_KEYS_JSON", "[]"),
            ("GOOGLE_CLOUD_PROJECT", PROJECT),
            ("PORT", "x"),
            ("VERTEX_BASE_URL", "https://user:hunter2@vertex.example.com"),
        ],
        "",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("API_KEYS_JSON: has no enabled key")
            && err.contains("PORT: ")
            && err.contains("VERTEX_BASE_URL: may not hold credentials"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn help_version_and_unknown_arguments() {
    let (code, out, _) = run(&["--version"], &[], "");
    assert_eq!(
        (code, out.trim()),
        (0, concat!("vertex-proxy ", env!("CARGO_PKG_VERSION")))
    );
    let (code, out, _) = run(&["--help"], &[], "");
    assert_eq!(code, 0);
    for word in ["demo", "check", "keygen", "hash-key"] {
        assert!(out.contains(word), "{word} missing from --help");
    }
    let (code, _, err) = run(&["--frobnicate"], &[], "");
    assert_eq!(code, 2);
    assert!(err.contains("unknown arguments: --frobnicate"), "{err}");
}

#[tokio::test]
async fn the_request_log_carries_trace_timing_usage_and_cost() {
    let usage = r#"{"prompt_tokens":1000,"completion_tokens":2000,"total_tokens":3000}"#;
    let json_body = format!(
        r#"{{"choices":[{{"message":{{"content":"{}"}}}}],"usage":{usage}}}"#,
        "y".repeat(40_000)
    );
    let sse_body = format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"hi\"}}}}],\"usage\":null}}\n\ndata: {{\"choices\":[],\"usage\":{usage}}}\n\ndata: [DONE]\n\n"
    );
    let vertex = FakeVertex::start_with(move |r: &Recorded| {
        if r.json()["stream"] == true {
            let (mut tx, body) = http_body_util::channel::Channel::new(4);
            for chunk in sse_body.split_inclusive("\n\n") {
                let frame = hyper::body::Frame::data(bytes::Bytes::from(chunk.to_owned()));
                tx.try_send(frame).unwrap();
            }
            Reply::Channel(StatusCode::OK, "text/event-stream", body)
        } else {
            Reply::Json(StatusCode::OK, json_body.clone())
        }
    })
    .await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    env.insert(
        "PRICES_JSON".into(),
        r#"{"flash":{"input":0.30,"output":2.50},"google/gemini-3.1-pro-preview":{"input":2,"output":12}}"#.into(),
    );
    let proxy = spawn(&env).await;

    let answer = request(
        http::Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[
            ("x-api-key", KEY),
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/1;o=1",
            ),
        ],
        CHAT,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert_eq!(
        line["logging.googleapis.com/trace"],
        "projects/test-proj/traces/105445aa7843bc8bf206b12000100000"
    );
    assert_eq!(line["logging.googleapis.com/spanId"], "0000000000000001");
    assert_eq!(
        line["usage"],
        serde_json::json!({"prompt_tokens":1000,"completion_tokens":2000,"total_tokens":3000})
    );
    let cost = line["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (1000.0 * 0.30 + 2000.0 * 2.50) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert_eq!(line["response_bytes"], answer.body.len());
    assert!(line["ttfb_ms"].as_f64().unwrap() <= line["duration_ms"].as_f64().unwrap());

    // Streamed, priced by the Vertex model id, traced by traceparent.
    let answer = request(
        http::Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[
            ("x-api-key", KEY),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
        r#"{"model":"pro-preview","stream":true}"#,
    )
    .await;
    assert!(answer.body.ends_with(b"data: [DONE]\n\n"));
    let line = proxy
        .wait_for_line("the streamed request's line", |l| {
            l["alias"] == "pro-preview"
        })
        .await;
    assert_eq!(
        line["logging.googleapis.com/trace"],
        "projects/test-proj/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(line["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
    assert_eq!(line["usage"]["total_tokens"], 3000);
    let cost = line["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (1000.0 * 2.0 + 2000.0 * 12.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );

    // No usage in the body: no usage field, no cost.
    vertex.set_behaviour(|_| Reply::Json(StatusCode::OK, r#"{"choices":[]}"#.into()));
    post(&proxy, "/v1/embeddings", KEY, CHAT).await;
    let line = proxy.request_line("/v1/embeddings", 200).await;
    assert!(
        line.get("usage").is_none() && line.get("cost_usd").is_none(),
        "{line}"
    );
    assert!(line.get("logging.googleapis.com/trace").is_none());
}

#[tokio::test]
async fn an_invalid_price_table_is_a_startup_error() {
    let env: HashMap<String, String> = HashMap::from([
        ("API_KEYS_JSON".into(), keys_json()),
        ("GOOGLE_CLOUD_PROJECT".into(), PROJECT.into()),
        (
            "PRICES_JSON".into(),
            r#"{"flash": {"input": "cheap"}}"#.into(),
        ),
    ]);
    let (code, stderr) = try_spawn(&[], &env).await.err().expect("refused");
    assert_eq!(code, 1);
    assert!(
        stderr.contains("PRICES_JSON: \"flash\" must be"),
        "{stderr}"
    );
}

/// The pi `models.json` block as `/docs` shows it in plain text.
fn pi_block(docs: &str) -> serde_json::Value {
    let section = &docs[docs.find("pi coding agent\n").expect("a pi section")..];
    let lines: Vec<&str> = section.lines().skip_while(|l| *l != "    {").collect();
    let end = lines
        .iter()
        .position(|l| *l == "    }")
        .expect("the block ends");
    let json: String = lines[..=end]
        .iter()
        .map(|l| l.trim_start_matches("    "))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).expect("the pi block is valid JSON")
}

#[tokio::test]
async fn docs_and_splash_pages_describe_this_deployment_and_hold_no_secret() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    env.insert(
        "MODEL_ALIASES_JSON".into(),
        r#"{"flash":{"model":"google/gemini-2.5-flash","locations":["europe-west4","europe-west1"]},"llama":{"model":"meta/llama-3.3-70b-instruct-maas","location":"us-central1"},"claude-sonnet":{"model":"anthropic/claude-sonnet-4-5@20250929","location":"us-east5"}}"#.into(),
    );
    env.insert(
        "PRICES_JSON".into(),
        r#"{"flash":{"input":0.3,"output":2.5}}"#.into(),
    );
    env.insert("MAX_ATTEMPTS".into(), "4".into());
    env.insert("THOUGHT_SIGNATURES".into(), "fill".into());
    let proxy = spawn(&env).await;
    let secrets = [
        KEY,
        KEY_FLASH_ONLY,
        KEY_HASHED,
        &sha256_hex(KEY_HASHED),
        &sha256_hex(KEY),
        GOOGLE_TOKEN,
    ];

    // A terminal: plain text, this service's own URL from Host and X-Forwarded-Proto.
    let text = request(
        http::Method::GET,
        &proxy.url("/docs"),
        &[
            ("host", "llm.example.com"),
            ("x-forwarded-proto", "https"),
            ("accept", "*/*"),
        ],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(text.status, StatusCode::OK);
    assert_eq!(text.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(text.headers["x-content-type-options"], "nosniff");
    // It depends on Host, X-Forwarded-Proto and Accept: never cached.
    assert_eq!(text.headers["cache-control"], "no-store");
    assert!(
        text.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    let docs = String::from_utf8(text.body.to_vec()).unwrap();
    for expected in [
        "https://llm.example.com/v1",
        "google/gemini-2.5-flash",
        "meta/llama-3.3-70b-instruct-maas",
        "us-central1",
        "x-api-key: $VERTEX_PROXY_KEY",
        "Authorization: Bearer $VERTEX_PROXY_KEY",
        "OpenAIChatCompletionsModel",
        "set_tracing_disabled(True)",
        "new OpenAI(",
        "./deploy.sh keys",
        // Failover, retries and signatures as this deployment has them.
        "europe-west4, then europe-west1",
        "up to 4 attempts (MAX_ATTEMPTS), waiting at most 20 s",
        "RESOURCE_EXHAUSTED",
        "(THOUGHT_SIGNATURES=fill)",
        // Claude, for Claude Code and the Anthropic SDK, at the service's own URL.
        "/v1/messages",
        "export ANTHROPIC_BASE_URL=https://llm.example.com\n",
        "export ANTHROPIC_MODEL=claude-sonnet",
        "ANTHROPIC_DEFAULT_SONNET_MODEL=claude-sonnet",
        "CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS=1",
        r#"Anthropic(base_url="https://llm.example.com""#,
    ] {
        assert!(docs.contains(expected), "/docs lacks {expected:?}:\n{docs}");
    }
    let pi = pi_block(&docs);
    let provider = &pi["providers"]["vertex-proxy"];
    assert_eq!(provider["api"], "openai-completions");
    assert_eq!(provider["baseUrl"], "https://llm.example.com/v1");
    assert_eq!(provider["apiKey"], "VERTEX_PROXY_KEY");
    assert_eq!(provider["headers"]["x-api-key"], "VERTEX_PROXY_KEY");
    let ids: Vec<&str> = provider["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["flash", "llama"]);
    assert_eq!(provider["models"][0]["cost"]["output"], 2.5);
    // Claude's aliases are pi's second provider, on the Messages API, without `/v1`.
    let claude = &pi["providers"]["vertex-proxy-claude"];
    assert_eq!(claude["api"], "anthropic-messages");
    assert_eq!(claude["baseUrl"], "https://llm.example.com");
    assert_eq!(claude["compat"]["supportsEagerToolInputStreaming"], false);
    assert_eq!(claude["models"][0]["id"], "claude-sonnet");

    // A browser: HTML with the same content, escaped, and no script.
    let html = request(
        http::Method::GET,
        &proxy.url("/docs"),
        &[
            ("host", "127.0.0.1:8080"),
            ("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(html.headers["content-type"], "text/html; charset=utf-8");
    let page = String::from_utf8(html.body.to_vec()).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert!(
        page.contains("http://127.0.0.1:8080/v1")
            && page.contains("&quot;openai-completions&quot;")
    );
    assert!(!page.contains("<script"));

    let splash = request(
        http::Method::GET,
        &proxy.url("/"),
        &[("accept", "text/html")],
        bytes::Bytes::new(),
    )
    .await;
    let splash = String::from_utf8(splash.body.to_vec()).unwrap();
    assert!(
        splash.contains("href=\"/docs\"") && splash.contains("href=\"/health\""),
        "{splash}"
    );

    for body in [&docs, &page, &splash] {
        for secret in secrets {
            assert!(!body.contains(secret), "a page holds a secret");
        }
    }
    assert_eq!(vertex.count(), 0);
}

#[test]
fn the_readme_pi_block_is_what_docs_serves() {
    let env: HashMap<&str, &str> = HashMap::from([
        (
            "API_KEYS_JSON",
            r#"[{"id":"a","key":"sk_test_aaaaaaaaaaaaaaaa"}]"#,
        ),
        ("GOOGLE_CLOUD_PROJECT", "p"),
    ]);
    let config =
        vertex_proxy::config::Config::from_env(&env, vertex_proxy::config::Mode::Vertex).unwrap();
    let served =
        vertex_proxy::pages::pi_models_json(&config, "https://vertex-proxy-abc123-uc.a.run.app/v1");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("**pi coding agent:**").expect("a pi section");
    let block = &readme[start..];
    let block = &block[block.find("```json\n").unwrap() + 8..];
    let block = &block[..block.find("\n```").unwrap()];
    assert_eq!(
        block, served,
        "README's pi block differs from what /docs serves"
    );
}
