//! Startup, credentials, shutdown and demo mode: the binary as an operator runs it.

use std::collections::HashMap;

use crate::support::*;
use base64::Engine;
use http::{Method, StatusCode};

fn owned(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

#[tokio::test]
async fn configuration_errors_name_every_variable_at_once() {
    // Nothing listens here, so the project cannot come from a metadata server either.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let env = owned(&[
        ("GCE_METADATA_HOST", &closed.to_string()),
        ("PORT_IS_NOT_READ", "x"),
        ("MODEL_ALIASES_JSON", r#"{"flash": 42}"#),
        ("VERTEX_BASE_URL", "http://vertex.example.com"),
        ("MAX_BODY_BYTES", "lots"),
        ("SHUTDOWN_GRACE_SECS", "-3"),
        ("VERTEX_LOCATION", "Mars"),
    ]);
    let (code, stderr) = match try_spawn(&[], &env).await {
        Ok(_) => panic!("started with a broken configuration"),
        Err(failure) => failure,
    };
    assert_eq!(code, 1, "{stderr}");
    for var in [
        "API_KEYS_JSON",
        "MODEL_ALIASES_JSON",
        "VERTEX_BASE_URL",
        "MAX_BODY_BYTES",
        "SHUTDOWN_GRACE_SECS",
        "VERTEX_LOCATION",
        "GOOGLE_CLOUD_PROJECT",
    ] {
        assert!(
            stderr.contains(&format!("{var}: ")),
            "{var} not named in:\n{stderr}"
        );
    }

    let keys = format!(r#"[{{"id":"a","key":"{KEY}"}},{{"id":"b","key":"{KEY}"}}]"#);
    let env = owned(&[
        ("API_KEYS_JSON", &keys),
        ("GOOGLE_CLOUD_PROJECT", PROJECT),
        ("PORT", "70000"),
    ]);
    let (_, stderr) = try_spawn(&[], &env).await.err().expect("refused");
    assert!(
        stderr.contains("API_KEYS_JSON: entry 1 (\"b\"): same key as entry \"a\""),
        "{stderr}"
    );
    assert!(stderr.contains("PORT: "), "{stderr}");
    assert!(!stderr.contains(KEY), "a key was printed: {stderr}");
}

#[tokio::test]
async fn project_comes_from_the_metadata_server_when_unset() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    env.remove("GOOGLE_CLOUD_PROJECT");
    let proxy = spawn(&env).await;
    let startup = proxy
        .wait_for_line("the startup line", |l| l.get("config").is_some())
        .await;
    assert_eq!(startup["config"]["project"], PROJECT);
    assert_eq!(chat_status(&proxy, KEY).await, StatusCode::OK);
    let received = vertex.wait_for(1).await;
    assert!(
        received[0]
            .path
            .starts_with(&format!("/v1/projects/{PROJECT}/locations/global/"))
    );
    let text = proxy.lines().join("\n");
    assert!(
        !text.contains(KEY) && !text.contains(GOOGLE_TOKEN),
        "a secret was logged"
    );
}

#[tokio::test]
async fn a_project_id_from_the_metadata_server_is_checked_before_it_is_used() {
    let metadata = FakeMetadata::start().await;
    // Read through the configuration's environment, so it needs no process of its own.
    let mut env = env_with_base_url(&metadata, "http://127.0.0.1:9");
    env.remove("GOOGLE_CLOUD_PROJECT");
    let checked = vertex_proxy::app::check(&env).await.unwrap();
    assert_eq!(checked["project"], PROJECT);

    let escape = "p1/../../v1/projects/other/x?";
    metadata.set_project(escape);
    let errors = vertex_proxy::app::check(&env)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("GOOGLE_CLOUD_PROJECT: is not set, and the project could not be read")
            && errors.contains("not a valid project id"),
        "{errors}"
    );
    assert!(!errors.contains(escape), "{errors}");
}

#[tokio::test]
async fn the_token_is_warmed_at_startup_and_shared_by_concurrent_requests() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    metadata.hold();
    let proxy = spawn(&env(&vertex, &metadata)).await;
    // The warm-up asks for a token before any request arrives.
    metadata.wait_for_token_requests(1).await;
    // Twenty requests arrive while that fetch is still in flight ...
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let url = proxy.url("/v1/chat/completions");
            tokio::spawn(
                async move { request(Method::POST, &url, &[("x-api-key", KEY)], CHAT).await },
            )
        })
        .collect();
    // ... and none of them reaches Vertex without a token.
    assert_eq!(vertex.count(), 0);
    metadata.release();
    for handle in requests {
        assert_eq!(
            within("a request", handle).await.unwrap().status,
            StatusCode::OK
        );
    }
    assert_eq!(
        metadata.token_requests(),
        1,
        "concurrent requests must share one token fetch"
    );
    for received in vertex.received() {
        assert_eq!(
            received.headers["authorization"],
            format!("Bearer {GOOGLE_TOKEN}")
        );
    }
}

#[tokio::test]
async fn a_failing_token_source_is_a_502_that_says_so_until_it_recovers() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    metadata.set_mode(MetadataMode::Fail);
    let mut env = env(&vertex, &metadata);
    env.insert("TOKEN_TIMEOUT_SECS".into(), "2".into());
    let proxy = spawn(&env).await;
    let answer = chat(&proxy).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(
        answer.error_message().contains("Google access token"),
        "{}",
        answer.error_message()
    );
    assert_eq!(answer.json()["error"]["code"], "token_unavailable");
    assert_eq!(vertex.count(), 0);
    // The source recovers; the proxy gets a token by itself (google-cloud-auth retries
    // transient failures every 10 s), with no restart.
    metadata.set_mode(MetadataMode::Ok);
    let recovered = within("service to resume", async {
        loop {
            let answer = chat(&proxy).await;
            if answer.status == StatusCode::OK {
                return answer;
            }
            assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
    .await;
    assert_eq!(recovered.json()["model"], "google/gemini-2.5-flash");
    assert_eq!(vertex.count(), 1);
}

#[tokio::test]
async fn a_token_refused_for_good_at_startup_recovers_without_a_restart() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    metadata.set_mode(MetadataMode::Forbidden);
    let proxy = spawn(&env(&vertex, &metadata)).await;
    metadata.wait_for_token_requests(1).await;
    for _ in 0..5 {
        let answer = chat(&proxy).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        assert_eq!(answer.json()["error"]["code"], "token_unavailable");
    }
    let health = get(&proxy, "/health", "").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["token"], "failing");
    // Lines reach stdout in order, a little after their responses: once this one has come,
    // every line before it has.
    proxy.request_line("/health", 200).await;
    // One ERROR line per cause, not one per failed request.
    let token_errors = |proxy: &Proxy| {
        proxy
            .lines()
            .iter()
            .filter(|l| l.contains("\"ERROR\"") && l.contains("Google access token:"))
            .count()
    };
    assert_eq!(token_errors(&proxy), 1, "{:#?}", proxy.lines());

    // The metadata server recovers. google-cloud-auth alone would never ask it again; the
    // proxy rebuilds the credential, with backoff, and serves again with no restart.
    metadata.set_mode(MetadataMode::Ok);
    // The next attempt of the rebuild, which retries with backoff, puts a new credential in.
    proxy
        .wait_for_line("the credential rebuilt", |l| {
            l["message"] == "Google access token: the credential was rebuilt"
        })
        .await;
    let recovered = chat(&proxy).await;
    assert_eq!(recovered.status, StatusCode::OK);
    assert_eq!(recovered.json()["model"], "google/gemini-2.5-flash");
    assert_eq!(get(&proxy, "/health", "").await.json()["token"], "ok");
}

#[tokio::test]
async fn a_token_vertex_refuses_is_fetched_anew_and_the_request_sent_once_more() {
    let metadata = FakeMetadata::start().await;
    metadata.set_mode(MetadataMode::Numbered);
    let first = format!("Bearer {GOOGLE_TOKEN}.1");
    let refuse = first.clone();
    // Vertex refuses the first token the proxy holds (revoked, say) and takes a new one.
    let vertex = FakeVertex::start_with(move |r: &Recorded| {
        if r.headers["authorization"] == refuse.as_str() {
            let google = r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#;
            Reply::Json(StatusCode::UNAUTHORIZED, google.into())
        } else {
            Reply::Json(StatusCode::OK, completion("google/gemini-2.5-flash"))
        }
    })
    .await;
    let proxy = spawn(&env(&vertex, &metadata)).await;
    metadata.wait_for_token_requests(1).await;
    let answer = chat(&proxy).await;
    assert_eq!(answer.status, StatusCode::OK);
    let received = vertex.received();
    let tokens: Vec<Vec<&str>> = received
        .iter()
        .map(|r| {
            let all = r.headers.get_all("authorization").iter();
            all.map(|v| v.to_str().unwrap()).collect()
        })
        .collect();
    let second = format!("Bearer {GOOGLE_TOKEN}.2");
    assert_eq!(tokens, [vec![first.as_str()], vec![second.as_str()]]);
    assert_eq!(received[0].body, received[1].body);

    // A Vertex that refuses every token: the credential was rebuilt less than 30 s ago, so
    // it is not rebuilt again; the request is sent once and the client gets a 502.
    vertex.set_behaviour(|_| {
        let google = r#"{"error":{"code":401,"message":"no","status":"UNAUTHENTICATED"}}"#;
        Reply::Json(StatusCode::UNAUTHORIZED, google.into())
    });
    let answer = chat(&proxy).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(vertex.count(), 3);
    assert_eq!(metadata.token_requests(), 2);
}

async fn chat(proxy: &Proxy) -> Answer {
    post(proxy, "/v1/chat/completions", KEY, CHAT).await
}

#[tokio::test]
async fn a_service_account_file_signs_its_own_token() {
    let dir = std::env::temp_dir().join(format!("vertex-proxy-sa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem_path = dir.join("key.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem_path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let account = serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "test-key-id",
        "private_key": std::fs::read_to_string(&pem_path).unwrap(),
        "client_email": "proxy@test-proj.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",
    });
    let account_path = dir.join("sa.json");
    std::fs::write(&account_path, account.to_string()).unwrap();

    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    env.insert(
        "GOOGLE_APPLICATION_CREDENTIALS".into(),
        account_path.to_string_lossy().into(),
    );
    let proxy = spawn(&env).await;
    assert_eq!(chat_status(&proxy, KEY).await, StatusCode::OK);
    let received = vertex.wait_for(1).await.remove(0);
    let bearer = received.headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    let jwt = bearer.strip_prefix("Bearer ").expect("a bearer token");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a signed JWT");
    let decode = |part: &str| -> serde_json::Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(decode(parts[0])["alg"], "RS256");
    assert_eq!(decode(parts[0])["kid"], "test-key-id");
    assert_eq!(
        decode(parts[1])["iss"],
        "proxy@test-proj.iam.gserviceaccount.com"
    );
    // The metadata server was not needed.
    assert_eq!(metadata.token_requests(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn demo_mode_answers_curl() {
    let mut proxy = try_spawn(&["demo"], &HashMap::new())
        .await
        .unwrap_or_else(|(code, stderr)| panic!("demo exited {code}: {stderr}"));
    let startup = proxy
        .wait_for_line("the startup line", |l| l.get("config").is_some())
        .await;
    assert_eq!(startup["config"]["mode"], "demo");
    let curl = |args: Vec<String>| async move {
        let output = tokio::process::Command::new("curl")
            .args(args)
            .output()
            .await
            .expect("curl runs");
        assert!(
            output.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let url = proxy.url("/v1/chat/completions");
    let auth = format!("Authorization: Bearer {}", vertex_proxy::demo::KEY);
    let json = curl(vec![
        "-sS".into(),
        url.clone(),
        "-H".into(),
        auth.clone(),
        "-d".into(),
        r#"{"model":"flash","messages":[{"role":"user","content":"Hello there"}]}"#.into(),
    ])
    .await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["choices"][0]["message"]["content"],
        "You said: Hello there"
    );
    assert_eq!(json["model"], "google/gemini-2.5-flash");

    let sse = curl(vec![
        "-sSN".into(), url, "-H".into(), auth,
        "-d".into(), r#"{"model":"flash","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"one two three"}]}"#.into(),
    ])
    .await;
    let events: Vec<&str> = sse.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.len() >= 5, "{sse}");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let text: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "You said: one two three");
    assert!(sse.contains("\"usage\""));

    // Claude too, through the Anthropic Messages API, as the banner shows.
    let claude = curl(vec![
        "-sS".into(),
        proxy.url("/v1/messages"),
        "-H".into(),
        format!("x-api-key: {}", vertex_proxy::demo::KEY),
        "-d".into(),
        r#"{"model":"sonnet","max_tokens":64,"messages":[{"role":"user","content":"Hello Claude"}]}"#
            .into(),
    ])
    .await;
    let claude: serde_json::Value = serde_json::from_str(&claude).unwrap();
    assert_eq!(
        claude["content"][0]["text"], "You said: Hello Claude",
        "{claude}"
    );

    let health = curl(vec!["-sS".into(), proxy.url("/healthz")]).await;
    assert!(health.contains("\"mode\":\"demo\""));
    assert!(health.contains("\"sonnet\""), "{health}");
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert_eq!(line["key_id"], "demo");

    // The banner gave the demo key and ready curl commands for this very address.
    let (code, banner) = proxy.stop().await;
    assert_eq!(code, Some(0));
    assert!(banner.contains(vertex_proxy::demo::KEY), "{banner}");
    assert!(
        banner.contains(&format!("curl -s {}/v1/models", proxy.url(""))),
        "{banner}"
    );
    assert!(banner.contains("\"stream\": true"), "{banner}");
    assert!(banner.contains("/v1/messages"), "{banner}");
}

#[tokio::test]
async fn a_hanging_token_source_is_bounded_by_token_timeout() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    metadata.hold();
    let mut env = env(&vertex, &metadata);
    env.insert("TOKEN_TIMEOUT_SECS".into(), "1".into());
    let proxy = spawn(&env).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(
        answer.error_message().contains("within 1s"),
        "{}",
        answer.error_message()
    );
    assert_eq!(vertex.count(), 0);
    metadata.release();
}
