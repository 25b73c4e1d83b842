//! Configuration from the environment: every variable parsed, every problem reported at once.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use rustls::pki_types::CertificateDer;

use crate::keys::KeySet;
use crate::models::{self, Aliases};
use crate::signatures;
use crate::usage::{self, Price};

mod summary;
pub(crate) mod values;

pub use values::is_project_id;
use values::{number, parse_base_url, positive, read_roots};

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
    pub timeouts: Timeouts,
    /// Connections served at once; further ones wait in the listen queue.
    pub max_connections: usize,
    /// `MAX_UPSTREAM_CONNECTIONS`: HTTP/2 connections per upstream origin and worker.
    pub max_upstream_connections: usize,
    /// `UPSTREAM_PRECONNECT`: each worker opens its upstream connections at startup.
    pub upstream_preconnect: bool,
    /// `THOUGHT_SIGNATURES`: what Gemini 3 history that lost its signatures gets.
    pub thought_signatures: signatures::SignatureMode,
    /// `THOUGHT_SIGNATURES_CACHE_BYTES` and `THOUGHT_SIGNATURES_TTL_SECS`: the store of
    /// signatures `restore` puts back.
    pub signature_cache_bytes: usize,
    pub signature_ttl: Duration,
    pub retries: RetryPolicy,
    /// `ANTHROPIC_BETAS`: the `anthropic-beta` values passed to Claude on Vertex.
    pub anthropic_betas: Vec<String>,
    /// Threads serving requests, each with its own runtime and upstream pool.
    pub worker_threads: usize,
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
    pub fn from_env(env: &dyn Env, mode: Mode) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let get = |name: &str| env.var(name).filter(|v| !v.trim().is_empty());

        let port = or_report(&mut errors, "PORT", number(get("PORT"), 8080u16), 0);
        let max_body_bytes = or_report(
            &mut errors,
            "MAX_BODY_BYTES",
            positive(get("MAX_BODY_BYTES"), DEFAULT_MAX_BODY_BYTES),
            DEFAULT_MAX_BODY_BYTES,
        );
        let max_buffered_bytes = or_report(
            &mut errors,
            "MAX_BUFFERED_BYTES",
            positive(get("MAX_BUFFERED_BYTES"), DEFAULT_MAX_BUFFERED_BYTES),
            DEFAULT_MAX_BUFFERED_BYTES,
        );
        if max_body_bytes > max_buffered_bytes {
            report(
                &mut errors,
                "MAX_BUFFERED_BYTES",
                format!(
                    "is {max_buffered_bytes}, less than MAX_BODY_BYTES ({max_body_bytes}): the largest body could never be read"
                ),
            );
        }
        let max_connections = or_report(
            &mut errors,
            "MAX_CONNECTIONS",
            positive(get("MAX_CONNECTIONS"), 2000),
            2000,
        );
        // Cloud Run's most concurrent requests (1000), at Google's usual 100 streams a
        // connection, with room for a peer that allows fewer.
        let max_upstream_connections = or_report(
            &mut errors,
            "MAX_UPSTREAM_CONNECTIONS",
            positive(get("MAX_UPSTREAM_CONNECTIONS"), 16),
            16,
        );
        // What the process may use: a Cloud Run CPU limit counts.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let worker_threads = or_report(
            &mut errors,
            "WORKER_THREADS",
            positive(get("WORKER_THREADS"), cores),
            cores,
        );
        let mut seconds = |var: &'static str, default: u64, at_least_one: bool| {
            let parsed = if at_least_one {
                positive(get(var), default)
            } else {
                number(get(var), default)
            };
            Duration::from_secs(or_report(&mut errors, var, parsed, default))
        };
        let timeouts = Timeouts {
            shutdown_grace: seconds("SHUTDOWN_GRACE_SECS", 8, false),
            connect: seconds("UPSTREAM_CONNECT_TIMEOUT_SECS", 10, true),
            token: seconds("TOKEN_TIMEOUT_SECS", 15, true),
            upstream_idle: seconds("UPSTREAM_IDLE_TIMEOUT_SECS", 300, true),
            header_read: seconds("HEADER_READ_TIMEOUT_SECS", 30, true),
            body_read: seconds("BODY_READ_TIMEOUT_SECS", 60, true),
            idle_connection: seconds("IDLE_CONNECTION_TIMEOUT_SECS", 620, true),
        };
        let keys_reload = seconds("KEYS_RELOAD_SECS", 30, true);

        let mut flag = |var: &'static str, default: bool| match get(var).as_deref().map(str::trim) {
            None => default,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(_) => {
                report(&mut errors, var, "must be true or false".into());
                default
            }
        };
        let allow_raw_model_ids = flag("ALLOW_RAW_MODEL_IDS", false);
        let upstream_preconnect = flag("UPSTREAM_PRECONNECT", true);
        let thought_signatures = match get("THOUGHT_SIGNATURES").as_deref().map(str::trim) {
            None => signatures::SignatureMode::Restore,
            Some(text) => signatures::SignatureMode::parse(text).unwrap_or_else(|| {
                let message = "must be restore, fill or off".into();
                report(&mut errors, "THOUGHT_SIGNATURES", message);
                signatures::SignatureMode::Restore
            }),
        };
        let signature_cache_bytes = or_report(
            &mut errors,
            "THOUGHT_SIGNATURES_CACHE_BYTES",
            positive(get("THOUGHT_SIGNATURES_CACHE_BYTES"), 8 << 20),
            8 << 20,
        );
        let signature_ttl = Duration::from_secs(or_report(
            &mut errors,
            "THOUGHT_SIGNATURES_TTL_SECS",
            positive(get("THOUGHT_SIGNATURES_TTL_SECS"), 3600),
            3600,
        ));
        let anthropic_betas: Vec<String> = get("ANTHROPIC_BETAS")
            .unwrap_or_else(|| DEFAULT_ANTHROPIC_BETAS.to_owned())
            .split(',')
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        let retries = RetryPolicy {
            max_attempts: or_report(
                &mut errors,
                "MAX_ATTEMPTS",
                positive(get("MAX_ATTEMPTS"), 3),
                3,
            ),
            budget: Duration::from_secs(or_report(
                &mut errors,
                "RETRY_BUDGET_SECS",
                number(get("RETRY_BUDGET_SECS"), 20),
                20,
            )),
        };

        let location = match get("VERTEX_LOCATION") {
            None => "global".to_owned(),
            Some(loc) if models::is_location(loc.trim()) => loc.trim().to_owned(),
            Some(_) => {
                report(
                    &mut errors,
                    "VERTEX_LOCATION",
                    "must be a Vertex location such as \"global\" or \"us-central1\"".into(),
                );
                "global".to_owned()
            }
        };

        let project_from_env = match get("GOOGLE_CLOUD_PROJECT") {
            None => None,
            Some(p) if is_project_id(p.trim()) => Some(p.trim().to_owned()),
            Some(_) => {
                report(&mut errors,
                    "GOOGLE_CLOUD_PROJECT",
                    "must be a project id: lowercase letters, digits, '-' (and 'domain:' if scoped)"
                        .into(),
                );
                None
            }
        };

        let base_url = get("VERTEX_BASE_URL").and_then(|url| {
            parse_base_url(url.trim())
                .map_err(|e| report(&mut errors, "VERTEX_BASE_URL", e))
                .ok()
        });

        let upstream_roots = get("UPSTREAM_CA_FILE").map_or_else(Vec::new, |path| {
            read_roots(path.trim()).unwrap_or_else(|e| {
                report(&mut errors, "UPSTREAM_CA_FILE", e);
                Vec::new()
            })
        });

        let mut aliases = match get("MODEL_ALIASES_JSON") {
            None => Aliases::default_table(&location),
            Some(json) => Aliases::parse(&json, &location).unwrap_or_else(|errs| {
                for e in errs {
                    report(&mut errors, "MODEL_ALIASES_JSON", e);
                }
                Aliases::default()
            }),
        };
        for (var, alias) in [
            ("MODEL_FLASH_ID", "flash"),
            ("MODEL_PRO_PREVIEW_ID", "pro-preview"),
        ] {
            if let Some(id) = get(var)
                && let Err(e) = aliases.set_model(alias, &id, &location)
            {
                report(&mut errors, var, e);
            }
        }

        for (alias, route) in aliases.iter() {
            let size = serde_json::to_string(&route.defaults).map_or(0, |d| d.len());
            if size > max_body_bytes {
                let message = format!(
                    "alias {alias:?}: \"defaults\" is {size} bytes, more than a request body may be (MAX_BODY_BYTES)"
                );
                report(&mut errors, "MODEL_ALIASES_JSON", message);
            }
        }

        let prices = match get("PRICES_JSON") {
            None => HashMap::new(),
            Some(json) => usage::parse_prices(&json).unwrap_or_else(|errs| {
                for e in errs {
                    report(&mut errors, "PRICES_JSON", e);
                }
                HashMap::new()
            }),
        };
        if allow_raw_model_ids {
            aliases.allow_raw_ids(&location);
        }
        let parse_keys = |json: &str| key_set(json, &aliases);
        let (keys, keys_file) = match (get("API_KEYS_JSON"), get("API_KEYS_FILE")) {
            (Some(_), Some(_)) => {
                report(
                    &mut errors,
                    "API_KEYS_FILE",
                    "and API_KEYS_JSON are both set; set only one of them".into(),
                );
                (None, None)
            }
            (Some(json), None) => {
                let keys = parse_keys(&json).map_err(|errs| {
                    for e in errs {
                        report(&mut errors, "API_KEYS_JSON", e);
                    }
                });
                (keys.ok(), None)
            }
            (None, Some(path)) => {
                let path = PathBuf::from(path.trim());
                let keys = std::fs::read_to_string(&path)
                    .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])
                    .and_then(|json| parse_keys(&json))
                    .map_err(|errs| {
                        for e in errs {
                            report(&mut errors, "API_KEYS_FILE", e);
                        }
                    });
                (keys.ok(), Some(path))
            }
            (None, None) => {
                report(&mut errors,
                    "API_KEYS_JSON",
                    "is required (or API_KEYS_FILE): a JSON array such as [{\"id\": \"me\", \"key\": \"<at least 16 characters>\"}]".into(),
                );
                (None, None)
            }
        };

        match keys {
            Some(initial_keys) if errors.is_empty() => Ok(Config {
                mode,
                port,
                initial_keys,
                keys_file,
                keys_reload,
                aliases,
                project_from_env,
                location,
                base_url,
                upstream_roots,
                allow_raw_model_ids,
                prices,
                max_body_bytes,
                max_buffered_bytes,
                timeouts,
                max_connections,
                max_upstream_connections,
                upstream_preconnect,
                thought_signatures,
                signature_cache_bytes,
                signature_ttl,
                retries,
                anthropic_betas,
                worker_threads,
            }),
            _ => Err(ConfigErrors(errors)),
        }
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

fn report(errors: &mut Vec<ConfigError>, var: &'static str, message: String) {
    errors.push(ConfigError { var, message });
}

/// The parsed value, or `default` with the problem reported against `var`.
fn or_report<T>(
    errors: &mut Vec<ConfigError>,
    var: &'static str,
    parsed: Result<T, String>,
    default: T,
) -> T {
    parsed.unwrap_or_else(|e| {
        report(errors, var, e);
        default
    })
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
            config.aliases.get("flash").unwrap().model,
            "google/gemini-2.5-flash"
        );
        assert_eq!(
            config.aliases.get("pro-preview").unwrap().model,
            "google/gemini-3.1-pro-preview"
        );
    }

    #[test]
    fn new_settings_have_their_defaults_and_are_checked() {
        let config = parse(&[("API_KEYS_JSON", KEYS)]).unwrap();
        assert_eq!(
            config.thought_signatures,
            signatures::SignatureMode::Restore
        );
        assert_eq!(config.retries.max_attempts, 3);
        assert_eq!(config.retries.budget, Duration::from_secs(20));
        assert!(
            config
                .anthropic_betas
                .iter()
                .any(|b| b == "interleaved-thinking-2025-05-14")
        );
        let errors = parse(&[
            ("API_KEYS_JSON", KEYS),
            ("THOUGHT_SIGNATURES", "sometimes"),
            ("MAX_ATTEMPTS", "0"),
            ("MAX_BODY_BYTES", "100"),
            (
                "MODEL_ALIASES_JSON",
                r#"{"a":{"model":"p/m","defaults":{"x":"a string well over one hundred bytes, a string well over one hundred bytes, a string well over"}}}"#,
            ),
        ])
        .unwrap_err()
        .to_string();
        for var in [
            "THOUGHT_SIGNATURES",
            "MAX_ATTEMPTS",
            "MODEL_ALIASES_JSON: alias \"a\": \"defaults\" is",
        ] {
            assert!(errors.contains(var), "{var}: {errors}");
        }
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

    #[test]
    fn the_buffer_budget_holds_the_largest_body() {
        let config = parse(&[("API_KEYS_JSON", KEYS)]).unwrap();
        assert_eq!(config.max_buffered_bytes, 2 * config.max_body_bytes);
        let errors = parse(&[
            ("API_KEYS_JSON", KEYS),
            ("MAX_BODY_BYTES", "2000"),
            ("MAX_BUFFERED_BYTES", "1000"),
        ])
        .unwrap_err();
        assert_eq!(errors.0[0].var, "MAX_BUFFERED_BYTES");
        assert!(errors.0[0].message.contains("less than MAX_BODY_BYTES"));
    }

    #[test]
    fn overrides_and_cross_checks() {
        let config = parse(&[
            ("API_KEYS_JSON", KEYS),
            ("MODEL_FLASH_ID", "google/gemini-2.5-flash-lite"),
            ("MODEL_PRO_PREVIEW_ID", "gemini-3-pro-preview"),
            ("VERTEX_BASE_URL", "http://127.0.0.1:9000/"),
            ("ALLOW_RAW_MODEL_IDS", "TRUE"),
        ])
        .unwrap();
        assert_eq!(
            config.aliases.get("flash").unwrap().model,
            "google/gemini-2.5-flash-lite"
        );
        assert_eq!(
            config.aliases.get("pro-preview").unwrap().model,
            "google/gemini-3-pro-preview"
        );
        assert_eq!(
            config.base_url.unwrap().to_string(),
            "http://127.0.0.1:9000/"
        );

        // A key limited to a model that is not configured is a startup error.
        let errors = parse(&[(
            "API_KEYS_JSON",
            r#"[{"id":"a","key":"sk_test_aaaaaaaaaaaaaaaa","models":["gpt-4"]}]"#,
        )])
        .unwrap_err();
        assert_eq!(errors.0[0].var, "API_KEYS_JSON");
        assert!(errors.0[0].message.contains("\"gpt-4\""));
    }
}
