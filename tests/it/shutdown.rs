//! Shutdown: a stream in flight finishes whole or is cut at the deadline, and under load 200
//! SSE streams in flight when the signal comes, over HTTP/1.1 and over one h2c connection
//! whose streams run on several worker threads.

use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::channel::Sender;

const STREAMS: usize = 200;
const GRACE_SECS: u64 = 3;

fn chunk(stream: usize, n: usize) -> String {
    format!("data: {{\"stream\":{stream},\"chunk\":{n}}}\n\n")
}

/// Starts stream `i` (`start` resolves to its response head), has the fake send its first
/// chunk, and checks the client got it: a stream provably in flight. The head comes with the
/// first event (the proxy holds a stream until then), so both run together.
async fn first_chunk(
    i: usize,
    start: impl std::future::Future<Output = http::Response<hyper::body::Incoming>>,
    senders: &mut tokio::sync::mpsc::UnboundedReceiver<Sender<Bytes>>,
) -> (Sender<Bytes>, hyper::body::Incoming) {
    let (response, tx) = tokio::join!(start, async {
        let mut tx = within("the fake to get the stream", senders.recv())
            .await
            .unwrap();
        tx.send_data(Bytes::from(chunk(i, 0))).await.unwrap();
        tx
    });
    let mut body = response.into_body();
    let first = within("a first chunk", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), chunk(i, 0));
    (tx, body)
}

/// Sends four more chunks on every stream, ends it, and checks each client got exactly them.
async fn finish_byte_exact(streams: Vec<(Sender<Bytes>, hyper::body::Incoming)>) {
    let mut readers = Vec::new();
    for (i, (mut tx, body)) in streams.into_iter().enumerate() {
        readers.push(tokio::spawn(async move {
            for n in 1..5 {
                tx.send_data(Bytes::from(chunk(i, n))).await.unwrap();
            }
            drop(tx);
            (i, body.collect().await.map(|c| c.to_bytes()))
        }));
    }
    for reader in readers {
        let (i, rest) = within("a stream to finish", reader).await.unwrap();
        let expected: String = (1..5).map(|n| chunk(i, n)).collect();
        assert_eq!(
            rest.expect("a whole stream"),
            expected,
            "stream {i} was not byte-exact"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_200_streams_in_flight() {
    let (vertex, mut senders) = FakeVertex::streams().await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    env.insert("SHUTDOWN_GRACE_SECS".into(), GRACE_SECS.to_string());
    // Eight copies of the listening socket, all closed before the shutdown line.
    env.insert("WORKER_THREADS".into(), "8".into());
    let mut proxy = spawn(&env).await;

    // Open every stream and see its first chunk, so all are in flight at the signal.
    let mut bodies = Vec::new();
    let mut upstream = Vec::new();
    for i in 0..STREAMS {
        let (tx, body) = first_chunk(i, start_stream(&proxy), &mut senders).await;
        bodies.push(body);
        upstream.push(tx);
    }

    let signalled = Instant::now();
    proxy.terminate_and_wait_for_drain().await;
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "a new connection was accepted after SIGTERM"
    );

    // All but the last stream finish within the grace period; the last never does.
    let stuck = upstream.pop().unwrap();
    let stuck_body = bodies.pop().unwrap();
    finish_byte_exact(upstream.into_iter().zip(bodies).collect()).await;
    let cut = within("the stuck stream to be cut", stuck_body.collect()).await;
    assert!(
        cut.is_err(),
        "the stream still running at the deadline must be cut"
    );

    let status = proxy.exited().await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    // The issue's bound: the grace period plus one second.
    assert!(
        took < Duration::from_secs(GRACE_SECS + 1),
        "exited {took:?} after SIGTERM"
    );
    drop(stuck);

    let lines = proxy.lines();
    let requests: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["httpRequest"]["requestUrl"] == "/v1/chat/completions")
        .collect();
    let cancelled = requests.iter().filter(|l| l["cancelled"] == true).count();
    assert_eq!(requests.len(), STREAMS, "every stream has its log line");
    assert_eq!(cancelled, 1, "only the stuck stream was cut");
    assert!(lines.iter().any(|l| l.contains("grace period over")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_h2c_streams_spread_over_worker_threads() {
    const H2_STREAMS: usize = 40;
    let (vertex, mut senders) = FakeVertex::streams().await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    env.insert("SHUTDOWN_GRACE_SECS".into(), "10".into());
    // The connection lives on one worker; its streams are spread over all four. Workers
    // with no connection of their own must keep running until those streams are done.
    env.insert("WORKER_THREADS".into(), "4".into());
    let mut proxy = spawn(&env).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("an h2c handshake");
    tokio::spawn(connection);

    let mut streams = Vec::new();
    for i in 0..H2_STREAMS {
        let request = http::Request::post(proxy.url("/v1/chat/completions"))
            .header("x-api-key", KEY)
            .body(http_body_util::Full::new(Bytes::from(
                r#"{"model":"flash","stream":true}"#,
            )))
            .unwrap();
        let start = async {
            let response = within("an h2c stream", sender.clone().send_request(request))
                .await
                .unwrap();
            assert_eq!(response.version(), http::Version::HTTP_2);
            response
        };
        streams.push(first_chunk(i, start, &mut senders).await);
    }

    proxy.terminate_and_wait_for_drain().await;
    finish_byte_exact(streams).await;
    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(0));
    let lines = proxy.lines();
    assert!(
        lines.iter().any(|l| l.contains("all requests finished")),
        "{lines:?}"
    );
    let cancelled = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["cancelled"] == true)
        .count();
    assert_eq!(cancelled, 0, "a stream was cut");
}

/// A platform may stop an instance the moment it is up. SIGTERM must never find the process
/// without its handler: once the "listening" line is out, it is a clean, drained exit.
#[tokio::test]
async fn sigterm_as_soon_as_it_listens_is_a_clean_stop() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    // Many workers make start-up after the "listening" line long enough to hit, every time,
    // a handler installed late.
    env.insert("WORKER_THREADS".into(), "64".into());
    for _ in 0..3 {
        let mut proxy = spawn(&env).await;
        let (code, stderr) = proxy.stop().await;
        assert_eq!(code, Some(0), "killed by the signal, not stopped: {stderr}");
        proxy
            .wait_for_line("the drain's last line", |l| {
                l["message"] == "shutdown: all requests finished"
            })
            .await;
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_a_stream_finish_whole() {
    let (vertex, mut tx) = FakeVertex::streaming().await;
    let metadata = FakeMetadata::start().await;
    let mut proxy = spawn(&env(&vertex, &metadata)).await;
    let body = stream_in_flight(&proxy, &mut tx).await;

    proxy.terminate_and_wait_for_drain().await;
    // New connections are refused once the signal has been handled.
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err());

    // The stream in flight carries on to its end.
    tx.send_data(Bytes::from("data: two\n\n")).await.unwrap();
    tx.send_data(Bytes::from("data: [DONE]\n\n")).await.unwrap();
    drop(tx);
    let rest = within("the rest of the stream", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "data: two\n\ndata: [DONE]\n\n");
    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(0));
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert!(line.get("cancelled").is_none(), "{line}");
    assert!(
        proxy
            .lines()
            .iter()
            .any(|l| l.contains("all requests finished"))
    );
}

#[tokio::test]
async fn a_stream_still_running_at_the_deadline_is_cut() {
    let (vertex, mut tx) = FakeVertex::streaming().await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    env.insert("SHUTDOWN_GRACE_SECS".into(), "1".into());
    let mut proxy = spawn(&env).await;
    let body = stream_in_flight(&proxy, &mut tx).await;
    proxy.terminate();
    // Vertex never finishes; the proxy must still exit, and the client sees a cut stream.
    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(0));
    let end = within("the client's stream to end", body.collect()).await;
    assert!(end.is_err(), "a cut stream must not look complete");
    assert!(
        proxy
            .lines()
            .iter()
            .any(|l| l.contains("grace period over"))
    );
    drop(tx);
}

#[tokio::test]
async fn a_connection_that_has_sent_nothing_does_not_hold_up_the_stop() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let mut proxy = spawn(&env(&vertex, &metadata)).await;
    // Open, and silent: no request is in flight on it.
    let _silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let health = get(&proxy, "/health", "").await;
    assert_eq!(health.status, http::StatusCode::OK);
    proxy.terminate();
    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(0));
    // Not "grace period over": nothing was in flight, so nothing was waited for.
    assert!(
        proxy
            .lines()
            .iter()
            .any(|l| l.contains("all requests finished")),
        "{:#?}",
        proxy.lines()
    );
}

#[tokio::test]
async fn sigterm_during_a_retry_wait_answers_at_once_with_the_last_error() {
    // Vertex says "not now, in 9 s": the proxy would wait past the grace period.
    let vertex =
        FakeVertex::start_with(|_| google_error(429, "RESOURCE_EXHAUSTED", Some("9"))).await;
    let (_metadata, mut proxy) = spawn_with(&vertex, &[("SHUTDOWN_GRACE_SECS", "8")]).await;
    let url = proxy.url("/v1/chat/completions");
    let answer = tokio::spawn(async move {
        let headers = [("x-api-key", KEY), ("content-type", "application/json")];
        request(http::Method::POST, &url, &headers, CHAT).await
    });
    vertex.wait_for(1).await;
    proxy.terminate();
    // The wait ends, no other attempt starts, and the client has Vertex's own answer.
    let answer = within("the answer", answer).await.unwrap();
    assert_eq!(answer.status, http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "9");
    assert_eq!(answer.json()["error"]["code"], "RESOURCE_EXHAUSTED");
    assert_eq!(vertex.count(), 1);
    let line = proxy.request_line("/v1/chat/completions", 429).await;
    assert_eq!(line["ended_by"], "shutdown", "{line}");
    assert_eq!(proxy.exited().await.code(), Some(0));
    assert!(
        proxy
            .lines()
            .iter()
            .any(|l| l.contains("all requests finished"))
    );
}

#[tokio::test]
async fn sigterm_during_an_embeddings_fan_out_starts_no_more_calls() {
    // Each :predict call takes a while; eight run at once, of the twenty needed.
    let vertex = FakeVertex::start_with(|r: &Recorded| {
        Reply::Late(Duration::from_millis(300), Box::new(stand_in(r)))
    })
    .await;
    let aliases = r#"{"flash":"google/gemini-2.5-flash","embed":"google/gemini-embedding-001"}"#;
    let (_metadata, mut proxy) = spawn_with(&vertex, &[("MODEL_ALIASES_JSON", aliases)]).await;
    let inputs: Vec<String> = (0..20).map(|i| format!("text {i}")).collect();
    let body = serde_json::json!({"model": "embed", "input": inputs}).to_string();
    let url = proxy.url("/v1/embeddings");
    let answer = tokio::spawn(async move {
        let headers = [("x-api-key", KEY), ("content-type", "application/json")];
        request(http::Method::POST, &url, &headers, body).await
    });
    vertex.wait_for(8).await;
    proxy.terminate();
    let answer = within("the answer", answer).await.unwrap();
    assert_eq!(answer.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["retry-after"], "1");
    let message = answer.error_message();
    assert!(message.contains("shutting down"), "{message}");
    assert_eq!(vertex.count(), 8, "no call started after the signal");
    let line = proxy.request_line("/v1/embeddings", 503).await;
    assert_eq!(line["ended_by"], "shutdown", "{line}");
    assert_eq!(proxy.exited().await.code(), Some(0));
}
