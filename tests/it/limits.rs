//! Timeouts and limits: a stalled Vertex, slow clients, and the connection cap.

use crate::support::*;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the proxy closes the connection, and returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let _ = within(
        "the proxy to close the connection",
        stream.read_to_end(&mut received),
    )
    .await;
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_vertex_that_goes_silent_mid_stream_is_cut_and_logged() {
    let (vertex, mut tx) = FakeVertex::streaming().await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("UPSTREAM_IDLE_TIMEOUT_SECS", "1")]).await;
    let body = stream_in_flight(&proxy, &mut tx).await;
    // Vertex now says nothing more: the client's stream must end as a cut stream.
    let end = within("the cut", body.collect()).await;
    assert!(end.is_err(), "a stalled stream must not end as a success");
    // The upstream request was dropped with it.
    assert_eq!(vertex.wait_for_cancelled(1).await, [0]);
    let line = proxy.request_line("/v1/chat/completions", 200).await;
    assert!(
        line["stream_error"]
            .as_str()
            .unwrap()
            .contains("UPSTREAM_IDLE_TIMEOUT_SECS"),
        "{line}"
    );
    assert_eq!(line["severity"], "ERROR");
}

#[tokio::test]
async fn a_vertex_that_never_answers_is_a_504() {
    let vertex = FakeVertex::start_with(|_| Reply::Stall).await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("UPSTREAM_IDLE_TIMEOUT_SECS", "1")]).await;
    let answer = post(&proxy, "/v1/chat/completions", KEY, CHAT).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(answer.error_message().contains("did not answer within 1s"));
}

#[tokio::test]
async fn slow_headers_lose_the_connection() {
    let vertex = FakeVertex::start().await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-api-key: ")
        .await
        .unwrap();
    // ... and never the rest. The proxy hangs up (hyper may say 408 first).
    let received = read_to_close(&mut stream).await;
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received}"
    );
    assert_eq!(vertex.count(), 0);
}

#[tokio::test]
async fn a_kept_alive_connection_has_the_header_timeout_for_its_next_request() {
    let vertex = FakeVertex::start().await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // One whole request, answered; then half of the next one's head, and never the rest.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\nGET /health HTTP/1.1\r\nhos")
        .await
        .unwrap();
    let received = read_to_close(&mut stream).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert_eq!(received.matches("HTTP/1.1").count(), 1, "{received}");
}

#[tokio::test]
async fn a_response_in_progress_outlasts_the_header_timeout() {
    let (vertex, mut tx) = FakeVertex::streaming().await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut body = stream_in_flight(&proxy, &mut tx).await;
    // Past the header timeout, the HTTP/1.1 connection is busy with this stream, not idle.
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(1500), body.frame()).await;
    assert!(quiet.is_err(), "the stream ended: {quiet:?}");
    tx.send_data(Bytes::from("data: two\n\n")).await.unwrap();
    drop(tx);
    let rest = within("the rest", body.collect()).await.unwrap().to_bytes();
    assert_eq!(rest, "data: two\n\n");
}

#[tokio::test]
async fn a_trickled_body_gets_a_408() {
    let vertex = FakeVertex::start().await;
    let (_metadata, proxy) = spawn_with(&vertex, &[("BODY_READ_TIMEOUT_SECS", "1")]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\ncontent-length: 100\r\n\r\n{{\"model\":"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let received = read_to_close(&mut stream).await;
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    assert!(received.contains("BODY_READ_TIMEOUT_SECS"), "{received}");
    assert_eq!(vertex.count(), 0);
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let vertex = FakeVertex::start().await;
    // Four workers share the one cap: a cap per worker would let eight in.
    let (_metadata, proxy) = spawn_with(
        &vertex,
        &[("MAX_CONNECTIONS", "2"), ("WORKER_THREADS", "4")],
    )
    .await;
    let first = TcpStream::connect(proxy.addr).await.unwrap();
    let _second = TcpStream::connect(proxy.addr).await.unwrap();
    // A third client: its connection waits in the listen queue, unserved.
    let third = tokio::spawn({
        let url = proxy.url("/healthz");
        async move { request(http::Method::GET, &url, &[], Bytes::new()).await }
    });
    proxy
        .wait_for_line("the connection-limit warning", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("MAX_CONNECTIONS=2"))
        })
        .await;
    assert!(!third.is_finished(), "served beyond the cap");
    // One connection closes; the waiting client is served.
    drop(first);
    let answer = within("the third client", third).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn the_descriptor_limit_is_raised_to_the_hard_limit() {
    // Start the proxy under a low soft limit, as on many hosts (1024), and read its limits.
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let env = env(&vertex, &metadata);
    let mut child = tokio::process::Command::new("bash")
        .args([
            "-c",
            "ulimit -Sn 256 && exec \"$0\"",
            env!("CARGO_BIN_EXE_vertex-proxy"),
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .envs(&env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    within(
        "the startup line",
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut first),
    )
    .await
    .unwrap();
    assert!(first.contains("\"listen\""), "{first}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id().unwrap())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft limit not raised: {line}");
    assert_ne!(numbers[0], "256", "{line}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_huge_user_agent_makes_a_short_log_line() {
    let vertex = FakeVertex::start().await;
    let (_metadata, proxy) = spawn_with(&vertex, &[]).await;
    // As large as a head may be (72 KiB in all; a larger one is 431 before any log line).
    let agent = "a".repeat(60 * 1024);
    let answer = request(
        http::Method::GET,
        &proxy.url("/health"),
        &[("user-agent", &agent)],
        Bytes::new(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let line = proxy.request_line("/health", 200).await;
    let text = line.to_string();
    assert!(text.len() < 4 * 1024, "a {} byte log line", text.len());
    let logged = line["httpRequest"]["userAgent"].as_str().unwrap();
    assert!(
        logged.ends_with("…[truncated from 61440 bytes]"),
        "{logged}"
    );
    assert_eq!(line["message"], "GET 200");
}

#[tokio::test]
async fn connections_that_never_send_a_request_are_closed() {
    let vertex = FakeVertex::start().await;
    let settings = [("HEADER_READ_TIMEOUT_SECS", "1"), ("MAX_CONNECTIONS", "2")];
    let proxy = in_process_with(&vertex, &settings).await;
    // One says nothing at all; one sends part of the h2 preface and stops: neither protocol
    // has begun, so hyper's own header timeout has not either.
    let mut silent = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut partial = TcpStream::connect(proxy.addr()).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert_eq!(read_to_close(&mut silent).await, "");
    assert_eq!(read_to_close(&mut partial).await, "");
    // They held both connection slots; now a request gets one.
    let health = request(http::Method::GET, &proxy.url("/health"), &[], Bytes::new()).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn an_idle_h2c_connection_is_closed_and_a_busy_one_is_not() {
    let (vertex, mut tx) = FakeVertex::streaming().await;
    let settings = [("IDLE_CONNECTION_TIMEOUT_SECS", "1")];
    let proxy = in_process_with(&vertex, &settings).await;
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let mut connection = tokio::spawn(connection);
    // The first event goes first: the proxy holds a stream's head until it comes.
    tx.send_data(Bytes::from("data: one\n\n")).await.unwrap();
    let stream = http::Request::post(proxy.url("/v1/chat/completions"))
        .header("x-api-key", KEY)
        .body(http_body_util::Full::new(Bytes::from(
            r#"{"model":"flash","stream":true}"#,
        )))
        .unwrap();
    let response = within("the stream", sender.send_request(stream))
        .await
        .unwrap();
    // Open past the idle limit, the stream keeps the connection.
    let mut body = response.into_body();
    within("a chunk", body.frame()).await.unwrap().unwrap();
    let busy = tokio::time::timeout(std::time::Duration::from_millis(1500), &mut connection).await;
    assert!(busy.is_err(), "a connection with an open stream was closed");
    tx.send_data(Bytes::from("data: two\n\n")).await.unwrap();
    drop(tx);
    assert_eq!(
        within("the rest", body.collect()).await.unwrap().to_bytes(),
        "data: two\n\n"
    );
    // With no stream open, it is closed.
    within("the idle connection to close", connection)
        .await
        .unwrap()
        .expect("a graceful close: GOAWAY, not a cut");
}

#[tokio::test]
async fn bodies_past_the_memory_budget_wait_then_get_503_and_the_budget_comes_back() {
    let vertex = FakeVertex::start().await;
    let settings = [
        ("MAX_BODY_BYTES", "1000"),
        ("MAX_BUFFERED_BYTES", "1000"),
        // This body stays unfinished on purpose, for as long as the test needs.
        ("MIN_BODY_BYTES_PER_SEC", "0"),
    ];
    let proxy = in_process_with(&vertex, &settings).await;
    // A body of 800 declared bytes, of which 790 are sent: their share is held.
    let large = format!(r#"{{"model":"flash","pad":"{}"}}"#, "x".repeat(800 - 26));
    assert_eq!(large.len(), 800);
    let mut slow = TcpStream::connect(proxy.addr()).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: p\r\nx-api-key: {KEY}\r\ncontent-length: 800\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&large.as_bytes()[..790]).await.unwrap();
    // Another key's 400 bytes do not fit beside it: once the slow one holds its share, a
    // wait, then 503 with Retry-After.
    let other = format!(r#"{{"model":"flash","pad":"{}"}}"#, "y".repeat(400 - 26));
    let refused = within("a refusal", async {
        loop {
            let answer = post(&proxy, "/v1/chat/completions", KEY_HASHED, &other).await;
            if answer.status == StatusCode::SERVICE_UNAVAILABLE {
                return answer;
            }
            assert_eq!(answer.status, StatusCode::OK);
        }
    })
    .await;
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.json()["error"]["code"], "proxy_busy");
    let message = refused.error_message();
    assert!(
        message.contains("(1000 bytes, MAX_BUFFERED_BYTES)"),
        "{message}"
    );
    // The slow one finishes; its share comes back, and the other fits.
    slow.write_all(&large.as_bytes()[790..]).await.unwrap();
    let answer = read_to_close_or_response(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let again = post(&proxy, "/v1/chat/completions", KEY_HASHED, &other).await;
    assert_eq!(again.status, StatusCode::OK);
}

/// `n` bytes of a chat request for `flash`, `pad` filling it.
fn chat_of(n: usize, pad: char) -> String {
    let body = format!(
        r#"{{"model":"flash","pad":"{}"}}"#,
        pad.to_string().repeat(n - 26)
    );
    assert_eq!(body.len(), n);
    body
}

#[tokio::test]
async fn a_declared_length_reserves_nothing_and_a_trickle_is_cut() {
    let vertex = FakeVertex::start().await;
    let settings = [
        ("MAX_BODY_BYTES", "65536"),
        ("MAX_BUFFERED_BYTES", "131072"),
    ];
    let (_metadata, proxy) = spawn_with(&vertex, &settings).await;
    // Two connections declare the largest body, send 29 bytes, and go quiet: before, they
    // took the whole budget, for BODY_READ_TIMEOUT_SECS (60 s).
    let mut quiet = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: p\r\nx-api-key: {KEY}\r\ncontent-length: 65536\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
            .write_all(&chat_of(65536, 'q').as_bytes()[..29])
            .await
            .unwrap();
        quiet.push(stream);
    }
    let verdicts = tokio::spawn(async move {
        let mut verdicts = Vec::new();
        for mut stream in quiet {
            verdicts.push(read_to_close(&mut stream).await);
        }
        verdicts
    });
    // Another key's requests are served throughout, until the quiet ones are cut.
    let small = chat_of(1024, 's');
    let mut served = 0;
    within("the trickles to be cut", async {
        while !verdicts.is_finished() {
            let answer = post(&proxy, "/v1/chat/completions", KEY_HASHED, &small).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.error_message());
            served += 1;
        }
    })
    .await;
    assert!(served > 0);
    // Each is cut for its pace, well before BODY_READ_TIMEOUT_SECS, and says why.
    for verdict in verdicts.await.unwrap() {
        assert!(verdict.starts_with("HTTP/1.1 408"), "{verdict}");
        assert!(
            verdict.contains("MIN_BODY_BYTES_PER_SEC (16384)"),
            "{verdict}"
        );
    }
    let line = proxy.request_line("/v1/chat/completions", 408).await;
    assert_eq!(line["error"], "request_timeout");
    // Its share is free: the same key sends the largest body.
    let answer = post(&proxy, "/v1/chat/completions", KEY, &chat_of(65536, 'l')).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn one_key_holds_at_most_its_share_and_the_others_are_served() {
    // Bodies that say "hold" are refused 429 for a while, and held through the wait.
    let vertex = FakeVertex::start_with(|r: &Recorded| {
        if memchr::memmem::find(&r.body, b"hold").is_some() {
            google_error(429, "RESOURCE_EXHAUSTED", Some("9"))
        } else {
            Reply::Json(StatusCode::OK, completion("google/gemini-2.5-flash"))
        }
    })
    .await;
    let settings = [
        ("MAX_BODY_BYTES", "65536"),
        ("MAX_BUFFERED_BYTES", "131072"),
        ("MAX_ATTEMPTS", "2"),
    ];
    let proxy = in_process_with(&vertex, &settings).await;
    let held = |n| chat_of(n, 'x').replacen("xxxx", "hold", 1);
    let first = {
        let (url, body) = (proxy.url("/v1/chat/completions"), held(60_000));
        let headers = [("x-api-key", KEY)];
        tokio::spawn(async move { request(http::Method::POST, &url, &headers, body).await })
    };
    vertex.wait_for(1).await;
    // The same key's second body does not fit in its share (65,536 bytes, half the budget)
    // beside the first, which waits out Vertex's Retry-After.
    let refused = post(&proxy, "/v1/chat/completions", KEY, &held(60_000)).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers["retry-after"], "1");
    let message = refused.error_message();
    assert!(
        message.contains("(65536 bytes, MAX_BUFFERED_BYTES_PER_KEY)"),
        "{message}"
    );
    assert_eq!(vertex.count(), 1);
    // Another key is not affected, small bodies or large.
    for body in [chat_of(1024, 's'), chat_of(60_000, 'l')] {
        let answer = post(&proxy, "/v1/chat/completions", KEY_HASHED, &body).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.error_message());
    }
    first.abort();
}

/// Reads what the proxy sends until it has sent a whole small response head.
async fn read_to_close_or_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    within("a response", async {
        let mut chunk = [0u8; 4096];
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&received).into_owned()
}
