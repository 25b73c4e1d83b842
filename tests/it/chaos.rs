//! A chaos run: faults from Vertex and from clients, mixed at random, with every outcome
//! checked. `CHAOS_REQUESTS` sets the count (2,000 in CI; `scripts/chaos.sh` runs 100,000);
//! `CHAOS_SEED` replays a run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// What one request is made to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    None,
    Stream,
    Status429,
    Status500,
    Status503,
    ResetMidStream,
    StallMidStream,
    StallBeforeHead,
    CloseBeforeResponse,
    ClientAbortsBody,
    ClientAbortsStream,
    SlowReader,
    TrickledBody,
}

const FAULTS: [(Fault, u32); 13] = [
    (Fault::None, 25),
    (Fault::Stream, 20),
    (Fault::Status429, 5),
    (Fault::Status500, 4),
    (Fault::Status503, 4),
    (Fault::ResetMidStream, 6),
    (Fault::StallMidStream, 3),
    (Fault::StallBeforeHead, 2),
    (Fault::CloseBeforeResponse, 6),
    (Fault::ClientAbortsBody, 6),
    (Fault::ClientAbortsStream, 6),
    (Fault::SlowReader, 3),
    (Fault::TrickledBody, 3),
];

/// xorshift64*: small, deterministic, and enough to mix faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fault(&mut self) -> Fault {
        let total: u32 = FAULTS.iter().map(|(_, w)| w).sum();
        let mut pick = (self.next() % u64::from(total)) as u32;
        for (fault, weight) in FAULTS {
            if pick < weight {
                return fault;
            }
            pick -= weight;
        }
        Fault::None
    }
}

fn fault_name(fault: Fault) -> String {
    format!("{fault:?}")
}

/// The bytes the fake sends for a successful JSON answer to request `id`.
fn json_body(id: u64, size: usize) -> String {
    format!("{{\"id\":{id},\"pad\":\"{}\"}}", "x".repeat(size))
}

fn sse_chunk(id: u64, n: usize) -> String {
    format!("data: {{\"id\":{id},\"n\":{n}}}\n\n")
}

const SSE_CHUNKS: usize = 6;

fn error_body(id: u64, status: u16) -> String {
    format!("{{\"error\":{{\"code\":{status},\"message\":\"chaos {id}\",\"status\":\"X\"}}}}")
}

/// What the shared fake answers a chaos request: the fault named in its body, for its `id`.
fn chaos_reply(request: &Recorded) -> Reply {
    let (id, fault) = id_and_fault(request);
    let size = request.json()["size"].as_u64().unwrap_or(10) as usize;
    let sse = |chunks: usize, every_ms: u64, end: End| Reply::Paced {
        content_type: "text/event-stream",
        chunks: (0..chunks).map(|n| Bytes::from(sse_chunk(id, n))).collect(),
        every: Duration::from_millis(every_ms),
        end,
    };
    match fault {
        Fault::None | Fault::SlowReader | Fault::TrickledBody => {
            Reply::Json(StatusCode::OK, json_body(id, size))
        }
        Fault::Stream => sse(SSE_CHUNKS, 1, End::Complete),
        Fault::ClientAbortsStream => sse(200, 10, End::Complete),
        Fault::Status429 | Fault::Status500 | Fault::Status503 => {
            let status = match fault {
                Fault::Status429 => 429,
                Fault::Status500 => 500,
                _ => 503,
            };
            let status_code = StatusCode::from_u16(status).unwrap();
            Reply::Json(status_code, error_body(id, status))
        }
        Fault::ResetMidStream => sse(1, 0, End::Cut),
        Fault::StallMidStream => sse(1, 0, End::StallThenCut(Duration::from_millis(2500))),
        Fault::StallBeforeHead => Reply::Late(Duration::from_millis(2500), Box::new(Reply::Hangup)),
        Fault::CloseBeforeResponse | Fault::ClientAbortsBody => Reply::Hangup,
    }
}

fn id_and_fault(request: &Recorded) -> (u64, Fault) {
    let body = request.json();
    let fault = FAULTS
        .iter()
        .map(|(f, _)| *f)
        .find(|f| body["chaos"] == fault_name(*f))
        .unwrap_or(Fault::None);
    (body["id"].as_u64().unwrap_or(0), fault)
}

/// What the client saw, checked against what the fault should produce.
async fn run_one(
    proxy_addr: std::net::SocketAddr,
    id: u64,
    fault: Fault,
    size: usize,
) -> Result<(), String> {
    let body = format!(
        "{{\"model\":\"flash\",\"chaos\":\"{}\",\"id\":{id},\"size\":{size}}}",
        fault_name(fault)
    );
    let mut tcp = TcpStream::connect(proxy_addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if fault == Fault::ClientAbortsBody {
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: p\r\nx-api-key: {KEY}\r\ncontent-length: {}\r\n\r\n",
            body.len() + 100
        );
        tcp.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        tcp.write_all(&body.as_bytes()[..10])
            .await
            .map_err(|e| e.to_string())?;
        drop(tcp);
        return Ok(());
    }
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Channel<Bytes>>(
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let (mut tx, channel) = Channel::new(16);
    let request = http::Request::post("/v1/chat/completions")
        .header("host", "p")
        .header("x-api-key", KEY)
        .header("content-length", body.len())
        .body(channel)
        .unwrap();
    let feeding = tokio::spawn(async move {
        if fault == Fault::TrickledBody {
            for piece in body.as_bytes().chunks(body.len().div_ceil(8)) {
                let _ = tx.send_data(Bytes::copy_from_slice(piece)).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            let _ = tx.send_data(Bytes::from(body)).await;
        }
    });
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        // A reset can reach the proxy before Vertex's head does, or cut the response before its
        // head was written: either way the client sees a failure, never a success.
        Err(_) if fault == Fault::ResetMidStream => return Ok(()),
        Err(e) => return Err(format!("request: {e}")),
    };
    let _ = feeding.await;
    let status = response.status();
    let mut incoming = response.into_body();
    let expect_status = |expected: StatusCode| {
        if status == expected {
            Ok(())
        } else {
            Err(format!("status {status}, expected {expected}"))
        }
    };
    match fault {
        Fault::None | Fault::TrickledBody | Fault::SlowReader => {
            expect_status(StatusCode::OK)?;
            let mut got = Vec::new();
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| format!("body: {e}"))?;
                if let Some(data) = frame.data_ref() {
                    got.extend_from_slice(data);
                }
                if fault == Fault::SlowReader {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            (got == json_body(id, size).as_bytes())
                .then_some(())
                .ok_or("body not byte-exact".into())
        }
        Fault::Stream => {
            expect_status(StatusCode::OK)?;
            let got = incoming
                .collect()
                .await
                .map_err(|e| format!("stream: {e}"))?
                .to_bytes();
            let expected: String = (0..SSE_CHUNKS).map(|n| sse_chunk(id, n)).collect();
            (got == expected.as_bytes())
                .then_some(())
                .ok_or("stream not byte-exact".into())
        }
        Fault::Status429 | Fault::Status500 | Fault::Status503 => {
            let code = match fault {
                Fault::Status429 => 429,
                Fault::Status500 => 500,
                _ => 503,
            };
            expect_status(StatusCode::from_u16(code).unwrap())?;
            let got = incoming
                .collect()
                .await
                .map_err(|e| format!("error body: {e}"))?
                .to_bytes();
            // Google's envelope, in OpenAI's shape, with Google's words.
            let json: serde_json::Value =
                serde_json::from_slice(&got).map_err(|_| "error body is not JSON")?;
            let expected = serde_json::json!({"message": format!("chaos {id}"), "code": "X"});
            (json["error"]["message"] == expected["message"]
                && json["error"]["code"] == expected["code"])
                .then_some(())
                .ok_or(format!("error body not converted: {json}"))
        }
        Fault::ResetMidStream if status == StatusCode::BAD_GATEWAY => Ok(()),
        Fault::ResetMidStream | Fault::StallMidStream => {
            expect_status(StatusCode::OK)?;
            match incoming.collect().await {
                Err(_) => Ok(()),
                Ok(_) => Err("a cut stream ended as a success".into()),
            }
        }
        Fault::StallBeforeHead => expect_status(StatusCode::GATEWAY_TIMEOUT),
        Fault::CloseBeforeResponse => expect_status(StatusCode::BAD_GATEWAY),
        Fault::ClientAbortsStream => {
            expect_status(StatusCode::OK)?;
            incoming
                .frame()
                .await
                .ok_or("no first chunk")?
                .map_err(|e| e.to_string())?;
            drop(incoming); // the client leaves mid-stream
            Ok(())
        }
        Fault::ClientAbortsBody => unreachable!("handled above"),
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn run_batch(
    proxy_addr: std::net::SocketAddr,
    rng: &mut Rng,
    first_id: u64,
    count: u64,
) -> (HashMap<Fault, usize>, Vec<String>) {
    let limit = Arc::new(Semaphore::new(48));
    let mut tasks = Vec::new();
    let mut counts = HashMap::new();
    for id in first_id..first_id + count {
        let fault = rng.fault();
        *counts.entry(fault).or_insert(0) += 1;
        let size = (rng.next() % 20_000) as usize
            + if fault == Fault::SlowReader {
                100_000
            } else {
                0
            };
        let permit = limit.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let outcome = tokio::time::timeout(
                Duration::from_secs(20),
                run_one(proxy_addr, id, fault, size),
            )
            .await;
            drop(permit);
            match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("request {id} ({fault:?}): {e}")),
                Err(_) => Some(format!("request {id} ({fault:?}): hung")),
            }
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        if let Some(failure) = task.await.unwrap() {
            failures.push(failure);
        }
    }
    (counts, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos() {
    let requests: u64 = std::env::var("CHAOS_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234_abcd);
    let vertex = FakeVertex::start_with(chaos_reply).await;
    let metadata = FakeMetadata::start().await;
    let mut env = env(&vertex, &metadata);
    env.insert("UPSTREAM_IDLE_TIMEOUT_SECS".into(), "1".into());
    env.insert("BODY_READ_TIMEOUT_SECS".into(), "5".into());
    // One retry, after at most a second: enough to mix retries into the chaos.
    env.insert("MAX_ATTEMPTS".into(), "2".into());
    env.insert("RETRY_BUDGET_SECS".into(), "1".into());
    let mut proxy = spawn(&env).await;
    let pid = proxy.child.id().unwrap();
    let mut rng = Rng(seed);

    // Warm up with the same mix, then take the baseline. Each worker thread has its own
    // allocator arena, and each reaches its working size only after several hundred requests.
    let warm_up = (requests / 2).max(200);
    let (_, failures) = run_batch(proxy.addr, &mut rng, 1_000_000, warm_up).await;
    assert!(failures.is_empty(), "warm-up: {failures:?}");
    let rss_before = rss_kib(pid);

    let (counts, failures) = run_batch(proxy.addr, &mut rng, 0, requests).await;
    assert!(
        failures.is_empty(),
        "{} of {requests} requests went wrong (seed {seed}):\n{}",
        failures.len(),
        failures
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Vertex saw no request whose client gave up before sending its body.
    let seen: Vec<(u64, Fault)> = vertex.received().iter().map(id_and_fault).collect();
    let aborted_seen = seen
        .iter()
        .filter(|(_, f)| *f == Fault::ClientAbortsBody)
        .count();
    assert_eq!(aborted_seen, 0, "an incomplete request was forwarded");
    // Each request Vertex refused with 429 or 5xx was sent twice: retried once, then given up.
    let mut sent: HashMap<u64, usize> = HashMap::new();
    for (id, fault) in &seen {
        if matches!(
            fault,
            Fault::Status429 | Fault::Status500 | Fault::Status503
        ) {
            *sent.entry(*id).or_default() += 1;
        }
    }
    assert!(!sent.is_empty());
    assert!(sent.values().all(|&n| n == 2), "{sent:?}");
    // Every stream a client left was cancelled upstream, and nothing is left in flight.
    let left = counts.get(&Fault::ClientAbortsStream).copied().unwrap_or(0);
    vertex
        .until_answers_end("upstream work to drain", || {
            let cancelled_streams = vertex
                .cancelled()
                .iter()
                .filter(|&&at| {
                    seen.get(at).is_some_and(|&(id, fault)| {
                        fault == Fault::ClientAbortsStream && id < 1_000_000
                    })
                })
                .count();
            (vertex.in_flight() == 0 && cancelled_streams == left).then_some(())
        })
        .await;

    let rss_after = rss_kib(pid);
    // A leak grows with every batch; a high-water mark (more requests at once on a loaded
    // machine, one more arena's working size) is reached once. So the leak check is a second
    // batch of the same mix, measured from the first one's end.
    let (_, failures) = run_batch(proxy.addr, &mut rng, 2_000_000, requests).await;
    assert!(failures.is_empty(), "second batch: {failures:?}");
    vertex
        .until_answers_end("the second batch to drain", || {
            (vertex.in_flight() == 0).then_some(())
        })
        .await;
    let rss_final = rss_kib(pid);
    println!("chaos: seed {seed}, {requests} requests after {warm_up} of warm-up");
    let mut sorted: Vec<_> = counts.iter().collect();
    sorted.sort_by_key(|(f, _)| format!("{f:?}"));
    for (fault, count) in sorted {
        println!("  {fault:?}: {count}");
    }
    println!(
        "  RSS after warm-up {rss_before} KiB, after the run {rss_after} KiB, after a second run {rss_final} KiB"
    );
    assert!(
        rss_final * 10 <= rss_after * 11,
        "RSS grew from {rss_after} KiB to {rss_final} KiB over a second batch of {requests}"
    );
    proxy.assert_healthy_and_stop().await;
    println!("chaos: {requests} passed, 0 failed");
}
