//! The log line off the request path: a stdout that nobody reads stalls no request, and the
//! lines that could not wait are counted and reported once stdout is read again.

use std::process::Stdio;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

#[tokio::test]
async fn a_stdout_nobody_reads_stalls_no_request_and_dropped_lines_are_reported() {
    let vertex = FakeVertex::start().await;
    let metadata = FakeMetadata::start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vertex-proxy"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("WORKER_THREADS", "1")
        .envs(env(&vertex, &metadata))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The startup line gives the port; after it, stdout is left unread: its pipe fills, and
    // the proxy's writer blocks on it.
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let startup = within("the startup line", stdout.next_line()).await;
    let startup: serde_json::Value = serde_json::from_str(&startup.unwrap().unwrap()).unwrap();
    let port = startup["config"]["listen"].as_str().unwrap();
    let port = port.rsplit(':').next().unwrap();

    // Each line holds a 1 KiB User-Agent, so these lines pass what the pipe (64 KiB), a batch
    // being written and the queue can hold together: some must be dropped.
    let agent = "a".repeat(1024);
    let requests = 3 * vertex_proxy::log::QUEUE_BYTES / 1024 + 64;
    let stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    for _ in 0..requests {
        let request = Request::get("/health")
            .header("host", "proxy")
            .header("user-agent", &agent)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = within("an answer while stdout is stalled", async {
            sender.ready().await.unwrap();
            sender.send_request(request).await.unwrap()
        })
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        within("the body", response.into_body().collect())
            .await
            .unwrap();
    }

    // Read again, stdout gets the lines the queue kept and, after them, the count of those it
    // had to drop; stopped, the proxy writes what it still holds, and stdout is read to its end.
    let (mut logged, mut dropped, mut warnings) = (0, 0, 0);
    let mut stopped = false;
    while let Some(line) = within("the rest of stdout", stdout.next_line())
        .await
        .unwrap()
    {
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        if line["httpRequest"]["userAgent"] == agent.as_str() {
            logged += 1;
        } else if let Some(count) = line["dropped_lines"].as_u64() {
            assert_eq!(line["severity"], "WARNING");
            let message = line["message"].as_str().unwrap();
            assert!(message.contains(&format!("{count} log line(s)")), "{line}");
            dropped += count;
            warnings += 1;
        }
        if warnings > 0 && !stopped {
            let pid = child.id().unwrap().to_string();
            let killed = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status();
            assert!(killed.unwrap().success());
            stopped = true;
        }
    }
    assert!(stopped, "no drop was reported");
    let status = within("the proxy to exit", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(dropped > 0, "{warnings} warnings reported no drop");
    // Every request has its line, or is counted among the dropped.
    assert_eq!(logged + dropped as usize, requests, "{logged} logged");
}
