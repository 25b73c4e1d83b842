//! The proxy under test: in process, or the real binary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::*;

/// A proxy a test can send requests to.
pub trait Served {
    fn addr(&self) -> SocketAddr;

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }
}

/// The real server (`server::run`) on port 0 in this process, on a thread of its own as the
/// binary runs it, with the state startup assembles (`app::assemble`) from a configuration read
/// from `env`, except that the Google tokens are fixed: for tests of the request path, where
/// the process boundary (environment, signals, stdout) is not the point. It stops, as SIGTERM
/// would stop it, when dropped.
pub struct InProcess {
    addr: SocketAddr,
    /// Dropping it is the shutdown signal.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl InProcess {
    pub async fn start(env: &HashMap<String, String>) -> InProcess {
        use vertex_proxy::auth::TokenSource;
        use vertex_proxy::config::{Config, Mode};
        let mut env = env.clone();
        env.insert("WORKER_THREADS".into(), "1".into());
        let config = Config::from_env(&env, Mode::Vertex).expect("a valid configuration");
        let fixed = |token: &str| {
            TokenSource::Fixed(http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap())
        };
        // Each service's ID token is fixed too: one for its audience.
        let id_tokens = (config.aliases.audiences().into_iter())
            .map(|audience| {
                let token = fixed(&id_token(&audience, "in-process"));
                (audience, token)
            })
            .collect();
        let tokens = (fixed(GOOGLE_TOKEN), id_tokens);
        let loaded = vertex_proxy::app::Loaded::new(config, PROJECT.into(), tokens);
        let state = Arc::new(vertex_proxy::app::assemble(loaded));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
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
        });
        InProcess { addr, _stop: stop }
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
        // Connections opened at startup race the first request: tests that count them turn
        // it on themselves.
        ("UPSTREAM_PRECONNECT".into(), "false".into()),
    ])
}

/// The environment for a proxy in front of `vertex`, with `extra` settings on top.
fn env_with(
    vertex: &FakeVertex,
    metadata: &FakeMetadata,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut env = env(vertex, metadata);
    for (name, value) in extra {
        env.insert((*name).into(), (*value).into());
    }
    env
}

/// The binary in front of `vertex`, with `extra` settings, and its fake metadata server.
pub async fn spawn_with(vertex: &FakeVertex, extra: &[(&str, &str)]) -> (FakeMetadata, Proxy) {
    let metadata = FakeMetadata::start().await;
    let proxy = spawn(&env_with(vertex, &metadata, extra)).await;
    (metadata, proxy)
}

/// The server in process in front of `vertex`, with `extra` settings.
pub async fn in_process_with(vertex: &FakeVertex, extra: &[(&str, &str)]) -> InProcess {
    let metadata = FakeMetadata::start().await;
    InProcess::start(&env_with(vertex, &metadata, extra)).await
}

/// Starts the binary with `args` and `env` (and nothing else of ours: no Google credentials of
/// the developer's leak in), and returns what it printed if it exits instead of listening.
pub async fn try_spawn(
    args: &[&str],
    env: &HashMap<String, String>,
) -> Result<Proxy, (i32, String)> {
    let home = std::env::temp_dir().join(format!("vertex-proxy-test-home-{}", std::process::id()));
    // Known to integration tests only; support is also built into the example `fake_vertex`,
    // which never spawns the proxy.
    let Some(binary) = option_env!("CARGO_BIN_EXE_vertex-proxy") else {
        panic!("only integration tests spawn the proxy binary");
    };
    let mut command = tokio::process::Command::new(binary);
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

    /// Forgets the lines so far, so that the next wait finds only new ones.
    pub fn clear_lines(&self) {
        self.lines.lock().unwrap().clear();
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
        until(what, &self.new_line, || {
            (self.lines().iter())
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|json| predicate(json))
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
