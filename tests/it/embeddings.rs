//! Google's embedding models through Vertex's `:predict`, against the stand-in's strict
//! `:predict`: what Vertex received, what the client got back in OpenAI's shape.

use crate::support::*;
use base64::Engine;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

const ALIASES: &str = r#"{"flash":"google/gemini-2.5-flash","embed":"google/gemini-embedding-001","embed-text":"google/text-embedding-005","e5":"intfloat/multilingual-e5-small-maas"}"#;

async fn embeddings(proxy: &impl Served, body: &str) -> Answer {
    post(proxy, "/v1/embeddings", KEY, body).await
}

#[tokio::test]
async fn gemini_embedding_fans_out_one_text_a_call_and_answers_in_input_order() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    let body = r#"{"model":"embed","input":["first text","second","third one here"],"dimensions":4,"task_type":"RETRIEVAL_QUERY"}"#;
    let answer = embeddings(&proxy, body).await;
    answer.expect(StatusCode::OK);
    let json = answer.json();
    assert_eq!(json["object"], "list");
    assert_eq!(json["model"], "embed");
    assert_eq!(
        json["usage"],
        json!({"prompt_tokens": 6, "total_tokens": 6})
    );
    let received = vertex.received();
    assert_eq!(received.len(), 3, "one :predict call per text");
    let mut contents = Vec::new();
    for call in &received {
        assert_eq!(
            call.path,
            "/v1/projects/test-proj/locations/global/publishers/google/models/gemini-embedding-001:predict"
        );
        assert_eq!(
            call.headers["authorization"],
            format!("Bearer {GOOGLE_TOKEN}")
        );
        let sent = call.json();
        assert_eq!(sent["parameters"], json!({"outputDimensionality": 4}));
        assert_eq!(sent["instances"][0]["task_type"], "RETRIEVAL_QUERY");
        contents.push(sent["instances"][0]["content"].as_str().unwrap().to_owned());
    }
    contents.sort();
    assert_eq!(contents, ["first text", "second", "third one here"]);
    // Each answer is the stand-in's vector for its own text, in the order asked.
    for (index, text) in ["first text", "second", "third one here"]
        .iter()
        .enumerate()
    {
        let datum = &json["data"][index];
        assert_eq!(datum["index"], index);
        let digest = vertex_proxy::keys::sha256(text.as_bytes());
        let expected: Vec<f64> = (0..4).map(|i| f64::from(digest[i]) / 256.0).collect();
        assert_eq!(datum["embedding"], json!(expected), "{text}");
    }
}

#[tokio::test]
async fn other_embedding_models_take_every_text_in_one_call_and_base64_is_little_endian_f32() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    let body = r#"{"model":"embed-text","input":["a b","c"],"encoding_format":"base64"}"#;
    let answer = embeddings(&proxy, body).await;
    answer.expect(StatusCode::OK);
    let received = vertex.wait_for(1).await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&received[0].body),
        r#"{"instances":[{"content":"a b"},{"content":"c"}]}"#
    );
    let json = answer.json();
    let encoded = json["data"][1]["embedding"].as_str().expect("base64");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let digest = vertex_proxy::keys::sha256(b"c");
    let expected: Vec<u8> = (0..8)
        .flat_map(|i| (f32::from(digest[i]) / 256.0).to_le_bytes())
        .collect();
    assert_eq!(bytes, expected);
}

#[tokio::test]
async fn bad_inputs_are_refused_before_vertex_and_a_failed_part_fails_the_whole() {
    let vertex = FakeVertex::start_with(|r: &Recorded| {
        if r.json()["instances"][0]["content"] == "poison" {
            google_error(400, "INVALID_ARGUMENT", None)
        } else {
            stand_in(r)
        }
    })
    .await;
    let proxy = in_process_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    let tokens = embeddings(&proxy, r#"{"model":"embed","input":[[1,2,3]]}"#).await;
    tokens.expect(StatusCode::BAD_REQUEST);
    assert!(tokens.error_message().contains("token arrays"));
    let many = format!(
        r#"{{"model":"embed","input":[{}]}}"#,
        vec!["\"x\""; 251].join(",")
    );
    let answer = embeddings(&proxy, &many).await;
    answer.expect(StatusCode::BAD_REQUEST);
    assert!(answer.error_message().contains("at most 250"));
    assert_eq!(vertex.count(), 0);
    let answer = embeddings(&proxy, r#"{"model":"embed","input":["fine","poison"]}"#).await;
    answer.expect(StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"]["code"], "INVALID_ARGUMENT");
    assert!(answer.json().get("data").is_none());
}

#[tokio::test]
async fn other_publishers_keep_vertexs_openai_route_and_chat_is_refused_for_embedding_models() {
    let vertex = FakeVertex::start_with(stand_in).await;
    let proxy = in_process_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    embeddings(&proxy, r#"{"model":"e5","input":"x"}"#)
        .await
        .expect(StatusCode::OK);
    let received = vertex.wait_for(1).await.remove(0);
    assert!(
        received.path.ends_with("/endpoints/openapi/embeddings"),
        "{}",
        received.path
    );
    let chat = post(
        &proxy,
        "/v1/chat/completions",
        KEY,
        r#"{"model":"embed","messages":[]}"#,
    )
    .await;
    chat.expect(StatusCode::BAD_REQUEST);
    assert!(chat.error_message().contains("send it to /v1/embeddings"));
    let _: Value = chat.json();
}

/// A request for `n` texts to `gemini-embedding-001`, one `:predict` call each.
fn many_texts(n: usize) -> String {
    let inputs: Vec<String> = (0..n).map(|i| format!("text number {i}")).collect();
    json!({"model": "embed", "input": inputs}).to_string()
}

/// An embeddings request of `n` texts, its answer's head once it has come.
async fn start_many(proxy: &impl Served, n: usize) -> http::Response<hyper::body::Incoming> {
    let headers = [("x-api-key", KEY), ("content-type", "application/json")];
    start_request(
        Method::POST,
        &proxy.url("/v1/embeddings"),
        &headers,
        many_texts(n),
    )
    .await
}

#[tokio::test]
async fn a_fan_out_has_one_retry_allowance_and_a_429_stops_new_calls() {
    // Each text refused twice, "try again at once", then answered: before, 250 texts made
    // 750 calls, and the request answered 200 as if nothing had happened.
    let refusals = std::sync::Mutex::new(std::collections::HashMap::<String, u32>::new());
    let vertex = FakeVertex::start_with(move |r: &Recorded| {
        let text = r.json()["instances"][0]["content"].to_string();
        let mut refusals = refusals.lock().unwrap();
        let refused = refusals.entry(text).or_default();
        *refused += 1;
        match *refused {
            1 | 2 => google_error(429, "RESOURCE_EXHAUSTED", Some("0")),
            _ => stand_in(r),
        }
    })
    .await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    // The first eight texts' calls and (MAX_ATTEMPTS - 1) x 8 retries among them all: their
    // answers start the client's. Then the next eight, started together, the first of them
    // refused finding the allowance spent: the answer is cut, never a success.
    let response = start_many(&proxy, 250).await;
    // (Should a first text's call find the allowance spent, the 429 comes before the start.)
    let status = response.status();
    let body = within("the cut", response.into_body().collect()).await;
    match status {
        StatusCode::OK => assert!(body.is_err(), "a partial answer passed for a whole one"),
        status => assert_eq!(status, StatusCode::TOO_MANY_REQUESTS),
    }
    let made = vertex.count();
    assert!((3..=8 + 2 * 8 + 8).contains(&made), "{made} calls");
    // The line counts every call started, those the request's end cut short too.
    let line = proxy
        .wait_for_line("the embeddings line", |l| {
            l["httpRequest"]["requestUrl"] == "/v1/embeddings"
        })
        .await;
    let logged = line["upstream_calls"]["made"].as_u64().unwrap() as usize;
    assert!((made..=8 + 2 * 8 + 8).contains(&logged), "{made}: {line}");
    assert_eq!(line["upstream_calls"]["retried"], 16, "{line}");
    proxy.clear_lines();

    // Every text refused, every time: the first calls spend their attempts before the answer
    // has started, and the client has the 429, with its Retry-After.
    vertex.set_behaviour(|_| google_error(429, "RESOURCE_EXHAUSTED", Some("0")));
    let before = vertex.count();
    let answer = embeddings(&proxy, &many_texts(250)).await;
    answer.expect(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "0");
    assert_eq!(answer.json()["error"]["code"], "RESOURCE_EXHAUSTED");
    let made = vertex.count() - before;
    assert!((3..=8 + 2 * 8).contains(&made), "{made} calls");
}

#[tokio::test]
async fn a_429_in_a_fan_out_is_retried_and_the_log_counts_the_calls() {
    let refused = std::sync::atomic::AtomicBool::new(false);
    let vertex = FakeVertex::start_with(move |r: &Recorded| {
        let first = r.json()["instances"][0]["content"] == "text number 3";
        if first && !refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
            google_error(429, "RESOURCE_EXHAUSTED", Some("0"))
        } else {
            stand_in(r)
        }
    })
    .await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    let answer = embeddings(&proxy, &many_texts(20)).await;
    answer.expect(StatusCode::OK);
    assert_eq!(answer.json()["data"].as_array().unwrap().len(), 20);
    assert_eq!(vertex.count(), 21);
    let line = proxy.request_line("/v1/embeddings", 200).await;
    assert_eq!(
        line["upstream_calls"],
        json!({"made": 21, "retried": 1}),
        "{line}"
    );
}

/// Vertex's `:predict` answer with 3,072 long numbers a text, as `gemini-embedding-001`
/// gives at full size: about 60 KB an answer.
fn full_size(r: &Recorded) -> Reply {
    let instances = r.json()["instances"].as_array().unwrap().len();
    let values = vec!["-0.0123456789012345"; 3072].join(",");
    let one = format!(
        r#"{{"embeddings":{{"values":[{values}],"statistics":{{"token_count":3,"truncated":false}}}}}}"#
    );
    let predictions = vec![one; instances].join(",");
    Reply::Json(
        StatusCode::OK,
        format!(r#"{{"predictions":[{predictions}]}}"#),
    )
}

#[tokio::test]
async fn a_client_that_does_not_read_pauses_the_fan_out_and_then_gets_it_all() {
    let vertex = FakeVertex::start_with(full_size).await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    // A client with a small receive window that reads the head and then nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("/v1/embeddings")
        .header("host", "proxy")
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(many_texts(
            250,
        ))))
        .unwrap();
    let response = within("the answer's head", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The answer streams as its pieces are ready: once the connection's buffers are full,
    // no call is running and far fewer than the 250 have been made (about 15 MB of answer).
    vertex.wait_for(16).await;
    vertex.wait_until_idle().await;
    let paused_at = vertex.count();
    assert!(
        paused_at < 250,
        "{paused_at} calls made for a client that reads nothing"
    );
    // Read, it is whole, and in order.
    let body = within("the rest of the answer", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap();
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len(), 250);
    for (index, datum) in data.iter().enumerate() {
        assert_eq!(datum["index"], index);
        assert_eq!(datum["embedding"].as_array().unwrap().len(), 3072);
    }
    assert_eq!(
        json["usage"],
        json!({"prompt_tokens": 750, "total_tokens": 750})
    );
    assert_eq!(vertex.count(), 250);
}

/// Whether `r` is the call for one of texts 8 to 11.
fn held(r: &Recorded) -> bool {
    let text = r.json()["instances"][0]["content"].to_string();
    (8..12).any(|n| text == format!("\"text number {n}\""))
}

#[tokio::test]
async fn a_client_that_leaves_aborts_the_calls_still_running() {
    // Texts 0 to 7 are answered at once, which starts the answer; 8 to 11 never are.
    let vertex = FakeVertex::start_with(|r: &Recorded| match held(r) {
        true => Reply::Stall,
        false => stand_in(r),
    })
    .await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("MODEL_ALIASES_JSON", ALIASES)]).await;
    let response = start_many(&proxy, 12).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The first eight embeddings, all of them: the proxy has nothing more to send until a
    // held call answers, so nothing it sends can tell it that the client has gone.
    let mut body = response.into_body();
    let mut seen = Vec::new();
    while !seen.windows(10).any(|w| w == b"\"index\":7,") {
        let frame = within("the first eight embeddings", body.frame()).await;
        let data = frame.expect("more of the answer").unwrap().into_data();
        seen.extend_from_slice(&data.unwrap());
    }
    let received = vertex.wait_for(12).await;
    let held: Vec<usize> = (0..12).filter(|&i| held(&received[i])).collect();
    assert_eq!(held.len(), 4);
    drop(body);
    // The four held calls are given up, though no answer of theirs ever comes.
    let mut cancelled = vertex.wait_for_cancelled(4).await;
    cancelled.sort();
    assert_eq!(cancelled, held);
    let line = proxy
        .wait_for_line("the embeddings line", |l| {
            l["httpRequest"]["requestUrl"] == "/v1/embeddings"
        })
        .await;
    assert_eq!(line["cancelled"], true, "{line}");
    assert_eq!(line["upstream_calls"]["made"], 12, "{line}");
}
