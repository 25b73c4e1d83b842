//! The request path end to end: the real server between a client and a fake Vertex, in process
//! where the process boundary is not the point, and as the binary where its log is.

use crate::support::*;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use http_body_util::channel::Channel;

async fn setup() -> (FakeVertex, FakeMetadata, Proxy) {
    setup_with(FakeVertex::start().await, &[]).await
}

async fn setup_with(
    vertex: FakeVertex,
    extra: &[(&str, &str)],
) -> (FakeVertex, FakeMetadata, Proxy) {
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    for (name, value) in extra {
        env.insert((*name).into(), (*value).into());
    }
    let proxy = spawn(&env).await;
    (vertex, metadata, proxy)
}

/// The server in process, in front of `vertex`.
async fn in_process(vertex: FakeVertex, extra: &[(&str, &str)]) -> (FakeVertex, InProcess) {
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    for (name, value) in extra {
        env.insert((*name).into(), (*value).into());
    }
    (vertex, InProcess::start(&env).await)
}

const CHAT_PATH: &str =
    "/v1/projects/test-proj/locations/global/endpoints/openapi/chat/completions";

#[tokio::test]
async fn authentication_cases() {
    let (vertex, proxy) = in_process(FakeVertex::start().await, &[]).await;
    let url = proxy.url("/v1/chat/completions");
    let bearer = |k: &str| format!("Bearer {k}");
    let ok_cases: Vec<Vec<(&str, String)>> = vec![
        vec![("x-api-key", KEY.into())],
        vec![("authorization", bearer(KEY))],
        vec![("authorization", bearer(KEY_HASHED))],
        // Some SDKs always send a placeholder Bearer; x-api-key decides.
        vec![
            ("authorization", bearer("placeholder")),
            ("x-api-key", KEY.into()),
        ],
    ];
    for (n, headers) in ok_cases.iter().enumerate() {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = request(Method::POST, &url, &headers, CHAT).await;
        assert_eq!(answer.status, StatusCode::OK, "case {n}: {headers:?}");
        assert_eq!(vertex.count(), n + 1);
    }
    let refused: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![], "missing API key"),
        (
            vec![("x-api-key", "sk_test_wrong_key_000000".into())],
            "invalid API key",
        ),
        (vec![("x-api-key", KEY_DISABLED.into())], "invalid API key"),
        (
            vec![
                ("authorization", bearer(KEY)),
                ("x-api-key", "wrong-key-0000000000".into()),
            ],
            "invalid API key",
        ),
        (
            vec![("authorization", format!("Basic {KEY}"))],
            "Bearer KEY",
        ),
    ];
    for (headers, reason) in refused {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = request(Method::POST, &url, &headers, CHAT).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        let message = answer.error_message();
        assert!(message.contains(reason), "{message}");
        assert!(!message.contains(KEY));
    }
    // Nothing of any kind reached Vertex for the refused requests.
    assert_eq!(vertex.count(), 4);
}

#[tokio::test]
async fn vertex_receives_the_rewritten_model_and_the_google_token_only() {
    let (vertex, _metadata, proxy) = setup().await;
    let body = r#"{"model": "flash", "messages":[{"role":"user","content":"hi"}], "extra_body":{"google":{"thinking_config":{"thinking_budget":0}}}}"#;
    let answer = request(
        Method::POST,
        &proxy.url("/v1/chat/completions?debug=1"),
        &[
            ("authorization", "Bearer placeholder"),
            ("x-api-key", KEY),
            ("cookie", "session=secret"),
            ("content-type", "application/json"),
            ("user-agent", "OpenAI/Python 2.0"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-request-id", "req-42"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-goog-user-project", "not-yours"),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["model"], "google/gemini-2.5-flash");
    let received = vertex.wait_for(1).await.remove(0);
    assert_eq!(received.method, Method::POST);
    assert_eq!(received.path, CHAT_PATH);
    assert_eq!(
        received.body,
        body.replace("\"flash\"", "\"google/gemini-2.5-flash\"")
    );
    let h = &received.headers;
    assert_eq!(h["authorization"], format!("Bearer {GOOGLE_TOKEN}"));
    assert_eq!(h.get_all("authorization").iter().count(), 1);
    assert_eq!(h["user-agent"], "OpenAI/Python 2.0");
    assert_eq!(
        h["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(h["x-request-id"], "req-42");
    assert_eq!(h["content-type"], "application/json");
    for gone in [
        "x-api-key",
        "cookie",
        "x-forwarded-for",
        "x-goog-user-project",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached Vertex");
    }
    for (_, value) in h {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(!value.contains(KEY), "the client key reached Vertex");
    }
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert_eq!(line["key_id"], "main");
    assert_eq!(line["alias"], "flash");
    assert_eq!(line["model"], "google/gemini-2.5-flash");
    assert_eq!(line["location"], "global");
    assert_eq!(line["upstream_status"], 200);
    assert_eq!(line["httpRequest"]["userAgent"], "OpenAI/Python 2.0");
    assert!(line.get("cancelled").is_none(), "{line}");
}

#[tokio::test]
async fn aliases_locations_embeddings_and_raw_ids() {
    let vertex = FakeVertex::start().await;
    let aliases = r#"{"flash":"google/gemini-2.5-flash","llama":{"model":"meta/llama-3.3-70b-instruct-maas","location":"us-central1"}}"#;
    let (vertex, proxy) = in_process(
        vertex,
        &[
            ("MODEL_ALIASES_JSON", aliases),
            ("VERTEX_LOCATION", "europe-west4"),
            ("ALLOW_RAW_MODEL_IDS", "true"),
        ],
    )
    .await;
    let cases = [
        (
            "/v1/chat/completions",
            "flash",
            "europe-west4",
            "chat/completions",
            "google/gemini-2.5-flash",
        ),
        (
            "/chat/completions",
            "llama",
            "us-central1",
            "chat/completions",
            "meta/llama-3.3-70b-instruct-maas",
        ),
        (
            "/v1/embeddings",
            "flash",
            "europe-west4",
            "embeddings",
            "google/gemini-2.5-flash",
        ),
        (
            "/v1/chat/completions",
            "google/gemini-2.0-flash",
            "europe-west4",
            "chat/completions",
            "google/gemini-2.0-flash",
        ),
    ];
    for (n, (path, model, location, operation, vertex_id)) in cases.into_iter().enumerate() {
        let body = format!(r#"{{"model":"{model}","input":"x"}}"#);
        let answer = post(&proxy, path, KEY, &body).await;
        assert_eq!(answer.status, StatusCode::OK, "{path} {model}");
        let received = vertex.wait_for(n + 1).await.remove(n);
        assert_eq!(
            received.path,
            format!("/v1/projects/test-proj/locations/{location}/endpoints/openapi/{operation}")
        );
        assert_eq!(received.json()["model"], vertex_id);
    }
    // Not an alias and not publisher/model: refused even with raw ids allowed.
    let answer = post(
        &proxy,
        "/v1/chat/completions",
        KEY,
        r#"{"model":"../../x"}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(vertex.count(), 4);
}

#[tokio::test]
async fn unknown_and_forbidden_models() {
    let (vertex, proxy) = in_process(FakeVertex::start().await, &[]).await;
    let answer = post(
        &proxy,
        "/v1/chat/completions",
        KEY_FLASH_ONLY,
        r#"{"model":"gpt-4o"}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let message = answer.error_message();
    assert!(
        message.contains("\"gpt-4o\"") && message.contains("may use: flash"),
        "{message}"
    );
    assert!(
        !message.contains("pro-preview"),
        "lists aliases the key may not use: {message}"
    );

    let answer = post(
        &proxy,
        "/v1/chat/completions",
        KEY_FLASH_ONLY,
        r#"{"model":"pro-preview"}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.error_message().contains("pro-preview"));

    let answer = post(
        &proxy,
        "/v1/chat/completions",
        KEY,
        r#"{"model":"meta/llama"}"#,
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "raw ids are off by default"
    );
    assert_eq!(vertex.count(), 0);
}

#[tokio::test]
async fn a_large_body_arrives_byte_for_byte() {
    let (vertex, proxy) = in_process(FakeVertex::start().await, &[]).await;
    // 6 MiB of base64 "image", unicode, escapes and fields the proxy knows nothing about.
    let image: String = (0..6 * 1024 * 1024)
        .map(|i| {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i % 64] as char
        })
        .collect();
    let body = format!(
        concat!(
            r#"{{"messages":[{{"role":"user","content":[{{"type":"text","text":"Qu'est-ce que c'est ? 日本語 🚀 \"model\": \u00e9"}},"#,
            r#"{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{}"}}}}]}}],"#,
            "\n\t \"model\" :\"flash\" ,",
            r#""tools":[{{"type":"function","function":{{"name":"f","parameters":{{}}}}}}],"#,
            r#""thought_signature":"c2lnbmF0dXJl","unknown_field":[1.5e3,null,true,{{"model":"nested stays"}}]}}"#
        ),
        image
    );
    let answer = post(&proxy, "/v1/chat/completions", KEY, &body).await;
    assert_eq!(answer.status, StatusCode::OK);
    let received = vertex.wait_for(1).await.remove(0);
    let expected = body.replacen(r#":"flash" ,"#, r#":"google/gemini-2.5-flash" ,"#, 1);
    assert!(received.body.len() > 6 * 1024 * 1024);
    assert!(
        received.body == expected.as_bytes(),
        "the body changed beyond the model value"
    );
}

#[tokio::test]
async fn duplicate_model_keys_and_broken_bodies_are_refused() {
    let (vertex, proxy) = in_process(FakeVertex::start().await, &[]).await;
    let cases = [
        (
            r#"{"model":"flash","model":"pro-preview"}"#,
            "more than one",
        ),
        (
            r#"{"model":"flash","mod\u0065l":"pro-preview"}"#,
            "more than one",
        ),
        (r#"{"model":"flash""#, "not valid JSON"),
        (r#"["model","flash"]"#, "JSON object"),
        (r#"{"messages":[]}"#, "no \"model\""),
        (r#"{"model":7}"#, "must be a string"),
    ];
    for (body, reason) in cases {
        let answer = post(&proxy, "/v1/chat/completions", KEY, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let message = answer.error_message();
        assert!(message.contains(reason), "{body}: {message}");
    }
    assert_eq!(vertex.count(), 0);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_declared_or_not() {
    let (vertex, proxy) = in_process(FakeVertex::start().await, &[("MAX_BODY_BYTES", "64")]).await;
    let at_limit = format!(
        r#"{{"model":"flash","pad":"{}"}}"#,
        "x".repeat(64 - r#"{"model":"flash","pad":""}"#.len())
    );
    assert_eq!(at_limit.len(), 64);
    let answer = post(&proxy, "/v1/chat/completions", KEY, &at_limit).await;
    assert_eq!(answer.status, StatusCode::OK);
    let over = format!("{at_limit} ");
    let answer = post(&proxy, "/v1/chat/completions", KEY, &over).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.error_message().contains("MAX_BODY_BYTES"));
    // Chunked, so the limit is found while reading rather than from Content-Length.
    let (mut tx, body) = Channel::new(4);
    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Channel<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("/v1/chat/completions")
        .header("host", "proxy")
        .header("x-api-key", KEY)
        .body(body)
        .unwrap();
    tx.send_data(Bytes::from(over[..40].to_owned()))
        .await
        .unwrap();
    tx.send_data(Bytes::from(over[40..].to_owned()))
        .await
        .unwrap();
    drop(tx);
    let response = within("413 for a chunked body", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(vertex.count(), 1);
}

#[tokio::test]
async fn sse_chunks_reach_the_client_while_vertex_is_still_sending() {
    let (vertex, mut tx) = FakeVertex::streaming().await;
    let (_vertex, _metadata, proxy) = setup_with(vertex, &[]).await;
    let chunks = [
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: : keepalive\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
    ];
    // The head comes with the first event, which is content.
    tx.send_data(Bytes::from(chunks[0])).await.unwrap();
    let response = start_stream(&proxy).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut seen = Vec::new();
    for (n, chunk) in chunks.into_iter().enumerate() {
        // The fake has not sent the next chunk yet: this one must already be here.
        if n > 0 {
            tx.send_data(Bytes::from(chunk)).await.unwrap();
        }
        let frame = within("one SSE chunk", body.frame())
            .await
            .unwrap()
            .unwrap();
        let data = frame.into_data().unwrap();
        assert_eq!(data, chunk);
        seen.extend_from_slice(&data);
    }
    tx.send_data(Bytes::from("data: [DONE]\n\n")).await.unwrap();
    drop(tx);
    let rest = within("the end of the stream", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "data: [DONE]\n\n");
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert_eq!(
        line["httpRequest"]["responseSize"],
        (seen.len() + rest.len()).to_string()
    );
    assert!(line.get("cancelled").is_none());
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_request() {
    let (vertex, mut tx) = FakeVertex::streaming().await;
    let (vertex, _metadata, proxy) = setup_with(vertex, &[]).await;
    tx.send_data(Bytes::from("data: first\n\n")).await.unwrap();
    let response = start_stream(&proxy).await;
    let mut body = response.into_body();
    within("the first chunk", body.frame())
        .await
        .unwrap()
        .unwrap();
    // The client goes away mid-stream.
    drop(body);
    // The proxy must drop its upstream request, which closes the fake's response stream
    // before its end.
    assert_eq!(vertex.wait_for_cancelled(1).await, [0]);
    let line = proxy
        .wait_for_line("the cancelled request's log line", |l| {
            l["cancelled"] == true
        })
        .await;
    assert_eq!(line["httpRequest"]["status"], 200);
}

#[tokio::test]
async fn usage_is_logged_whatever_encoding_the_client_accepts() {
    let (vertex, _metadata, proxy) = setup().await;
    // What the OpenAI SDKs send; the fake gzips whenever it is accepted, as Google does.
    let answer = request(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[("x-api-key", KEY), ("accept-encoding", "gzip, deflate")],
        CHAT,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers.get("content-encoding").is_none());
    assert_eq!(answer.json()["usage"]["total_tokens"], 2);
    let received = vertex.wait_for(1).await.remove(0);
    assert_eq!(received.headers["accept-encoding"], "identity");
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert_eq!(line["usage"]["prompt_tokens"], 1, "{line}");
}

#[tokio::test]
async fn vertex_refusing_the_proxys_credentials_is_a_502_not_the_clients_401() {
    let vertex = FakeVertex::start().await;
    let (vertex, _metadata, proxy) = setup_with(vertex, &[]).await;
    for (status, reason) in [(401u16, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED")] {
        let google = format!(
            r#"[{{"error":{{"code":{status},"message":"Permission 'aiplatform.endpoints.predict' denied","status":"{reason}"}}}}]"#
        );
        vertex.set_behaviour(move |_| {
            Reply::Json(StatusCode::from_u16(status).unwrap(), google.clone())
        });
        let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            answer.json()["error"]["code"],
            "upstream_refused_credentials"
        );
        let message = answer.error_message();
        assert!(
            message.contains(&format!(
                "refused the proxy's own credentials (HTTP {status})"
            )) && message.contains("your API key was accepted"),
            "{message}"
        );
        let line = proxy.request_line("/v1/chat/completions", 502).await;
        let logged = line["error"].as_str().unwrap();
        assert!(
            logged.contains(reason) && logged.contains("aiplatform.endpoints.predict"),
            "{logged}"
        );
        proxy.clear_lines();
    }
}

#[tokio::test]
async fn models_endpoints_follow_each_keys_list() {
    let (vertex, proxy) = in_process(FakeVertex::start().await, &[]).await;
    let all = get(&proxy, "/v1/models", KEY).await.json();
    assert_eq!(all["object"], "list");
    let ids: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["flash", "pro-preview"]);
    assert_eq!(all["data"][0]["vertex_id"], "google/gemini-2.5-flash");
    assert_eq!(all["data"][0]["object"], "model");
    assert_eq!(all["data"][0]["owned_by"], "google");
    assert!(all["data"][0]["created"].is_u64());

    let limited = get(&proxy, "/models", KEY_FLASH_ONLY).await.json();
    let ids: Vec<&str> = limited["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["flash"]);

    let one = get(&proxy, "/v1/models/pro-preview", KEY).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["vertex_id"], "google/gemini-3.1-pro-preview");
    assert_eq!(
        get(&proxy, "/v1/models/pro-preview", KEY_FLASH_ONLY)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let missing = get(&proxy, "/v1/models/gpt-4", KEY).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.error_message().contains("gpt-4"));
    assert_eq!(
        get(&proxy, "/v1/models", "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(vertex.count(), 0);
}

#[tokio::test]
async fn health_unknown_paths_and_wrong_methods() {
    let (vertex, metadata, proxy) = setup().await;
    let health = request(Method::GET, &proxy.url("/healthz"), &[], Bytes::new()).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.json(),
        serde_json::json!({"ok": true, "mode": "vertex", "models": ["flash", "pro-preview"], "token": "ok"})
    );

    let missing = request(
        Method::GET,
        &proxy.url("/v2/chat"),
        &[("x-api-key", KEY)],
        Bytes::new(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.error_message().contains("/v2/chat"));

    let wrong = request(
        Method::GET,
        &proxy.url("/v1/chat/completions"),
        &[("x-api-key", KEY)],
        Bytes::new(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers["allow"], "POST");
    assert!(wrong.error_message().contains("POST"));
    assert_eq!(vertex.count(), 0);
    // The startup warm-up is the only token fetch so far: it happens, once, and none of the
    // requests above asked for another.
    metadata.wait_for_token_requests(1).await;
    assert_eq!(metadata.token_requests(), 1);
}

#[tokio::test]
async fn h2c_requests_work() {
    let (vertex, proxy) = in_process(FakeVertex::start().await, &[]).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an h2c handshake");
    tokio::spawn(connection);
    let request = http::Request::post(proxy.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(http_body_util::Full::new(Bytes::from(CHAT)))
        .unwrap();
    let response = within("an h2c response", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, completion("google/gemini-2.5-flash"));
    assert_eq!(
        vertex.wait_for(1).await[0].json()["model"],
        "google/gemini-2.5-flash"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_that_says_so() {
    // Bind and drop a listener: nothing listens on that port any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let metadata = FakeMetadata::start().await;
    let env = env_with_base_url(&metadata, &format!("http://{closed}"));
    let proxy = spawn(&env).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let message = answer.error_message();
    assert!(message.contains("could not connect to Vertex"), "{message}");
    assert_eq!(answer.json()["error"]["code"], "upstream_unreachable");
    // Nothing was sent, so nothing can have begun: each of the attempts was made.
    let line = proxy.request_line("/v1/chat/completions", 502).await;
    let statuses: Vec<&serde_json::Value> = line["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [502, 502, 502], "{line}");
}

#[tokio::test]
async fn an_upstream_that_never_accepts_is_a_504() {
    // A listener whose accept queue is full drops further SYNs, so connecting hangs until
    // the proxy's connect timeout: a black hole on loopback.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    let metadata = FakeMetadata::start().await;
    let mut env = env_with_base_url(&metadata, &format!("http://{addr}"));
    env.insert("UPSTREAM_CONNECT_TIMEOUT_SECS".into(), "1".into());
    let proxy = spawn(&env).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(answer.error_message().contains("timed out after 1s"));
    assert_eq!(answer.json()["error"]["code"], "upstream_timeout");
    drop(listener);
}

/// The suite-wide leak check (in `Proxy`'s drop) is not vacuous: a logged key fails the test.
#[tokio::test]
#[should_panic(expected = "reached the proxy's logs")]
async fn the_leak_check_catches_a_logged_key() {
    let (_vertex, _metadata, proxy) = setup().await;
    assert_eq!(chat_status(&proxy, KEY).await, StatusCode::OK);
    proxy.pretend_logged(&format!("{{\"message\":\"oops {}\"}}", sha256_hex(KEY)));
}
