//! The proxy's connections to the upstream, seen from the fake's side: TLS with HTTP/2 by
//! ALPN (production's path to Vertex, through `UPSTREAM_CA_FILE`), HTTP/1.1 reuse, and
//! cancellation when a client leaves.

mod support;

use bytes::Bytes;
use http::{StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::*;
use tokio::sync::mpsc;

type Senders = mpsc::UnboundedReceiver<mpsc::Sender<Bytes>>;

/// An SSE stream of its own for every request, its sender handed to the test.
fn stream_each(senders: mpsc::UnboundedSender<mpsc::Sender<Bytes>>) -> impl Fn(&Recorded) -> Reply {
    move |_| {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        let _ = senders.send(tx);
        Reply::Channel(StatusCode::OK, "text/event-stream", rx)
    }
}

/// The proxy in process, trusting the TLS fake's CA.
async fn proxy_in_front_of(base_url: &str) -> InProcess {
    let metadata = FakeMetadata::start().await;
    let mut env = env_with_base_url(&metadata, base_url);
    env.insert("UPSTREAM_CA_FILE".into(), TEST_CA_FILE.into());
    InProcess::start(&env).await
}

/// Sends chunks one at a time and checks each reaches the client before the next exists:
/// nothing on the way buffers.
async fn relay(senders: &mut Senders, body: &mut Incoming) -> mpsc::Sender<Bytes> {
    let tx = within("the stream at the fake", senders.recv())
        .await
        .unwrap();
    for n in 1..=3 {
        let chunk = Bytes::from(format!("data: {n}\n\n"));
        tx.send(chunk.clone()).await.unwrap();
        let frame = within("a chunk", body.frame()).await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), chunk);
    }
    tx
}

#[tokio::test]
async fn vertex_over_tls_gets_http2_streams_unbuffered_and_cancelled() {
    let (senders_tx, mut senders) = mpsc::unbounded_channel();
    let vertex = FakeVertex::start_tls_with(stream_each(senders_tx)).await;
    let base_url = format!("https://localhost:{}", vertex.addr.port());
    let proxy = proxy_in_front_of(&base_url).await;

    let mut body = start_stream(&proxy).await.into_body();
    let tx = relay(&mut senders, &mut body).await;
    let seen = vertex.received().remove(0);
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {GOOGLE_TOKEN}")
    );
    // A client that leaves resets the stream upstream: the fake's body is dropped.
    drop(body);
    within("the upstream stream to be cancelled", tx.closed()).await;
    assert_eq!(vertex.cancelled(), [0]);

    // The next request is another stream on the same connection.
    let mut body = start_stream(&proxy).await.into_body();
    drop(relay(&mut senders, &mut body).await);
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
    let mut body = start_stream(&proxy).await.into_body();
    let tx = relay(&mut senders, &mut body).await;
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
    let mut body = start_stream(&proxy).await.into_body();
    let tx = relay(&mut senders, &mut body).await;
    assert_eq!(vertex.connections(), 1);

    // Dropped mid-body, it is closed: the fake sees the client leave, and the next request
    // gets a new connection.
    drop(body);
    within("the upstream request to be cancelled", tx.closed()).await;
    assert_eq!(vertex.cancelled(), [1]);
    let mut body = start_stream(&proxy).await.into_body();
    drop(relay(&mut senders, &mut body).await);
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
