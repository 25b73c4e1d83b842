//! Private OpenAI-compatible services (vLLM on Cloud Run, say) behind an alias with an
//! `upstream`: the binary gets their ID tokens from google-cloud-auth, from the metadata
//! server or from a service-account file, and a fake Cloud Run front end lets through only a
//! token for its audience, in the header the alias names.

use crate::support::*;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use http_body_util::channel::Channel;

const GEMMA: &str = "google/gemma-3-12b-it";

/// The aliases for a service at `base` (a fake's origin), besides Vertex's `flash`: `gemma`
/// as is, `gemma-x` with the token in `x-serverless-authorization`, `gemma-gone` naming a
/// model the service lacks, and `gemma-stranger` with an audience the service does not take.
fn aliases(base: &str) -> String {
    serde_json::json!({
        "flash": "google/gemini-2.5-flash",
        "gemma": {"upstream": format!("{base}/v1"), "model": GEMMA},
        "gemma-x": {"upstream": format!("{base}/v1/"), "model": GEMMA, "auth_header": "x-serverless-authorization"},
        "gemma-gone": {"upstream": format!("{base}/v1"), "model": "google/nope"},
        "gemma-stranger": {"upstream": format!("{base}/v1"), "model": GEMMA, "audience": "https://stranger.example/"},
    })
    .to_string()
}

/// A chat completion for `model` with an empty conversation.
async fn chat(proxy: &impl Served, model: &str) -> Answer {
    let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
    post(proxy, "/v1/chat/completions", KEY, &body).await
}

fn bearer_claims(recorded: &Recorded, header: &str) -> serde_json::Value {
    let value = recorded.headers[header].to_str().unwrap();
    claims(value.strip_prefix("Bearer ").expect("a bearer token")).expect("a JWT")
}

/// Vertex, a vLLM-like service behind Cloud Run's check of an ID token in `authorization`,
/// a metadata server, and the environment for a proxy with `flash` and the service as
/// `gemma`; the test may change the metadata server's ways before it spawns the proxy.
struct OneService {
    service: FakeVertex,
    audience: String,
    metadata: FakeMetadata,
    env: std::collections::HashMap<String, String>,
    _vertex: FakeVertex,
}

async fn one_service() -> OneService {
    let vertex = FakeVertex::start().await;
    let service = FakeVertex::start_with(|_: &Recorded| Reply::Hangup).await;
    let audience = format!("{}/", service.base_url());
    service.set_behaviour(cloud_run(&audience, vllm(GEMMA)));
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    let base = service.base_url();
    let aliases = serde_json::json!({"flash": "google/gemini-2.5-flash", "gemma": {"upstream": format!("{base}/v1"), "model": GEMMA}});
    env.insert("MODEL_ALIASES_JSON".into(), aliases.to_string());
    OneService {
        service,
        audience,
        metadata,
        env,
        _vertex: vertex,
    }
}

#[tokio::test]
async fn an_id_token_from_the_metadata_server_opens_the_service_and_the_body_is_spliced() {
    let vertex = FakeVertex::start().await;
    let service = FakeVertex::start_with(|_: &Recorded| Reply::Hangup).await;
    let audience = format!("{}/", service.base_url());
    service.set_behaviour(cloud_run(&audience, vllm(GEMMA)));
    let aliases = aliases(&service.base_url());
    let (metadata, proxy) = spawn_with(&vertex, &[("MODEL_ALIASES_JSON", &aliases)]).await;

    // The operator sees where each service alias goes (clients do not: see the listings).
    let startup = proxy
        .wait_for_line("the startup line", |line| line.get("config").is_some())
        .await;
    let gemma_x = &startup["config"]["aliases"]["gemma-x"];
    assert_eq!(gemma_x["upstream"], format!("{}/v1", service.base_url()));
    assert_eq!(gemma_x["audience"], audience.as_str());
    assert_eq!(gemma_x["auth_header"], "x-serverless-authorization");
    // Warmed at startup, before any request: one token per audience, the origin's by default.
    let mut asked = metadata.wait_for_identity_requests(2).await;
    asked.sort();
    assert_eq!(
        asked,
        [audience.clone(), "https://stranger.example/".into()]
    );

    let body = r#"{"model":"gemma","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#;
    let answer = post(&proxy, "/v1/chat/completions", KEY, body).await;
    answer.expect(StatusCode::OK);
    assert_eq!(answer.json()["model"], GEMMA);
    let received = service.wait_for(1).await;
    let call = &received[0];
    assert_eq!(call.path, "/v1/chat/completions");
    assert_eq!(
        call.body,
        body.replace("\"gemma\"", &format!("\"{GEMMA}\""))
            .as_bytes(),
        "the client's bytes, with only the model replaced"
    );
    let token = bearer_claims(call, "authorization");
    assert_eq!(token["aud"], audience.as_str());
    assert_eq!(token["fake_issuer"], "metadata");
    for credential in credentials() {
        assert!(
            call.headers
                .values()
                .all(|v| !v.to_str().unwrap_or_default().contains(&credential)),
            "a client credential reached the service"
        );
    }
    assert!(!call.headers.contains_key("x-api-key"));

    // Embeddings go to the same base; the token is cached, not asked for again.
    let answer = post(
        &proxy,
        "/v1/embeddings",
        KEY,
        r#"{"model":"gemma","input":"hi"}"#,
    )
    .await;
    answer.expect(StatusCode::OK);
    assert_eq!(service.wait_for(2).await[1].path, "/v1/embeddings");
    assert_eq!(metadata.identity_requests.lock().unwrap().len(), 2);

    // The service's own error keeps its status and message, in OpenAI's shape.
    let answer = chat(&proxy, "gemma-gone").await;
    answer.expect(StatusCode::NOT_FOUND);
    let error = &answer.json()["error"];
    assert_eq!(
        error["message"],
        "The model `\"google/nope\"` does not exist."
    );
    assert_eq!(error["code"], "NotFoundError");

    // A token the front end refuses is the proxy's failure, with what to do about it.
    let answer = chat(&proxy, "gemma-stranger").await;
    answer.expect(StatusCode::BAD_GATEWAY);
    let message = answer.error_message();
    assert!(
        message.starts_with("the service refused the proxy's request (HTTP 401)")
            && message.contains("roles/run.invoker"),
        "{message}"
    );
    assert_eq!(
        answer.json()["error"]["code"],
        "upstream_refused_credentials"
    );
    // Vertex saw none of it.
    assert_eq!(vertex.count(), 0);
}

#[tokio::test]
async fn with_x_serverless_authorization_the_token_leaves_authorization_to_the_service() {
    let vertex = FakeVertex::start().await;
    let service = FakeVertex::start_with(|_: &Recorded| Reply::Hangup).await;
    let audience = format!("{}/", service.base_url());
    service.set_behaviour(cloud_run(&audience, vllm(GEMMA)));
    let aliases = aliases(&service.base_url());
    let (_metadata, proxy) = spawn_with(&vertex, &[("MODEL_ALIASES_JSON", &aliases)]).await;

    // Sent with Authorization: Bearer <the proxy key>, which must not pass either.
    let answer = request(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {KEY}"))],
        r#"{"model":"gemma-x","messages":[]}"#,
    )
    .await;
    answer.expect(StatusCode::OK);
    let call = &service.wait_for(1).await[0];
    assert_eq!(
        call.path, "/v1/chat/completions",
        "the trailing slash is trimmed"
    );
    assert_eq!(
        bearer_claims(call, "x-serverless-authorization")["aud"],
        audience.as_str()
    );
    assert!(!call.headers.contains_key("authorization"));

    // Through `gemma` the token goes in `authorization`, which Cloud Run reads too.
    chat(&proxy, "gemma").await.expect(StatusCode::OK);
    let call = &service.wait_for(2).await[1];
    assert_eq!(
        bearer_claims(call, "authorization")["aud"],
        audience.as_str()
    );
    assert!(!call.headers.contains_key("x-serverless-authorization"));
}

#[tokio::test]
async fn a_service_account_file_signs_locally_and_its_exchanged_id_token_opens_the_service() {
    let vertex = FakeVertex::start().await;
    let (mut tx, body) = Channel::new(8);
    let body = std::sync::Mutex::new(Some(body));
    let service = FakeVertex::start_with(|_: &Recorded| Reply::Hangup).await;
    let audience = format!("{}/", service.base_url());
    service.set_behaviour(cloud_run(&audience, move |_| {
        let body = body.lock().unwrap().take().expect("one stream");
        Reply::Channel(StatusCode::OK, "text/event-stream", body)
    }));
    let oauth = FakeOAuth::start().await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    let base = service.base_url();
    let aliases = serde_json::json!({"flash": "google/gemini-2.5-flash", "gemma": {"upstream": format!("{base}/v1"), "model": GEMMA}});
    env.insert("MODEL_ALIASES_JSON".into(), aliases.to_string());
    env.extend(oauth.env());
    let proxy = spawn(&env).await;

    // At startup: the assertion, signed with the file's key, names the audience.
    let exchanges = oauth.wait_for_exchanges(1).await;
    let assertion = &exchanges[0].claims;
    assert_eq!(assertion["target_audience"], audience.as_str());
    assert_eq!(assertion["iss"], SERVICE_ACCOUNT_EMAIL);

    // A stream passes through as it comes: the second event reaches the client while the
    // service still holds the stream open.
    tx.send_data(Bytes::from("data: {\"choices\":[]}\n\n"))
        .await
        .unwrap();
    let response = start_request(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[("x-api-key", KEY)],
        r#"{"model":"gemma","stream":true,"messages":[]}"#,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = within("the first event", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: {\"choices\":[]}\n\n");
    tx.send_data(Bytes::from("data: [DONE]\n\n")).await.unwrap();
    let second = within("the second event", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.into_data().unwrap(), "data: [DONE]\n\n");
    drop(tx);

    let call = &service.wait_for(1).await[0];
    let token = bearer_claims(call, "authorization");
    assert_eq!(token["aud"], audience.as_str());
    assert_eq!(
        token["fake_issuer"], "oauth2",
        "the exchanged token, not the metadata's"
    );
    assert!(metadata.identity_requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_service_is_named_as_the_service() {
    let vertex = FakeVertex::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = closed.local_addr().unwrap();
    let base = format!("http://{host}");
    drop(closed);
    let aliases = serde_json::json!({"flash": "google/gemini-2.5-flash", "gemma": {"upstream": format!("{base}/v1"), "model": GEMMA}});
    let (_metadata, proxy) = spawn_with(
        &vertex,
        &[
            ("MODEL_ALIASES_JSON", &aliases.to_string()),
            ("MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let answer = chat(&proxy, "gemma").await;
    answer.expect(StatusCode::BAD_GATEWAY);
    let message = answer.error_message();
    // The service's host is the deployment's business, not a key holder's.
    assert!(
        message.starts_with("could not connect to the service: "),
        "{message}"
    );
    assert!(!message.contains("127.0.0.1"), "{message}");
    // The operator's log line has it all.
    let line = proxy.request_line("/v1/chat/completions", 502).await;
    let logged = line["error"].as_str().unwrap();
    assert!(
        logged.starts_with(&format!("could not connect to the service ({})", host.ip())),
        "{line}"
    );
}

#[tokio::test]
async fn listings_show_a_service_alias_without_its_url() {
    let vertex = FakeVertex::start().await;
    let base = "https://gemma-abc-uc.a.run.app";
    let aliases = serde_json::json!({"flash": "google/gemini-2.5-flash", "gemma": {"upstream": format!("{base}/v1"), "model": GEMMA, "defaults": {"chat_template_kwargs": {"enable_thinking": true}}}});
    let proxy = in_process_with(&vertex, &[("MODEL_ALIASES_JSON", &aliases.to_string())]).await;
    let models = get(&proxy, "/v1/models/gemma", KEY).await;
    models.expect(StatusCode::OK);
    let model = models.json();
    assert_eq!(model["owned_by"], "service");
    assert_eq!(model["upstream_model"], GEMMA);
    assert_eq!(
        model["defaults"]["chat_template_kwargs"]["enable_thinking"],
        true
    );
    let docs = get(&proxy, "/docs", KEY).await;
    let page = String::from_utf8_lossy(&docs.body);
    assert!(page.contains("a private service"), "{page}");
    assert!(
        !page.contains("gemma-abc-uc"),
        "the service's URL is on a public page"
    );
    assert!(!String::from_utf8_lossy(&models.body).contains("gemma-abc-uc"));
    // Sent to Claude's or Gemini's API, it is named for what it is, wherever it was sent.
    for path in ["/v1/messages", "/v1beta/models/gemma:generateContent"] {
        let answer = post(&proxy, path, KEY, r#"{"model":"gemma","contents":[]}"#).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        assert!(
            body.contains("is a private service's model: send it to /v1/chat/completions"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_refused_id_token_is_reported_without_the_audience_and_recovered_from() {
    let setup = one_service().await;
    let (audience, metadata) = (&setup.audience, &setup.metadata);
    metadata
        .identity_refused
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let proxy = spawn(&setup.env).await;
    metadata.wait_for_identity_requests(1).await;

    let answer = chat(&proxy, "gemma").await;
    answer.expect(StatusCode::BAD_GATEWAY);
    assert_eq!(answer.json()["error"]["code"], "token_unavailable");
    assert_eq!(
        answer.error_message(),
        "could not obtain a Google ID token for the service (the proxy's log has the cause)"
    );
    assert_eq!(get(&proxy, "/health", KEY).await.json()["token"], "failing");
    // Vertex's own token is another credential, and unaffected.
    chat(&proxy, "flash").await.expect(StatusCode::OK);
    // The operator's log names the audience.
    let logged = format!("Google ID token for {audience}: ");
    proxy
        .wait_for_line("the ID token's failure in the log", |line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&logged))
        })
        .await;

    // Once the metadata server gives tokens again, the credential is rebuilt and serves.
    metadata
        .identity_refused
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let asked = metadata.identity_requests.lock().unwrap().len();
    metadata.wait_for_identity_requests(asked + 1).await;
    // That fetch was the rebuild's; the new credential is put in use right after it.
    within("the service to be reachable again", async {
        while chat(&proxy, "gemma").await.status != StatusCode::OK {}
    })
    .await;
    assert_eq!(get(&proxy, "/health", KEY).await.json()["token"], "ok");
}

#[tokio::test]
async fn a_service_that_refuses_every_token_costs_one_rebuild_not_one_a_request() {
    let setup = one_service().await;
    let (service, metadata) = (&setup.service, &setup.metadata);
    // Cloud Run's 401 to any token: the proxy's account lacks roles/run.invoker, say.
    service.set_behaviour(cloud_run("https://another-audience/", vllm(GEMMA)));
    let proxy = spawn(&setup.env).await;
    metadata.wait_for_identity_requests(1).await;
    for _ in 0..10 {
        let answer = chat(&proxy, "gemma").await;
        answer.expect(StatusCode::BAD_GATEWAY);
        assert_eq!(
            answer.json()["error"]["code"],
            "upstream_refused_credentials"
        );
    }
    // The first refusal rebuilt the credential and sent its fresh token once; within 30 s
    // of that, the others went once each, with the token in hand.
    assert_eq!(service.count(), 11);
    assert_eq!(metadata.identity_requests.lock().unwrap().len(), 2);
    // The message says what was sent, and both likely causes.
    let message = chat(&proxy, "gemma").await.error_message();
    for says in [
        "(HTTP 401)",
        "a Google ID token in Authorization",
        "roles/run.invoker",
        "deploy.sh --invoker-of",
        "--api-key",
        "service_key_env",
    ] {
        assert!(message.contains(says), "{says}: {message}");
    }
}

#[tokio::test]
async fn a_service_with_a_key_of_its_own_gets_it_beside_the_id_token() {
    const OWN_KEY: &str = "sk-vllm-own-key-0123456789";
    let vertex = FakeVertex::start().await;
    let service = FakeVertex::start_with(|_: &Recorded| Reply::Hangup).await;
    let audience = format!("{}/", service.base_url());
    service.set_behaviour(cloud_run(&audience, with_api_key(OWN_KEY, vllm(GEMMA))));
    let base = service.base_url();
    let aliases = serde_json::json!({
        "flash": "google/gemini-2.5-flash",
        "gemma": {"upstream": format!("{base}/v1"), "model": GEMMA, "auth_header": "x-serverless-authorization", "service_key_env": "GEMMA_API_KEY"},
        "gemma-x": {"upstream": format!("{base}/v1"), "model": GEMMA, "auth_header": "x-serverless-authorization"},
    });
    let (_metadata, proxy) = spawn_with(
        &vertex,
        &[
            ("MODEL_ALIASES_JSON", &aliases.to_string()),
            ("GEMMA_API_KEY", OWN_KEY),
        ],
    )
    .await;
    chat(&proxy, "gemma").await.expect(StatusCode::OK);
    let call = &service.wait_for(1).await[0];
    assert_eq!(
        bearer_claims(call, "x-serverless-authorization")["aud"],
        audience.as_str()
    );
    assert_eq!(call.headers["authorization"], format!("Bearer {OWN_KEY}"));
    // The operator sees which variable holds it, never the key.
    let startup = proxy
        .wait_for_line("the startup line", |line| line.get("config").is_some())
        .await;
    assert_eq!(
        startup["config"]["aliases"]["gemma"]["service_key_env"],
        "GEMMA_API_KEY"
    );
    assert!(!startup.to_string().contains(OWN_KEY));
    // Without it, the service refuses, and the message says what was sent and what to do.
    let answer = chat(&proxy, "gemma-x").await;
    answer.expect(StatusCode::BAD_GATEWAY);
    let message = answer.error_message();
    assert!(
        message.contains(
            "a Google ID token in X-Serverless-Authorization and nothing in Authorization"
        ) && message.contains("service_key_env"),
        "{message}"
    );
    assert!(!message.contains(OWN_KEY));
}

#[tokio::test]
async fn a_service_key_must_be_set_and_leave_authorization_free() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    let aliases = serde_json::json!({
        "flash": "google/gemini-2.5-flash",
        "unset": {"upstream": "https://a.example/v1", "model": GEMMA, "auth_header": "x-serverless-authorization", "service_key_env": "NOT_SET_ANYWHERE"},
        "clash": {"upstream": "https://b.example/v1", "model": GEMMA, "service_key_env": "CLASH_KEY"},
        "badname": {"upstream": "https://c.example/v1", "model": GEMMA, "auth_header": "x-serverless-authorization", "service_key_env": "lower-case"},
    });
    env.insert("MODEL_ALIASES_JSON".into(), aliases.to_string());
    env.insert("CLASH_KEY".into(), "sk-clash-0123456789".into());
    let (code, stderr) = try_spawn(&[], &env).await.err().expect("refused");
    assert_eq!(code, 1);
    for says in [
        "alias \"unset\": \"service_key_env\" names NOT_SET_ANYWHERE, which is not set",
        "alias \"clash\": \"service_key_env\" needs \"auth_header\": \"x-serverless-authorization\"",
        "alias \"badname\": \"service_key_env\" must name an environment variable",
    ] {
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    assert!(!stderr.contains("sk-clash-0123456789"), "{stderr}");
}

#[tokio::test]
async fn credentials_that_cannot_make_id_tokens_stop_the_start_and_say_what_to_use() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let file = std::env::temp_dir().join(format!("user-adc-{}.json", std::process::id()));
    std::fs::write(
        &file,
        r#"{"type":"authorized_user","client_id":"x.apps.googleusercontent.com","client_secret":"s","refresh_token":"r"}"#,
    )
    .unwrap();
    let mut env = env(&vertex, &metadata);
    let aliases = serde_json::json!({"flash": "google/gemini-2.5-flash", "gemma": {"upstream": "https://gemma-abc-uc.a.run.app/v1", "model": GEMMA}});
    env.insert("MODEL_ALIASES_JSON".into(), aliases.to_string());
    env.insert(
        "GOOGLE_APPLICATION_CREDENTIALS".into(),
        file.display().to_string(),
    );
    let (code, stderr) = try_spawn(&[], &env).await.err().expect("refused");
    let _ = std::fs::remove_file(&file);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("GOOGLE_APPLICATION_CREDENTIALS: cannot make ID tokens for https://gemma-abc-uc.a.run.app/")
            && stderr.contains("--impersonate-service-account"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("refresh_token") && !stderr.contains("\"r\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_service_over_tls_is_connected_at_startup_and_the_first_request_uses_it() {
    let vertex = FakeVertex::start().await;
    let service = FakeVertex::start_tls_with(|_: &Recorded| Reply::Hangup).await;
    let base = format!("https://localhost:{}", service.addr.port());
    service.set_behaviour(cloud_run(&format!("{base}/"), vllm(GEMMA)));
    let aliases = serde_json::json!({"flash": "google/gemini-2.5-flash", "gemma": {"upstream": format!("{base}/v1"), "model": GEMMA}});
    let proxy = in_process_with(
        &vertex,
        &[
            ("MODEL_ALIASES_JSON", &aliases.to_string()),
            ("UPSTREAM_CA_FILE", TEST_CA_FILE),
            ("UPSTREAM_PRECONNECT", "true"),
        ],
    )
    .await;
    // Before any request, the connection (TCP, TLS, HTTP/2) is there.
    service.wait_for_connections(1).await;
    assert_eq!(service.count(), 0);
    chat(&proxy, "gemma").await.expect(StatusCode::OK);
    let call = &service.received()[0];
    assert_eq!((call.connection, call.version), (1, http::Version::HTTP_2));
    assert_eq!(service.connections(), 1);
}

#[tokio::test]
async fn an_id_token_is_refreshed_before_it_expires_without_a_request_waiting_for_it() {
    let setup = one_service().await;
    let (service, metadata) = (&setup.service, &setup.metadata);
    // Valid 241 s: google-cloud-auth replaces a token 240 s before it expires.
    metadata
        .identity_lifetime
        .store(241, std::sync::atomic::Ordering::SeqCst);
    let proxy = spawn(&setup.env).await;
    // The warm-up's token, then its replacement, and the next: the second was received and
    // put in use before the third was asked for. No request came in between.
    metadata.wait_for_identity_requests(3).await;
    assert_eq!(service.count(), 0);
    chat(&proxy, "gemma").await.expect(StatusCode::OK);
    let token = bearer_claims(&service.received()[0], "authorization");
    let issued = metadata.identity_issued.lock().unwrap().clone();
    let serial = token["jti"].as_u64().unwrap();
    assert!(
        issued.contains(&serial) && serial != issued[0],
        "the request carried the warm-up's token {serial}, of {issued:?}"
    );
}
