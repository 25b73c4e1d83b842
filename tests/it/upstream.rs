//! The proxy's connections to the upstream, seen from the fake's side: TLS with HTTP/2 by
//! ALPN (production's path to Vertex, through `UPSTREAM_CA_FILE`), HTTP/1.1 reuse, and
//! cancellation when a client leaves.

use crate::support::*;
use bytes::Bytes;
use http::{StatusCode, Version};
use http_body_util::BodyExt;
use http_body_util::channel::{Channel, Sender};
use hyper::body::Incoming;
use tokio::sync::mpsc;

/// Each stream's sender at the fake, with the request's `user` field, if any.
type Senders = mpsc::UnboundedReceiver<(String, Sender<Bytes>)>;

/// An SSE stream of its own for every request, its sender handed to the test.
fn stream_each(
    senders: mpsc::UnboundedSender<(String, Sender<Bytes>)>,
) -> impl Fn(&Recorded) -> Reply {
    move |request| {
        let (tx, body) = Channel::new(1);
        let user = request.json()["user"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let _ = senders.send((user, tx));
        Reply::Channel(StatusCode::OK, "text/event-stream", body)
    }
}

/// The proxy in process, trusting the TLS fake's CA.
async fn proxy_in_front_of(base_url: &str) -> InProcess {
    let metadata = FakeMetadata::start().await;
    let mut env = env_with_base_url(&metadata, base_url);
    env.insert("UPSTREAM_CA_FILE".into(), TEST_CA_FILE.into());
    InProcess::start(&env).await
}

/// Starts a stream, then sends chunks one at a time and checks each reaches the client before
/// the next exists: nothing on the way buffers. The first goes with the start, since the
/// proxy holds a stream's head until its first event.
async fn relayed(proxy: &InProcess, senders: &mut Senders) -> (Sender<Bytes>, Incoming) {
    let (response, mut tx) = tokio::join!(start_stream(proxy), async {
        let (_, mut tx) = within("the stream at the fake", senders.recv())
            .await
            .unwrap();
        tx.send_data(Bytes::from("data: 1\n\n")).await.unwrap();
        tx
    });
    let mut body = response.into_body();
    for n in 1..=3 {
        let chunk = Bytes::from(format!("data: {n}\n\n"));
        if n > 1 {
            tx.send_data(chunk.clone()).await.unwrap();
        }
        let frame = within("a chunk", body.frame()).await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), chunk);
    }
    (tx, body)
}

#[tokio::test]
async fn vertex_over_tls_gets_http2_streams_unbuffered_and_cancelled() {
    let (senders_tx, mut senders) = mpsc::unbounded_channel();
    let vertex = FakeVertex::start_tls_with(stream_each(senders_tx)).await;
    let base_url = format!("https://localhost:{}", vertex.addr.port());
    let proxy = proxy_in_front_of(&base_url).await;

    let (_tx, body) = relayed(&proxy, &mut senders).await;
    let seen = vertex.received().remove(0);
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {GOOGLE_TOKEN}")
    );
    // A client that leaves resets the stream upstream: the fake's body is dropped.
    drop(body);
    vertex.wait_for_cancelled(1).await;
    assert_eq!(vertex.cancelled(), [0]);

    // The next request is another stream on the same connection.
    let (tx, mut body) = relayed(&proxy, &mut senders).await;
    drop(tx);
    assert!(within("the end", body.frame()).await.is_none());
    assert_eq!(vertex.received()[1].version, Version::HTTP_2);
    assert_eq!(vertex.connections(), 1);
}

#[tokio::test]
async fn http1_connections_are_reused_and_a_cut_one_is_closed() {
    let (senders_tx, mut senders) = mpsc::unbounded_channel();
    let vertex = FakeVertex::start_with(stream_each(senders_tx)).await;
    let proxy = proxy_in_front_of(&vertex.base_url()).await;

    // A request line in origin form, with the Host header.
    let (tx, mut body) = relayed(&proxy, &mut senders).await;
    let seen = vertex.received().remove(0);
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(
        seen.path,
        "/v1/projects/test-proj/locations/global/endpoints/openapi/chat/completions"
    );
    assert_eq!(seen.headers["host"], vertex.addr.to_string().as_str());
    drop(tx);
    assert!(within("the end", body.frame()).await.is_none());

    // Read to the end, the connection carries the next request.
    let (_tx, body) = relayed(&proxy, &mut senders).await;
    assert_eq!(vertex.connections(), 1);

    // Dropped mid-body, it is closed: the fake sees the client leave, and the next request
    // gets a new connection.
    drop(body);
    vertex.wait_for_cancelled(1).await;
    assert_eq!(vertex.cancelled(), [1]);
    let (tx, _body) = relayed(&proxy, &mut senders).await;
    drop(tx);
    assert_eq!(vertex.received()[2].connection, 2);
}

#[tokio::test]
async fn a_connection_the_upstream_closes_is_not_used_again() {
    let vertex = FakeVertex::start_with(|r: &Recorded| {
        let model = r.json()["model"].as_str().unwrap_or_default().to_owned();
        Reply::JsonThenClose(StatusCode::OK, completion(&model))
    })
    .await;
    let proxy = proxy_in_front_of(&vertex.base_url()).await;
    for n in 1..=3 {
        assert_eq!(chat_status(&proxy, KEY).await, StatusCode::OK);
        assert_eq!(vertex.received()[n - 1].connection, n);
    }
}

/// Starts `n` streams through the proxy, one client connection each, and returns each one's
/// sender at the fake with its client's body, once every one has reached the fake: all are
/// open upstream at once.
async fn streams_at_once(
    proxy: &impl Served,
    senders: &mut Senders,
    n: usize,
) -> Vec<(Sender<Bytes>, Incoming)> {
    let mut started = Vec::new();
    for stream in 0..n {
        let url = proxy.url("/v1/chat/completions");
        started.push(tokio::spawn(async move {
            let body = format!(r#"{{"model":"flash","stream":true,"user":"{stream}"}}"#);
            start_request(http::Method::POST, &url, &[("x-api-key", KEY)], body).await
        }));
    }
    let mut open = Vec::new();
    for _ in 0..n {
        open.push(
            within("every stream to reach the fake", senders.recv())
                .await
                .unwrap(),
        );
    }
    // In the order they were started, which the fake's arrival order need not be.
    open.sort_by_key(|(user, _)| user.clone());
    // Each sends a first event, with which the proxy sends the head; the client reads it.
    let mut streams = Vec::new();
    for ((_, mut tx), response) in open.into_iter().zip(started) {
        tx.send_data(Bytes::from("data: open\n\n")).await.unwrap();
        let mut body = within("a response head", response)
            .await
            .unwrap()
            .into_body();
        let first = within("the first event", body.frame())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "data: open\n\n");
        streams.push((tx, body));
    }
    streams
}

#[tokio::test]
async fn past_the_peers_stream_limit_more_connections_are_opened() {
    let (senders_tx, mut senders) = mpsc::unbounded_channel();
    // As Google's front ends do at 100, the fake allows 2 streams a connection.
    let vertex = FakeVertex::start_tls_limited(2, stream_each(senders_tx)).await;
    // By address: the test certificate names 127.0.0.1 as well as localhost.
    let proxy = proxy_in_front_of(&format!("https://{}", vertex.addr)).await;
    // One stream first: its connection's limit is then known.
    let mut streams = streams_at_once(&proxy, &mut senders, 1).await;
    // Nine more, and all ten slow streams are open upstream at once: none waits behind another.
    streams.extend(streams_at_once(&proxy, &mut senders, 9).await);
    let received = vertex.received();
    assert!(received.iter().all(|r| r.version == Version::HTTP_2));
    let mut per_connection = std::collections::BTreeMap::<usize, usize>::new();
    for request in &received {
        *per_connection.entry(request.connection).or_default() += 1;
    }
    assert!(
        per_connection.values().all(|&n| n <= 2),
        "{per_connection:?}"
    );
    // The first connection, whose limit was known, took a second stream.
    assert_eq!(per_connection[&1], 2, "{per_connection:?}");
    // Each stream makes progress while all are open.
    for (n, (tx, _)) in streams.iter_mut().enumerate() {
        tx.send_data(Bytes::from(format!("data: {n}\n\n")))
            .await
            .unwrap();
    }
    for (n, (_, mut body)) in streams.into_iter().enumerate() {
        let chunk = within("a chunk", body.frame()).await.unwrap().unwrap();
        assert_eq!(chunk.into_data().unwrap(), format!("data: {n}\n\n"));
    }
}

#[tokio::test]
async fn at_the_connection_cap_a_stream_waits_and_its_log_line_says_so() {
    let (senders_tx, mut senders) = mpsc::unbounded_channel();
    let vertex = FakeVertex::start_tls_limited(1, stream_each(senders_tx)).await;
    let metadata = FakeMetadata::start().await;
    let base_url = format!("https://localhost:{}", vertex.addr.port());
    let mut env = env_with_base_url(&metadata, &base_url);
    env.insert("UPSTREAM_CA_FILE".into(), TEST_CA_FILE.into());
    env.insert("MAX_UPSTREAM_CONNECTIONS".into(), "1".into());
    env.insert("WORKER_THREADS".into(), "1".into());
    let proxy = spawn(&env).await;
    let (first_tx, first) = streams_at_once(&proxy, &mut senders, 1).await.remove(0);
    // The one connection is at its one stream: the next request waits for it.
    let waiting = tokio::spawn(start_stream_at(proxy.url("/v1/chat/completions")));
    // The waiting request leaves no trace until it is sent, so there is no signal to wait
    // for: this pause lets it reach the pool. Too short a pause fails the test, never passes
    // it.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    drop((first_tx, first));
    let second = within("the waiting stream", senders.recv()).await.unwrap();
    drop(second);
    drop(within("its response", waiting).await.unwrap());
    let line = proxy
        .wait_for_line("the queued request's line", |l| {
            l["upstream_queued"] == true
        })
        .await;
    assert_eq!(line["httpRequest"]["requestUrl"], "/v1/chat/completions");
    assert_eq!(vertex.connections(), 1);
}

async fn start_stream_at(url: String) -> http::Response<Incoming> {
    let body = r#"{"model":"flash","stream":true}"#;
    start_request(http::Method::POST, &url, &[("x-api-key", KEY)], body).await
}

#[tokio::test]
async fn clients_that_stop_reading_do_not_stall_the_other_streams() {
    let (senders_tx, mut senders) = mpsc::unbounded_channel();
    let vertex = FakeVertex::start_tls_limited(4, stream_each(senders_tx)).await;
    let proxy = proxy_in_front_of(&format!("https://localhost:{}", vertex.addr.port())).await;
    let mut streams = streams_at_once(&proxy, &mut senders, 1).await;
    streams.extend(streams_at_once(&proxy, &mut senders, 3).await);
    // Four streams on one connection.
    assert!(vertex.received().iter().all(|r| r.connection == 1));
    let (mut live_tx, mut live_body) = streams.pop().unwrap();
    // Three clients stop reading while their answers keep coming, until the proxy stops
    // taking them (a send that does not complete in a second is taken as stopped).
    let mut pushers = Vec::new();
    for (mut tx, body) in streams {
        pushers.push(tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let mut pushed = 0usize;
            while pushed < 64 * 1024 * 1024 {
                let send = tx.send_data(chunk.clone());
                match tokio::time::timeout(std::time::Duration::from_secs(1), send).await {
                    Ok(sent) => sent.unwrap(),
                    Err(_) => break,
                }
                pushed += chunk.len();
            }
            (tx, body, pushed)
        }));
    }
    let mut stalled = Vec::new();
    for pusher in pushers {
        stalled.push(within("a reader to stall", pusher).await.unwrap());
    }
    // The fourth still gets its answer: the stalled ones have not used up the connection.
    for n in 0..3 {
        let chunk = Bytes::from(format!("data: {n}\n\n"));
        live_tx.send_data(chunk.clone()).await.unwrap();
        let frame = within("the live stream's chunk", live_body.frame())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), chunk);
    }
    drop(stalled);
}

#[tokio::test]
async fn the_upstream_connection_is_opened_at_startup_and_the_first_request_uses_it() {
    let (senders_tx, mut senders) = mpsc::unbounded_channel();
    let vertex = FakeVertex::start_tls_with(stream_each(senders_tx)).await;
    let metadata = FakeMetadata::start().await;
    let mut env = env_with_base_url(
        &metadata,
        &format!("https://localhost:{}", vertex.addr.port()),
    );
    env.insert("UPSTREAM_CA_FILE".into(), TEST_CA_FILE.into());
    env.insert("UPSTREAM_PRECONNECT".into(), "true".into());
    let proxy = InProcess::start(&env).await;
    // Before any request, the connection (TCP, TLS, HTTP/2) is there.
    vertex.wait_for_connections(1).await;
    assert_eq!(vertex.count(), 0);
    drop(relayed(&proxy, &mut senders).await);
    assert_eq!(vertex.received()[0].connection, 1);
    assert_eq!(vertex.connections(), 1);
}
