//! Configuration from the environment: every variable parsed, every problem reported at once.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use rustls::pki_types::CertificateDer;

use crate::keys::KeySet;
use crate::models::Aliases;
use crate::signatures;
use crate::usage::Price;

mod read;
mod summary;
pub(crate) mod values;

use read::Reader;
pub use values::is_project_id;

/// Where configuration is read from. Tests pass a `HashMap` and never touch the process
/// environment, which is shared by every test thread.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Env for HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| (*v).to_owned())
    }
}

/// One problem with one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// Every configuration problem found, so an operator fixes them in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for e in &self.0 {
            writeln!(f, "  {}: {}", e.var, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In front of real Vertex, with Application Default Credentials.
    Vertex,
    /// In front of the built-in stand-in, with a fixed token (`vertex-proxy demo`).
    Demo,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Vertex => "vertex",
            Mode::Demo => "demo",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub port: u16,
    /// The key set read at startup. The live set, which `API_KEYS_FILE` reloads, is
    /// `State::keys`; this one only seeds it.
    pub initial_keys: KeySet,
    /// `API_KEYS_FILE`: re-read every `keys_reload`, so a rotated secret applies without a redeploy.
    pub keys_file: Option<PathBuf>,
    pub keys_reload: Duration,
    /// Every alias's route.
    pub aliases: Aliases,
    /// `GOOGLE_CLOUD_PROJECT` as given; `None`: `app::load` asks the metadata server. The
    /// project in use is resolved once, at startup, and held by `upstream::Upstream`.
    pub project_from_env: Option<String>,
    /// `VERTEX_LOCATION`: where aliases without a location of their own, and raw ids, go.
    pub location: String,
    /// `VERTEX_BASE_URL`: one origin for every location, instead of Google's hosts.
    pub base_url: Option<Uri>,
    /// `UPSTREAM_CA_FILE`: root certificates the upstream client trusts besides the built-in
    /// ones, for private endpoints (and TLS fakes on loopback).
    pub upstream_roots: Vec<CertificateDer<'static>>,
    pub allow_raw_model_ids: bool,
    /// `PRICES_JSON`: alias or model id → USD per million tokens, for `cost_usd` in the log.
    pub prices: HashMap<String, Price>,
    pub max_body_bytes: usize,
    /// `MAX_BUFFERED_BYTES`: request bytes held in memory at once, across the process.
    pub max_buffered_bytes: usize,
    /// `MAX_BUFFERED_BYTES_PER_KEY`: the most of that one key's requests hold at once.
    pub max_buffered_bytes_per_key: usize,
    /// `MIN_BODY_BYTES_PER_SEC`: a body slower than this, on average, is cut (0: never).
    pub min_body_bytes_per_sec: u64,
    pub timeouts: Timeouts,
    /// Connections served at once; further ones wait in the listen queue.
    pub max_connections: usize,
    /// `MAX_UPSTREAM_CONNECTIONS`: HTTP/2 connections per upstream origin and worker.
    pub max_upstream_connections: usize,
    /// `UPSTREAM_PRECONNECT`: each worker opens its upstream connections at startup.
    pub upstream_preconnect: bool,
    /// `THOUGHT_SIGNATURES`: what Gemini 3 history that lost its signatures gets.
    pub thought_signatures: signatures::SignatureMode,
    pub retries: RetryPolicy,
    /// `ANTHROPIC_BETAS`: the `anthropic-beta` values passed to Claude on Vertex.
    pub anthropic_betas: Vec<String>,
    /// Threads serving requests, each with its own runtime and upstream pool.
    pub worker_threads: usize,
    /// Said at startup, stopping nothing: variables that no longer do anything.
    pub warnings: Vec<String>,
}

/// `MAX_ATTEMPTS` and `RETRY_BUDGET_SECS`: how far the proxy retries a request that failed
/// before the client saw a byte of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// The most time spent waiting between attempts, in all.
    pub budget: Duration,
}

/// Every configured duration, in one value that each step of the pipeline reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `HEADER_READ_TIMEOUT_SECS`: how long a client may take to send its request headers
    /// (slowloris).
    pub header_read: Duration,
    /// `BODY_READ_TIMEOUT_SECS`: how long a client may take to send its whole request body.
    pub body_read: Duration,
    /// `TOKEN_TIMEOUT_SECS`: how long a request waits for a Google token before a 502.
    pub token: Duration,
    /// `UPSTREAM_CONNECT_TIMEOUT_SECS`: TCP and TLS to the upstream.
    pub connect: Duration,
    /// `UPSTREAM_IDLE_TIMEOUT_SECS`: the longest silence from the upstream, before its
    /// response head or between two chunks.
    pub upstream_idle: Duration,
    /// `SHUTDOWN_GRACE_SECS`: how long requests in flight may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// `IDLE_CONNECTION_TIMEOUT_SECS`: an h2c connection with no open stream for this long is
    /// closed. Above the Google front end's own idle timeout, so that it closes first.
    pub idle_connection: Duration,
}

pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The `anthropic-beta` values Vertex accepts for Claude (LiteLLM's maintained list for
/// `vertex_ai`, December 2026, the names it passes unchanged): Vertex answers 400 to any
/// other, and clients send them freely.
pub const DEFAULT_ANTHROPIC_BETAS: &str = "compact-2026-01-12,compact-2026-09-04,computer-use-2025-01-24,computer-use-2025-11-24,context-1m-2025-08-07,context-management-2025-06-27,dangerous-tool-use-2026-09-03,interleaved-thinking-2025-05-14,per-turn-control-2026-07-01,thinking-binding-controls-2026-08-01,thinking-display-updates-2026-08-18,tool-search-tool-2025-10-19,web-search-2025-03-05";

/// Two of the largest bodies at once: with a thousand streams and the allocator's slack it
/// fits the 256 MiB that `deploy.sh` gives an instance (BENCHMARKS.md has the figures).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 2 * DEFAULT_MAX_BODY_BYTES;

impl Config {
    /// Reads every variable; if any is wrong, the error names each one that is.
    pub fn from_env(env: &dyn Env, mode: Mode) -> Result<Config, ConfigErrors> {
        // The order of these reads is the order of the report, which operators and tests see.
        let mut read = Reader::new(env);
        let limits = read.limits();
        let timeouts = read.timeouts();
        let keys_reload = read.seconds("KEYS_RELOAD_SECS", 30);
        let allow_raw_model_ids = read.flag("ALLOW_RAW_MODEL_IDS", false);
        let upstream_preconnect = read.flag("UPSTREAM_PRECONNECT", true);
        let signatures = read.signatures();
        let anthropic_betas = read.anthropic_betas();
        let retries = read.retries();
        let vertex = read.vertex();
        let aliases = read.aliases(&vertex.location, limits.max_body_bytes, allow_raw_model_ids);
        let prices = read.prices();
        let (keys, keys_file) = read.keys(aliases.as_ref());
        let warnings = read.take_warnings();
        Ok(Config {
            mode,
            port: limits.port,
            initial_keys: read.finish(keys)?,
            keys_file,
            keys_reload,
            aliases: aliases.unwrap_or_default(),
            project_from_env: vertex.project,
            location: vertex.location,
            base_url: vertex.base_url,
            upstream_roots: vertex.roots,
            allow_raw_model_ids,
            prices,
            max_body_bytes: limits.max_body_bytes,
            max_buffered_bytes: limits.max_buffered_bytes,
            max_buffered_bytes_per_key: limits.max_buffered_bytes_per_key,
            min_body_bytes_per_sec: limits.min_body_bytes_per_sec,
            timeouts,
            max_connections: limits.max_connections,
            max_upstream_connections: limits.max_upstream_connections,
            upstream_preconnect,
            thought_signatures: signatures,
            retries,
            anthropic_betas,
            worker_threads: limits.worker_threads,
            warnings,
        })
    }

    /// Parses a key list against this configuration's models, as at startup.
    pub fn parse_keys(&self, json: &str) -> Result<KeySet, Vec<String>> {
        key_set(json, &self.aliases)
    }

    /// The price of a request to `alias`, which `PRICES_JSON` may give by alias or by model.
    pub fn price_of(&self, alias: &str, model: &str) -> Option<Price> {
        self.prices
            .get(alias)
            .or_else(|| self.prices.get(model))
            .copied()
    }
}

fn key_set(json: &str, aliases: &Aliases) -> Result<KeySet, Vec<String>> {
    KeySet::parse(json, |name| aliases.resolve(name).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = r#"[{"id":"a","key":"sk_test_aaaaaaaaaaaaaaaa"}]"#;

    fn parse(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigErrors> {
        let env: HashMap<&str, &str> = pairs.iter().copied().collect();
        Config::from_env(&env, Mode::Vertex)
    }

    #[test]
    fn defaults() {
        let config = parse(&[("API_KEYS_JSON", KEYS)]).unwrap();
        assert_eq!(config.port, 8080);
        assert_eq!(config.location, "global");
        assert_eq!(config.max_body_bytes, 32 * 1024 * 1024);
        assert_eq!(config.timeouts.shutdown_grace, Duration::from_secs(8));
        assert!(!config.allow_raw_model_ids && config.project_from_env.is_none());
        assert_eq!(
            config.aliases.resolve("flash").unwrap().model,
            "google/gemini-2.5-flash"
        );
        assert_eq!(
            config.aliases.resolve("pro-preview").unwrap().model,
            "google/gemini-3.1-pro-preview"
        );
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() {
        let errors = parse(&[
            ("PORT", "eighty"),
            ("MAX_BODY_BYTES", "-1"),
            ("SHUTDOWN_GRACE_SECS", "soon"),
            ("ALLOW_RAW_MODEL_IDS", "maybe"),
            ("VERTEX_LOCATION", "evil.example.com/"),
            ("GOOGLE_CLOUD_PROJECT", "My Project"),
            ("VERTEX_BASE_URL", "http://vertex.example.com"),
            ("MODEL_ALIASES_JSON", "{nope"),
            ("MODEL_FLASH_ID", "not an id"),
            ("WORKER_THREADS", "0"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = errors.0.iter().map(|e| e.var).collect();
        for var in [
            "PORT",
            "MAX_BODY_BYTES",
            "SHUTDOWN_GRACE_SECS",
            "ALLOW_RAW_MODEL_IDS",
            "VERTEX_LOCATION",
            "GOOGLE_CLOUD_PROJECT",
            "VERTEX_BASE_URL",
            "MODEL_ALIASES_JSON",
            "MODEL_FLASH_ID",
            "WORKER_THREADS",
            "API_KEYS_JSON",
        ] {
            assert!(vars.contains(&var), "{var} not reported: {errors}");
        }
        assert!(errors.to_string().contains("API_KEYS_JSON: is required"));
    }
}
