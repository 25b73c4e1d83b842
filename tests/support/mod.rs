//! Test support: the real proxy on port 0, in process or as the binary; a fake Vertex that
//! records what it received and can be told how to answer; and a fake metadata server.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

pub const KEY: &str = "sk_test_0123456789abcdef";
pub const KEY_FLASH_ONLY: &str = "sk_test_flash_only_0000";
pub const KEY_DISABLED: &str = "sk_test_disabled_000000";
pub const KEY_HASHED: &str = "sk_test_hashed_key_00000";
pub const GOOGLE_TOKEN: &str = "ya29.fake-google-token";
pub const PROJECT: &str = "test-proj";

/// Every await in a test goes through this: a hang is a failure, not a stuck CI run.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(vertex_proxy::keys::sha256(text.as_bytes()))
}

/// The standard key list: a plain key, one limited to `flash`, a disabled one, a hashed one.
pub fn keys_json() -> String {
    format!(
        r#"[{{"id":"main","key":"{KEY}"}},
            {{"id":"flash-only","key":"{KEY_FLASH_ONLY}","models":["flash"]}},
            {{"id":"off","key":"{KEY_DISABLED}","enabled":false}},
            {{"id":"hashed","key_sha256":"{}"}}]"#,
        sha256_hex(KEY_HASHED)
    )
}

// ---------------------------------------------------------------- fake Vertex

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the fake received JSON")
    }
}

/// How the fake answers one request.
pub enum Reply {
    Json(StatusCode, String),
    /// Streams what the test sends, as it sends it; ends when the sender is dropped.
    Channel(StatusCode, &'static str, mpsc::Receiver<Bytes>),
    /// Never answers: the response head does not come.
    Stall,
}

type Behaviour = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

pub struct FakeVertex {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
    arrived: Arc<Notify>,
    behaviour: Arc<Mutex<Behaviour>>,
}

/// An OpenAI-style completion for `model`, as Vertex would send it.
pub fn completion(model: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER_SENTINEL}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    })
    .to_string()
}

impl FakeVertex {
    /// Answers every request with a completion naming the model it received.
    pub async fn start() -> FakeVertex {
        FakeVertex::start_with(|r: &Recorded| {
            let model = r.json()["model"].as_str().unwrap_or_default().to_owned();
            Reply::Json(StatusCode::OK, completion(&model))
        })
        .await
    }

    pub async fn start_with(
        behaviour: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> FakeVertex {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeVertex {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            arrived: Arc::default(),
            behaviour: Arc::new(Mutex::new(Arc::new(behaviour))),
        };
        let (received, arrived, behaviour) = (
            fake.received.clone(),
            fake.arrived.clone(),
            fake.behaviour.clone(),
        );
        serve(listener, move |request: Request<Incoming>| {
            let (received, arrived, behaviour) =
                (received.clone(), arrived.clone(), behaviour.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let recorded = Recorded {
                    method: parts.method,
                    path: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: parts.headers,
                    body,
                };
                let behaviour = behaviour.lock().unwrap().clone();
                let reply = behaviour(&recorded);
                received.lock().unwrap().push(recorded);
                arrived.notify_waiters();
                match reply {
                    Reply::Json(status, text) => response(status, "application/json", full(text)),
                    Reply::Channel(status, content_type, rx) => {
                        response(status, content_type, ChannelBody(rx).boxed())
                    }
                    Reply::Stall => std::future::pending().await,
                }
            }
        });
        fake
    }

    /// A fake that answers its one request with an SSE stream the test feeds, chunk by chunk;
    /// the stream ends when the sender is dropped.
    pub async fn streaming() -> (FakeVertex, mpsc::Sender<Bytes>) {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let rx = Mutex::new(Some(rx));
        let fake = FakeVertex::start_with(move |_| {
            let rx = rx
                .lock()
                .unwrap()
                .take()
                .expect("the streaming fake serves one request");
            Reply::Channel(StatusCode::OK, "text/event-stream", rx)
        })
        .await;
        (fake, tx)
    }

    /// A fake that answers every request with an SSE stream of its own, and hands the test the
    /// sender of each, in arrival order.
    pub async fn streams() -> (FakeVertex, mpsc::UnboundedReceiver<mpsc::Sender<Bytes>>) {
        let (senders_tx, senders_rx) = mpsc::unbounded_channel();
        let fake = FakeVertex::start_with(move |_| {
            let (tx, rx) = mpsc::channel::<Bytes>(8);
            let _ = senders_tx.send(tx);
            Reply::Channel(StatusCode::OK, "text/event-stream", rx)
        })
        .await;
        (fake, senders_rx)
    }

    pub fn set_behaviour(&self, behaviour: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.behaviour.lock().unwrap() = Arc::new(behaviour);
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        within("requests at the fake Vertex", async {
            loop {
                let notified = self.arrived.notified();
                if self.count() >= n {
                    return self.received();
                }
                notified.await;
            }
        })
        .await
    }
}

fn full(text: impl Into<Bytes>) -> BoxBody<Bytes, Infallible> {
    Full::new(text.into()).boxed()
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: BoxBody<Bytes, Infallible>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    response
}

/// A response body fed by the test, frame by frame.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Serves HTTP/1.1 on `listener` with `handler` until the test ends.
fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody<Bytes, Infallible>>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |r| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(r).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

// ------------------------------------------------------------- fake metadata

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMode {
    Ok,
    Fail,
}

/// Google's metadata server, as google-cloud-auth and the proxy's project lookup use it.
pub struct FakeMetadata {
    pub addr: SocketAddr,
    pub token_requests: Arc<AtomicUsize>,
    pub token_fetched: Arc<Notify>,
    mode: Arc<Mutex<MetadataMode>>,
    /// While false, token requests wait: concurrent callers pile up behind one fetch.
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl FakeMetadata {
    pub async fn start() -> FakeMetadata {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeMetadata {
            addr: listener.local_addr().unwrap(),
            token_requests: Arc::default(),
            token_fetched: Arc::default(),
            mode: Arc::new(Mutex::new(MetadataMode::Ok)),
            open: Arc::new(tokio::sync::watch::channel(true).0),
        };
        let (count, fetched, mode, open) = (
            fake.token_requests.clone(),
            fake.token_fetched.clone(),
            fake.mode.clone(),
            fake.open.clone(),
        );
        serve(listener, move |request: Request<Incoming>| {
            let (count, fetched, mode) = (count.clone(), fetched.clone(), mode.clone());
            let mut open = open.subscribe();
            async move {
                if request
                    .headers()
                    .get("metadata-flavor")
                    .map(|v| v.as_bytes())
                    != Some(b"Google")
                {
                    return response(
                        StatusCode::FORBIDDEN,
                        "text/plain",
                        full("missing Metadata-Flavor"),
                    );
                }
                let path = request.uri().path();
                if path == "/computeMetadata/v1/project/project-id" {
                    return response(StatusCode::OK, "application/text", full(PROJECT));
                }
                if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
                    count.fetch_add(1, Ordering::SeqCst);
                    fetched.notify_waiters();
                    let _ = open.wait_for(|open| *open).await;
                    let mode = *mode.lock().unwrap();
                    return match mode {
                        MetadataMode::Ok => response(
                            StatusCode::OK,
                            "application/json",
                            full(format!(
                                r#"{{"access_token":"{GOOGLE_TOKEN}","expires_in":3599,"token_type":"Bearer"}}"#
                            )),
                        ),
                        MetadataMode::Fail => response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "text/plain",
                            full("broken"),
                        ),
                    };
                }
                response(StatusCode::NOT_FOUND, "text/plain", full("not found"))
            }
        });
        fake
    }

    /// Token requests wait until [`FakeMetadata::release`].
    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// Waits until at least `n` token requests have arrived.
    pub async fn wait_for_token_requests(&self, n: usize) {
        within("token requests at the fake metadata server", async {
            loop {
                let notified = self.token_fetched.notified();
                if self.token_requests() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
    }

    pub fn set_mode(&self, mode: MetadataMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn token_requests(&self) -> usize {
        self.token_requests.load(Ordering::SeqCst)
    }
}

// --------------------------------------------------------------- the proxy

/// A proxy a test can send requests to.
pub trait Served {
    fn addr(&self) -> SocketAddr;

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }
}

/// The real server (`server::run`) on port 0 in this process, on a thread of its own as the
/// binary runs it, with a state prepared from `env` as startup prepares it, except that the
/// Google token is fixed: for tests of the request path, where the process boundary
/// (environment, signals, stdout) is not the point.
pub struct InProcess {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl InProcess {
    pub async fn start(env: &HashMap<String, String>) -> InProcess {
        use vertex_proxy::config::{Config, Mode};
        let mut env = env.clone();
        env.insert("WORKER_THREADS".into(), "1".into());
        let config = Config::from_env(&env, Mode::Vertex).expect("a valid configuration");
        let token = http::HeaderValue::from_str(&format!("Bearer {GOOGLE_TOKEN}")).unwrap();
        let tokens = vertex_proxy::auth::TokenSource::Fixed(token);
        let client =
            vertex_proxy::upstream::client(config.timeouts.connect, &config.upstream_roots);
        let upstream = vertex_proxy::app::upstream(&config, PROJECT.into(), tokens, client);
        let state = Arc::new(vertex_proxy::state::State::new(config, upstream));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (done, served) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                vertex_proxy::server::run(listener, state, async {
                    let _ = stopped.await;
                })
                .await;
            });
            let _ = done.send(());
        });
        InProcess {
            addr,
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// Stops it as SIGTERM would, and waits for the drain to end.
    pub async fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(served) = self.served.take() {
            within("the in-process server to stop", served)
                .await
                .unwrap();
        }
    }
}

impl Served for InProcess {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Served for Proxy {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The real `vertex-proxy` binary, started with exactly the given environment.
pub struct Proxy {
    pub addr: SocketAddr,
    pub child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: Arc<Notify>,
    errors: Arc<Mutex<String>>,
    /// The readers of stdout and stderr, which end when the proxy's pipes close.
    readers_done: Vec<tokio::task::JoinHandle<()>>,
}

/// The environment for a proxy in front of `vertex` and `metadata`.
pub fn env(vertex: &FakeVertex, metadata: &FakeMetadata) -> HashMap<String, String> {
    env_with_base_url(metadata, &vertex.base_url())
}

/// The environment for a proxy whose Vertex is `base_url`, with nothing fake behind it.
pub fn env_with_base_url(metadata: &FakeMetadata, base_url: &str) -> HashMap<String, String> {
    HashMap::from([
        ("API_KEYS_JSON".into(), keys_json()),
        ("GOOGLE_CLOUD_PROJECT".into(), PROJECT.into()),
        ("VERTEX_BASE_URL".into(), base_url.into()),
        ("GCE_METADATA_HOST".into(), metadata.host()),
    ])
}

/// Starts the binary with `args` and `env` (and nothing else of ours: no Google credentials of
/// the developer's leak in), and returns what it printed if it exits instead of listening.
pub async fn try_spawn(
    args: &[&str],
    env: &HashMap<String, String>,
) -> Result<Proxy, (i32, String)> {
    let home = std::env::temp_dir().join(format!("vertex-proxy-test-home-{}", std::process::id()));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_vertex-proxy"));
    command
        .args(args)
        .env_clear()
        .env("PORT", "0")
        .env("HOME", &home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("the proxy binary starts");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let new_line: Arc<Notify> = Arc::default();
    let stdout = child.stdout.take().unwrap();
    let (lines2, new_line2) = (lines.clone(), new_line.clone());
    let stdout_done = tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines2.lock().unwrap().push(line);
            new_line2.notify_waiters();
        }
        new_line2.notify_waiters();
    });
    let mut stderr = child.stderr.take().unwrap();
    // Everything the proxy writes to stderr, kept so the pipe stays open (a closed stderr
    // would be a broken pipe for the proxy) and for failure messages.
    let errors: Arc<Mutex<String>> = Arc::default();
    let startup = within("the proxy's startup line", async {
        loop {
            let notified = new_line.notified();
            if let Some(line) = lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("\"listen\""))
            {
                return Ok(line.clone());
            }
            tokio::select! {
                () = notified => {}
                status = child.wait() => {
                    let mut text = String::new();
                    let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
                    return Err((status.map(|s| s.code().unwrap_or(-1)).unwrap_or(-1), text));
                }
            }
        }
    })
    .await?;
    let errors2 = errors.clone();
    let stderr_done = tokio::spawn(async move {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = tokio::io::AsyncReadExt::read(&mut stderr, &mut chunk).await {
            errors2
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    let startup: serde_json::Value = serde_json::from_str(&startup).unwrap();
    let listen: SocketAddr = startup["config"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    Ok(Proxy {
        addr: SocketAddr::from(([127, 0, 0, 1], listen.port())),
        child,
        lines,
        new_line,
        errors,
        readers_done: vec![stdout_done, stderr_done],
    })
}

pub async fn spawn(env: &HashMap<String, String>) -> Proxy {
    try_spawn(&[], env)
        .await
        .unwrap_or_else(|(code, stderr)| panic!("proxy exited with {code}: {stderr}"))
}

impl Drop for Proxy {
    /// Every proxy any test starts is checked here, so the whole suite runs with its logs
    /// captured and searched for secrets and content.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let logged = format!("{}\n{}", self.lines().join("\n"), self.stderr());
        for secret in secrets() {
            assert!(
                !logged.contains(&secret),
                "a secret or content ({}…) reached the proxy's logs",
                &secret[..6]
            );
        }
    }
}

impl Proxy {
    /// Adds a line as if the proxy had logged it: only for testing the leak check itself.
    pub fn pretend_logged(&self, line: &str) {
        self.lines.lock().unwrap().push(line.to_owned());
    }

    /// What the proxy wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.errors.lock().unwrap().clone()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a log line that satisfies `predicate`, and returns it parsed.
    pub async fn wait_for_line(
        &self,
        what: &str,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        within(what, async {
            loop {
                let notified = self.new_line.notified();
                for line in self.lines() {
                    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                        && predicate(&json)
                    {
                        return json;
                    }
                }
                notified.await;
            }
        })
        .await
    }

    /// The request log line for `path` with `status`, once the response has ended.
    pub async fn request_line(&self, path: &str, status: u16) -> serde_json::Value {
        self.wait_for_line(&format!("the log line of {path} {status}"), |l| {
            l["httpRequest"]["requestUrl"] == path && l["httpRequest"]["status"] == status
        })
        .await
    }

    /// Stops the proxy with SIGTERM and returns its exit code and all it wrote to stderr.
    pub async fn stop(&mut self) -> (Option<i32>, String) {
        self.terminate();
        let status = self.exited().await;
        (status.code(), self.stderr())
    }

    /// Waits for the proxy to exit and for everything it wrote to be read: its last log lines
    /// may still be in the pipe when the process is gone.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let status = within("the proxy to exit", self.child.wait())
            .await
            .unwrap();
        for done in self.readers_done.drain(..) {
            within("the end of the proxy's output", done).await.unwrap();
        }
        status
    }

    /// Checks the proxy still serves, then stops it and checks it exited 0 without a panic.
    pub async fn assert_healthy_and_stop(&mut self) {
        let health = request(Method::GET, &self.url("/healthz"), &[], Bytes::new()).await;
        assert_eq!(health.status, StatusCode::OK);
        let (code, stderr) = self.stop().await;
        assert_eq!(code, Some(0));
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    /// Sends SIGTERM and waits until the proxy says it stopped accepting.
    pub async fn terminate_and_wait_for_drain(&self) {
        self.terminate();
        self.wait_for_line("the shutdown line", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("no longer accepting"))
        })
        .await;
    }

    pub fn terminate(&self) {
        let pid = self.child.id().expect("the proxy is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

// ------------------------------------------------------------------ clients

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The message of an OpenAI-shaped error, checking the shape on the way.
    pub fn error_message(&self) -> String {
        let json = self.json();
        let error = &json["error"];
        assert!(error["type"].is_string(), "not OpenAI-shaped: {json}");
        assert!(error["code"].is_string(), "not OpenAI-shaped: {json}");
        error["message"].as_str().expect("a message").to_owned()
    }
}

/// Starts a request and returns the response head with its body still streaming.
pub async fn start_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    let uri: http::Uri = url.parse().unwrap();
    let stream = tokio::net::TcpStream::connect(format!(
        "{}:{}",
        uri.host().unwrap(),
        uri.port_u16().unwrap()
    ))
    .await
    .expect("connect to the proxy");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(uri.path_and_query().unwrap().as_str());
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", uri.authority().unwrap().as_str());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).unwrap();
    within("the response head", sender.send_request(request))
        .await
        .expect("a response")
}

/// Starts a streaming chat completion and returns the response with its body still open.
pub async fn start_stream(proxy: &impl Served) -> Response<Incoming> {
    start_request(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[("x-api-key", KEY)],
        r#"{"model":"flash","stream":true}"#,
    )
    .await
}

/// Starts a stream through the proxy, has the fake send its first chunk, and returns the body
/// once the client holds that chunk: a stream provably in flight.
pub async fn stream_in_flight(proxy: &impl Served, tx: &mpsc::Sender<Bytes>) -> Incoming {
    let mut body = start_stream(proxy).await.into_body();
    tx.send(Bytes::from("data: one\n\n")).await.unwrap();
    let first = within("the first chunk", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: one\n\n");
    body
}

pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let response = start_request(method, url, headers, body).await;
    let (parts, body) = response.into_parts();
    let body = within("the response body", body.collect())
        .await
        .expect("a complete body")
        .to_bytes();
    // The Google token never reaches a client, in a header or a body; nor does any key.
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains(GOOGLE_TOKEN),
            "the token is in response header {name}"
        );
    }
    let text = String::from_utf8_lossy(&body);
    for credential in credentials() {
        assert!(
            !text.contains(&credential),
            "a key, hash or token is in a response"
        );
    }
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn post(proxy: &impl Served, path: &str, key: &str, body: &str) -> Answer {
    request(
        Method::POST,
        &proxy.url(path),
        &[("x-api-key", key), ("content-type", "application/json")],
        body.to_owned(),
    )
    .await
}

/// The status of a chat completion with `key`.
pub async fn chat_status(proxy: &impl Served, key: &str) -> StatusCode {
    post(proxy, "/v1/chat/completions", key, CHAT).await.status
}

pub async fn get(proxy: &impl Served, path: &str, key: &str) -> Answer {
    request(
        Method::GET,
        &proxy.url(path),
        &[("x-api-key", key)],
        Bytes::new(),
    )
    .await
}

/// A chat request whose prompt is a sentinel: it must never appear in a log line.
pub const CHAT: &str =
    r#"{"model":"flash","messages":[{"role":"user","content":"prompt-sentinel-1f2e"}]}"#;
pub const PROMPT_SENTINEL: &str = "prompt-sentinel-1f2e";
/// What the fake Vertex answers in `completion`; it must never appear in a log line either.
pub const ANSWER_SENTINEL: &str = "answer-sentinel-9c8d";

/// What must never reach a client or a log: the keys, their hashes, the Google token.
pub fn credentials() -> Vec<String> {
    let mut credentials: Vec<String> = [KEY, KEY_FLASH_ONLY, KEY_DISABLED, KEY_HASHED]
        .iter()
        .flat_map(|k| [k.to_string(), sha256_hex(k)])
        .collect();
    credentials.push(GOOGLE_TOKEN.into());
    credentials
}

/// What must never appear in a log line: the credentials, and request and response content.
pub fn secrets() -> Vec<String> {
    let mut secrets = credentials();
    secrets.extend([PROMPT_SENTINEL.into(), ANSWER_SENTINEL.into()]);
    secrets
}
