//! Gemini's own API (Gemini CLI, the google-genai SDKs) against the strict stand-in's native
//! methods: every path form and key form, the bytes Vertex gets, streams as they come, usage
//! from the last event, the model checks, and the model list in Gemini's shape.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// The defaults, a Gemini 3 model named as Gemini CLI names it, an embedding model and Claude.
const ALIASES: &str = r#"{"flash":"google/gemini-2.5-flash","gemini-3.8-flash":"google/gemini-3-flash","embed":"google/gemini-embedding-001","sonnet":{"model":"anthropic/claude-sonnet-4-5@20250929","location":"us-east5"}}"#;

const BODY: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hello there"}]}],"generationConfig":{"thinkingConfig":{"includeThoughts":true}}}"#;

async fn proxy_for(vertex: &FakeVertex) -> (FakeMetadata, Proxy) {
    spawn_with(
        vertex,
        &[
            ("MODEL_ALIASES_JSON", ALIASES),
            ("ALLOW_RAW_MODEL_IDS", "true"),
        ],
    )
    .await
}

async fn send(proxy: &impl Served, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request(Method::POST, &proxy.url(path), &all, body.to_owned()).await
}

#[tokio::test]
async fn every_path_and_key_form_reaches_the_native_method_and_no_key_goes_upstream() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let (_metadata, proxy) = proxy_for(&vertex).await;
    let goog = [("x-goog-api-key", KEY)];
    let bearer_value = format!("Bearer {KEY}");
    let bearer = [("authorization", bearer_value.as_str())];
    let key_query = format!("key={KEY}");
    for (path, headers) in [
        ("/v1beta/models/flash:generateContent".to_owned(), &goog[..]),
        ("/v1/models/flash:generateContent".to_owned(), &bearer[..]),
        ("/v1alpha/models/flash:generateContent".to_owned(), &goog[..]),
        (format!("/v1beta/models/flash:generateContent?{key_query}"), &[][..]),
        ("/v1beta1/projects/their-proj/locations/europe-west9/publishers/google/models/flash:generateContent".to_owned(), &bearer[..]),
        ("/v1/publishers/google/models/flash:generateContent".to_owned(), &goog[..]),
        // A raw Gemini id, where raw ids are allowed.
        ("/v1beta/models/gemini-2.5-pro:generateContent".to_owned(), &goog[..]),
    ] {
        let answer = send(&proxy, &path, headers, BODY).await;
        answer.expect(StatusCode::OK);
        assert_eq!(answer.json()["candidates"][0]["content"]["parts"][0]["text"], "You said: hello there", "{path}");
        let received = vertex.received().pop().unwrap();
        let model = if path.contains("gemini-2.5-pro") { "gemini-2.5-pro" } else { "gemini-2.5-flash" };
        // Vertex's own path, in the route's location and the proxy's project, no query.
        assert_eq!(
            received.path,
            format!("/v1/projects/{PROJECT}/locations/global/publishers/google/models/{model}:generateContent"),
            "{path}"
        );
        assert_eq!(received.body, BODY.as_bytes(), "byte for byte");
        for name in ["x-goog-api-key", "x-api-key"] {
            assert!(!received.headers.contains_key(name));
        }
        assert_eq!(received.headers["authorization"], format!("Bearer {GOOGLE_TOKEN}"));
    }
    // The key in the query is in no log line.
    assert!(proxy.lines().iter().all(|l| !l.contains(KEY)));
    let line = proxy
        .request_line("/v1beta/models/flash:generateContent", 200)
        .await;
    assert_eq!(line["alias"], "flash");
    // No key at all, or a wrong one: 401 in Google's shape.
    let answer = send(&proxy, "/v1beta/models/flash:generateContent", &[], BODY).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(answer.json()["error"]["code"], 401);
    let message = answer.json()["error"]["message"].to_string();
    assert!(
        message.contains("x-goog-api-key"),
        "the forms Google's clients use: {message}"
    );
    let wrong = send(
        &proxy,
        "/v1beta/models/flash:generateContent?key=sk_wrong_00000000000",
        &[],
        BODY,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // Elsewhere a key in the query is not read: it would only end up in URL logs.
    let chat = r#"{"model":"flash","messages":[{"role":"user","content":"hi"}]}"#;
    let path = format!("/v1/chat/completions?{key_query}");
    let answer = send(&proxy, &path, &[], chat).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.json()["error"]["code"],
        "invalid_api_key",
        "{}",
        answer.json()
    );
    send(&proxy, "/v1/chat/completions", &goog, chat)
        .await
        .expect(StatusCode::OK);
}

/// Routing's own errors on Gemini's paths are Google's, and a method the proxy does not serve
/// is 404, not a model to GET.
#[tokio::test]
async fn unknown_methods_and_routing_errors_are_googles() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let (_metadata, proxy) = proxy_for(&vertex).await;
    let goog = [("x-goog-api-key", KEY)];
    for path in [
        "/v1beta/models/flash:delete",
        "/v1/models/flash:frobnicate",
        "/v1beta1/publishers/google/models/flash:x",
    ] {
        let answer = send(&proxy, path, &goog, BODY).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.json()["error"]["status"], "NOT_FOUND", "{path}");
        assert!(
            answer.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no such method"),
            "{path}"
        );
    }
    // Other publishers' Vertex paths are no method of Gemini's: no such endpoint.
    let claude =
        "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-x:streamRawPredict";
    let answer = send(&proxy, claude, &goog, BODY).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no such endpoint")
    );
    let url = proxy.url("/v1beta/models/flash:generateContent");
    let get = request(Method::GET, &url, &goog, String::new()).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.json()["error"]["code"], 405);
    // OpenAI's model GET at the path both share keeps OpenAI's shape.
    let url = proxy.url("/v1/models/no:such");
    let openai = request(Method::GET, &url, &[("x-api-key", KEY)], String::new()).await;
    assert_eq!(openai.status, StatusCode::NOT_FOUND);
    assert_eq!(openai.json()["error"]["type"], "invalid_request_error");
    // A body that cannot be a JSON object is refused here, not sent on labelled JSON.
    for body in ["this is not json", "", "\u{1f}\u{8b}gzip"] {
        let answer = send(&proxy, "/v1beta/models/flash:generateContent", &goog, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(
            answer.json()["error"]["status"],
            "INVALID_ARGUMENT",
            "{body:?}"
        );
    }
    assert_eq!(vertex.received().len(), 0);
}

/// Google reads system parameters from the query: a key (`$key`, `%6Bey`), a token
/// (`access_token`), a billing project (`userProject`), a field mask, a content type. None of
/// the client's may reach Vertex, which is sent `alt` alone.
#[tokio::test]
async fn only_alt_crosses_to_vertex_of_the_query() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let (_metadata, proxy) = proxy_for(&vertex).await;
    let goog = [("x-goog-api-key", KEY)];
    let hostile = format!(
        "alt=sse&%24key={KEY}&%6Bey={KEY}&access_token=ya29.client&oauth_token=x&%24ct=application/x-protobuf\
         &userProject=other-proj&%24userProject=x&quotaUser=q&fields=candidates&%24httpMethod=GET&key={KEY}&&alt=sse"
    );
    let path = format!("/v1beta/models/flash:streamGenerateContent?{hostile}");
    send(&proxy, &path, &goog, BODY)
        .await
        .expect(StatusCode::OK);
    let received = vertex.received().pop().unwrap();
    assert_eq!(
        received.path,
        format!(
            "/v1/projects/{PROJECT}/locations/global/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        )
    );
    // No query at all, and `alt=json`, go as they came.
    send(
        &proxy,
        "/v1beta/models/flash:generateContent?fields=x",
        &goog,
        BODY,
    )
    .await
    .expect(StatusCode::OK);
    assert!(
        vertex
            .received()
            .pop()
            .unwrap()
            .path
            .ends_with(":generateContent")
    );
    let path = "/v1beta/models/flash:streamGenerateContent?alt=json";
    send(&proxy, path, &goog, BODY).await.expect(StatusCode::OK);
    assert!(vertex.received().pop().unwrap().path.ends_with("?alt=json"));
    // An answer in a form the proxy cannot read usage from (or relay as it is) is refused here.
    let sent = vertex.received().len();
    for alt in ["alt=proto", "alt=media", "alt=sse&alt=proto"] {
        let path = format!("/v1beta/models/flash:generateContent?{alt}");
        let answer = send(&proxy, &path, &goog, BODY).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{alt}");
        assert_eq!(
            answer.json()["error"]["status"],
            "INVALID_ARGUMENT",
            "{alt}"
        );
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains("alt") && message.contains("sse"),
            "{message}"
        );
    }
    assert_eq!(vertex.received().len(), sent);
}

#[tokio::test]
async fn streams_pass_as_they_come_with_usage_from_the_last_event() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let (_metadata, proxy) = proxy_for(&vertex).await;
    let goog = [("x-goog-api-key", KEY)];
    let path = "/v1beta/models/flash:streamGenerateContent?alt=sse";
    let answer = send(&proxy, path, &goog, BODY).await;
    answer.expect(StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    let events: Vec<&str> = std::str::from_utf8(&answer.body)
        .unwrap()
        .split("\r\n\r\n")
        .collect();
    assert_eq!(events.len(), 3, "two events and the end: {events:?}");
    let last: Value = serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    let received = vertex.received().pop().unwrap();
    assert!(
        received.path.ends_with(":streamGenerateContent?alt=sse"),
        "{}",
        received.path
    );
    let line = proxy
        .request_line("/v1beta/models/flash:streamGenerateContent", 200)
        .await;
    // promptTokenCount 2 ("hello there"), candidates 3 and thoughts 2: output 5.
    assert_eq!(
        line["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7, "thoughts_tokens": 2})
    );
    // Without alt=sse: Google's JSON-array stream, as it came.
    proxy.clear_lines();
    let answer = send(
        &proxy,
        "/v1beta/models/flash:streamGenerateContent",
        &goog,
        BODY,
    )
    .await;
    answer.expect(StatusCode::OK);
    let chunks = answer.json();
    assert_eq!(chunks.as_array().map(Vec::len), Some(2));
    // Its usage is read from the array's last element, as from the last event.
    let array = proxy
        .request_line("/v1beta/models/flash:streamGenerateContent", 200)
        .await;
    assert_eq!(array["usage"]["total_tokens"], 7, "{array}");
    // countTokens and the embedding methods.
    let counted = send(&proxy, "/v1beta/models/flash:countTokens", &goog, BODY).await;
    assert_eq!(counted.json(), json!({"totalTokens": 2}));
    let embed = r#"{"content":{"parts":[{"text":"hello"}]}}"#;
    let embedded = send(&proxy, "/v1beta/models/embed:embedContent", &goog, embed).await;
    assert_eq!(
        embedded.json()["embedding"]["values"]
            .as_array()
            .map(Vec::len),
        Some(8)
    );
    let received = vertex.received().pop().unwrap();
    assert!(
        received
            .path
            .ends_with("/publishers/google/models/gemini-embedding-001:embedContent")
    );
}

#[tokio::test]
async fn a_first_event_error_is_retried_and_errors_read_in_googles_shape() {
    let vertex = FakeVertex::start().await;
    let first = std::sync::atomic::AtomicBool::new(true);
    vertex.set_behaviour(move |r| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return error_in_stream(429, "RESOURCE_EXHAUSTED");
        }
        stand_in(r)
    });
    let (_metadata, proxy) = proxy_for(&vertex).await;
    let goog = [("x-goog-api-key", KEY)];
    let path = "/v1beta/models/flash:streamGenerateContent?alt=sse";
    let answer = send(&proxy, path, &goog, BODY).await;
    answer.expect(StatusCode::OK);
    assert!(String::from_utf8_lossy(&answer.body).contains("You said: hello there"));
    assert_eq!(vertex.count(), 2);
    // Vertex's array-wrapped error, unwrapped into Google's own shape with its status.
    vertex.set_behaviour(|_| google_error(429, "RESOURCE_EXHAUSTED", Some("0")));
    let proxy = in_process_with(
        &vertex,
        &[("MODEL_ALIASES_JSON", ALIASES), ("MAX_ATTEMPTS", "1")],
    )
    .await;
    let answer = send(&proxy, "/v1beta/models/flash:generateContent", &goog, BODY).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    let error = &answer.json()["error"];
    assert_eq!(
        (error["code"].as_u64(), error["status"].as_str()),
        (Some(429), Some("RESOURCE_EXHAUSTED"))
    );
    assert!(error["message"].is_string());
}

#[tokio::test]
async fn models_that_are_not_googles_or_not_generative_are_sent_elsewhere() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    let goog = [("x-goog-api-key", KEY)];
    for (model, method, says) in [
        ("sonnet", "generateContent", "/v1/messages"),
        ("embed", "generateContent", ":embedContent"),
        ("flash", "embedContent", ":generateContent"),
    ] {
        let path = format!("/v1beta/models/{model}:{method}");
        let answer = send(&proxy, &path, &goog, BODY).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        let error = &answer.json()["error"];
        assert_eq!(error["status"], "INVALID_ARGUMENT");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    let answer = send(&proxy, "/v1beta/models/nope:generateContent", &goog, BODY).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"]["code"], 400);
    // The name as the client sent it.
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("\"nope\"") && !message.contains("google/nope"),
        "{message}"
    );
    // It lists the aliases Gemini's API reaches, not Claude, which it cannot.
    assert!(
        message.ends_with("this key may use: embed, flash, gemini-3.8-flash"),
        "{message}"
    );
    assert_eq!(vertex.count(), 0, "nothing reached Vertex");
    // A key whose models list lacks the alias: 403 in Google's shape.
    let answer = send(
        &proxy,
        "/v1beta/models/sonnet:generateContent",
        &[("x-goog-api-key", KEY_FLASH_ONLY)],
        BODY,
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["error"]["status"], "PERMISSION_DENIED");
}

#[tokio::test]
async fn the_model_list_is_geminis_for_geminis_clients() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    let listed = get(&proxy, "/v1beta/models", KEY).await;
    listed.expect(StatusCode::OK);
    let names: Vec<&str> = (listed.json()["models"].as_array().unwrap().iter())
        .map(|m| m["name"].as_str().unwrap().to_owned().leak() as &str)
        .collect();
    // Claude is not reached by Gemini's API; the others are, by alias.
    assert_eq!(
        names,
        ["models/embed", "models/flash", "models/gemini-3.8-flash"]
    );
    let one = get(&proxy, "/v1beta/models/models/flash", KEY).await.json();
    assert_eq!(
        one["supportedGenerationMethods"],
        json!(["generateContent", "streamGenerateContent", "countTokens"])
    );
    assert_eq!(one["displayName"], "flash");
    // google-genai 3.x lists at OpenAI's path: its header tells it apart.
    let headers = [
        ("x-goog-api-key", KEY),
        ("x-goog-api-client", "google-genai-sdk/3.6.1"),
    ];
    let listed = request(Method::GET, &proxy.url("/v1/models"), &headers, "").await;
    assert_eq!(listed.json()["models"].as_array().map(Vec::len), Some(3));
    let openai = get(&proxy, "/v1/models", KEY).await.json();
    assert_eq!(openai["object"], "list");
}

#[tokio::test]
async fn gemini3_signatures_ride_in_the_parts_and_come_back_byte_for_byte() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let (_metadata, proxy) = proxy_for(&vertex).await;
    let goog = [("x-goog-api-key", KEY)];
    let path = "/v1beta/models/gemini-3.8-flash:generateContent";
    let tools = json!([{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]);
    let first =
        json!({"contents": [{"role": "user", "parts": [{"text": "Paris"}]}], "tools": tools});
    let answer = send(&proxy, path, &goog, &first.to_string()).await;
    answer.expect(StatusCode::OK);
    let part = answer.json()["candidates"][0]["content"]["parts"][0].clone();
    assert!(part["thoughtSignature"].is_string(), "{part}");
    let response = json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}}]});
    let turn = |part: Value| {
        json!({"contents": [{"role": "user", "parts": [{"text": "Paris"}]}, {"role": "model", "parts": [part]}, response.clone()], "tools": tools})
            .to_string()
    };
    // The SDKs send the part back whole: it passes, byte for byte.
    let second = turn(part.clone());
    let answer = send(&proxy, path, &goog, &second).await;
    answer.expect(StatusCode::OK);
    assert_eq!(vertex.received().pop().unwrap().body, second.as_bytes());
    // Without its signature, the strict stand-in refuses as Vertex does.
    let mut lost = part;
    lost.as_object_mut().unwrap().remove("thoughtSignature");
    let answer = send(&proxy, path, &goog, &turn(lost)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("thought_signature")
    );
}
