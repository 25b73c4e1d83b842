//! Reads the environment one group of variables at a time, noting each problem and going on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use rustls::pki_types::CertificateDer;

use super::values::{flag, number, parse_base_url, positive, read_roots};
use super::{
    ConfigError, ConfigErrors, DEFAULT_ANTHROPIC_BETAS, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BUFFERED_BYTES, Env, RetryPolicy, Timeouts, is_project_id, key_set,
};
use crate::keys::KeySet;
use crate::models::{self, Aliases};
use crate::signatures::SignatureMode;
use crate::usage::{self, Price};

/// The environment, and every problem found in it so far. A bad variable is noted and its
/// default used, so that the variables read after it are still checked, and the operator
/// gets one report naming them all.
pub(super) struct Reader<'a> {
    env: &'a dyn Env,
    errors: Vec<ConfigError>,
    /// What is worth saying but stops nothing: variables that no longer do anything.
    warnings: Vec<String>,
}

pub(super) struct Limits {
    pub port: u16,
    pub max_body_bytes: usize,
    pub max_buffered_bytes: usize,
    pub max_buffered_bytes_per_key: usize,
    pub min_body_bytes_per_sec: u64,
    pub max_connections: usize,
    pub max_upstream_connections: usize,
    pub worker_threads: usize,
}

/// Which Vertex, and how it is reached.
pub(super) struct Vertex {
    pub project: Option<String>,
    pub location: String,
    pub base_url: Option<Uri>,
    pub roots: Vec<CertificateDer<'static>>,
}

impl<'a> Reader<'a> {
    pub fn new(env: &'a dyn Env) -> Reader<'a> {
        Reader {
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// `value`, if nothing was wrong with any variable.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ => Err(ConfigErrors(self.errors)),
        }
    }

    /// A variable set to nothing but blanks is not set.
    fn get(&self, name: &str) -> Option<String> {
        self.env.var(name).filter(|v| !v.trim().is_empty())
    }

    fn report(&mut self, var: &'static str, message: String) {
        self.errors.push(ConfigError { var, message });
    }

    fn checked<T>(&mut self, var: &'static str, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|e| self.report(var, e)).ok()
    }

    fn all_checked<T>(&mut self, var: &'static str, parsed: Result<T, Vec<String>>) -> Option<T> {
        parsed
            .map_err(|errs| errs.into_iter().for_each(|e| self.report(var, e)))
            .ok()
    }

    fn number<T: std::str::FromStr + Copy>(&mut self, var: &'static str, default: T) -> T {
        let parsed = number(self.get(var), default);
        self.checked(var, parsed).unwrap_or(default)
    }

    fn positive<T>(&mut self, var: &'static str, default: T) -> T
    where
        T: std::str::FromStr + PartialEq + From<u8> + Copy,
    {
        let parsed = positive(self.get(var), default);
        self.checked(var, parsed).unwrap_or(default)
    }

    pub fn seconds(&mut self, var: &'static str, default: u64) -> Duration {
        Duration::from_secs(self.positive(var, default))
    }

    pub fn flag(&mut self, var: &'static str, default: bool) -> bool {
        let parsed = flag(self.get(var), default);
        self.checked(var, parsed).unwrap_or(default)
    }
}

// The groups, in the order from_env reads them: the order of the report.
impl Reader<'_> {
    pub fn limits(&mut self) -> Limits {
        let port = self.number("PORT", 8080u16);
        let max_body_bytes = self.positive("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES);
        let max_buffered_bytes = self.positive("MAX_BUFFERED_BYTES", DEFAULT_MAX_BUFFERED_BYTES);
        if max_body_bytes > max_buffered_bytes {
            self.report(
                "MAX_BUFFERED_BYTES",
                format!(
                    "is {max_buffered_bytes}, less than MAX_BODY_BYTES ({max_body_bytes}): the largest body could never be read"
                ),
            );
        }
        // Half the budget by default, but never less than the largest body.
        let per_key_default = (max_buffered_bytes / 2).max(max_body_bytes);
        let max_buffered_bytes_per_key =
            self.positive("MAX_BUFFERED_BYTES_PER_KEY", per_key_default);
        if max_buffered_bytes_per_key < max_body_bytes {
            self.report(
                "MAX_BUFFERED_BYTES_PER_KEY",
                format!(
                    "is {max_buffered_bytes_per_key}, less than MAX_BODY_BYTES ({max_body_bytes}): the largest body could never be read"
                ),
            );
        } else if max_buffered_bytes_per_key > max_buffered_bytes {
            self.report(
                "MAX_BUFFERED_BYTES_PER_KEY",
                format!(
                    "is {max_buffered_bytes_per_key}, more than MAX_BUFFERED_BYTES ({max_buffered_bytes}), the budget it is a share of"
                ),
            );
        }
        let min_body_bytes_per_sec = self.number("MIN_BODY_BYTES_PER_SEC", 16384u64);
        let max_connections = self.positive("MAX_CONNECTIONS", 2000);
        // Cloud Run's most concurrent requests (1000), at Google's usual 100 streams a
        // connection, with room for a peer that allows fewer.
        let max_upstream_connections = self.positive("MAX_UPSTREAM_CONNECTIONS", 16);
        // What the process may use: a Cloud Run CPU limit counts.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Limits {
            port,
            max_body_bytes,
            max_buffered_bytes,
            max_buffered_bytes_per_key,
            min_body_bytes_per_sec,
            max_connections,
            max_upstream_connections,
            worker_threads: self.positive("WORKER_THREADS", cores),
        }
    }

    pub fn timeouts(&mut self) -> Timeouts {
        Timeouts {
            shutdown_grace: Duration::from_secs(self.number("SHUTDOWN_GRACE_SECS", 8)),
            connect: self.seconds("UPSTREAM_CONNECT_TIMEOUT_SECS", 10),
            token: self.seconds("TOKEN_TIMEOUT_SECS", 15),
            upstream_idle: self.seconds("UPSTREAM_IDLE_TIMEOUT_SECS", 300),
            header_read: self.seconds("HEADER_READ_TIMEOUT_SECS", 30),
            body_read: self.seconds("BODY_READ_TIMEOUT_SECS", 60),
            idle_connection: self.seconds("IDLE_CONNECTION_TIMEOUT_SECS", 620),
        }
    }

    pub fn signatures(&mut self) -> SignatureMode {
        // The per-process store went when signatures began to travel in tool-call ids: old
        // deploys that still set its variables keep starting.
        for gone in [
            "THOUGHT_SIGNATURES_CACHE_BYTES",
            "THOUGHT_SIGNATURES_TTL_SECS",
        ] {
            if self.get(gone).is_some() {
                self.warnings.push(format!(
                    "{gone} is set but no longer does anything: thought signatures travel in tool-call ids, and nothing is kept in the process; unset it"
                ));
            }
        }
        match self.get("THOUGHT_SIGNATURES").as_deref().map(str::trim) {
            None => SignatureMode::Restore,
            Some(text) => SignatureMode::parse(text).unwrap_or_else(|| {
                let message = "must be restore, fill or off".into();
                self.report("THOUGHT_SIGNATURES", message);
                SignatureMode::Restore
            }),
        }
    }

    pub fn anthropic_betas(&self) -> Vec<String> {
        self.get("ANTHROPIC_BETAS")
            .unwrap_or_else(|| DEFAULT_ANTHROPIC_BETAS.to_owned())
            .split(',')
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty())
            .collect()
    }

    pub fn retries(&mut self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.positive("MAX_ATTEMPTS", 3),
            budget: Duration::from_secs(self.number("RETRY_BUDGET_SECS", 20)),
        }
    }

    pub fn vertex(&mut self) -> Vertex {
        let location = match self.get("VERTEX_LOCATION") {
            None => "global".to_owned(),
            Some(loc) if models::is_location(loc.trim()) => loc.trim().to_owned(),
            Some(_) => {
                self.report(
                    "VERTEX_LOCATION",
                    "must be a Vertex location such as \"global\" or \"us-central1\"".into(),
                );
                "global".to_owned()
            }
        };
        let project = match self.get("GOOGLE_CLOUD_PROJECT") {
            None => None,
            Some(p) if is_project_id(p.trim()) => Some(p.trim().to_owned()),
            Some(_) => {
                self.report(
                    "GOOGLE_CLOUD_PROJECT",
                    "must be a project id: lowercase letters, digits, '-' (and 'domain:' if scoped)"
                        .into(),
                );
                None
            }
        };
        let base_url = self
            .get("VERTEX_BASE_URL")
            .and_then(|url| self.checked("VERTEX_BASE_URL", parse_base_url(url.trim())));
        let roots = self
            .get("UPSTREAM_CA_FILE")
            .and_then(|path| self.checked("UPSTREAM_CA_FILE", read_roots(path.trim())));
        Vertex {
            project,
            location,
            base_url,
            roots: roots.unwrap_or_default(),
        }
    }

    /// The alias table, with `MODEL_FLASH_ID` and `MODEL_PRO_PREVIEW_ID` applied; `None` if
    /// `MODEL_ALIASES_JSON` is wrong (the overrides are still checked, on an empty table).
    pub fn aliases(
        &mut self,
        location: &str,
        max_body_bytes: usize,
        raw_ids: bool,
    ) -> Option<Aliases> {
        let (mut aliases, parsed) = match self.get("MODEL_ALIASES_JSON") {
            None => (Aliases::default_table(location), true),
            Some(json) => {
                let parsed = Aliases::parse(&json, location, |name| self.get(name));
                match self.all_checked("MODEL_ALIASES_JSON", parsed) {
                    Some(aliases) => (aliases, true),
                    None => (Aliases::default(), false),
                }
            }
        };
        for (var, alias) in [
            ("MODEL_FLASH_ID", "flash"),
            ("MODEL_PRO_PREVIEW_ID", "pro-preview"),
        ] {
            if let Some(id) = self.get(var)
                && let Err(e) = aliases.set_model(alias, &id, location)
            {
                self.report(var, e);
            }
        }
        // Defaults are spliced into request bodies, which must stay under the limit.
        for (alias, route) in aliases.iter() {
            let size = serde_json::to_string(&route.defaults).map_or(0, |d| d.len());
            if size > max_body_bytes {
                let message = format!(
                    "alias {alias:?}: \"defaults\" is {size} bytes, more than a request body may be (MAX_BODY_BYTES)"
                );
                self.report("MODEL_ALIASES_JSON", message);
            }
        }
        if raw_ids {
            aliases.allow_raw_ids(location);
        }
        parsed.then_some(aliases)
    }

    pub fn prices(&mut self) -> HashMap<String, Price> {
        let parsed = self
            .get("PRICES_JSON")
            .map(|json| usage::parse_prices(&json));
        parsed
            .and_then(|parsed| self.all_checked("PRICES_JSON", parsed))
            .unwrap_or_default()
    }

    /// The keys, and the file they came from if they came from one. Without an alias table
    /// (`MODEL_ALIASES_JSON` is wrong) keys' `models` names go unchecked: each would be
    /// reported as unknown, when the table is what is wrong.
    pub fn keys(&mut self, aliases: Option<&Aliases>) -> (Option<KeySet>, Option<PathBuf>) {
        let parse = |json: &str| match aliases {
            Some(aliases) => key_set(json, aliases),
            None => KeySet::parse(json, |_| true),
        };
        let json = self.get("API_KEYS_JSON");
        let path = self.get("API_KEYS_FILE").map(|p| PathBuf::from(p.trim()));
        match (&json, &path) {
            (Some(_), Some(_)) => self.report(
                "API_KEYS_FILE",
                "and API_KEYS_JSON are both set; set only one of them".into(),
            ),
            (None, None) => self.report(
                "API_KEYS_JSON",
                "is required (or API_KEYS_FILE): a JSON array such as [{\"id\": \"me\", \"key\": \"<at least 16 characters>\"}]".into(),
            ),
            _ => {}
        }
        // Both are checked when both are set, so that the one kept is right already.
        let from_json = json.and_then(|json| self.all_checked("API_KEYS_JSON", parse(&json)));
        let from_file = path.as_ref().and_then(|path| {
            let keys = std::fs::read_to_string(path)
                .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])
                .and_then(|json| parse(&json));
            self.all_checked("API_KEYS_FILE", keys)
        });
        (from_json.or(from_file), path)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Mode};
    use super::*;

    const KEYS: &str = r#"[{"id":"a","key":"sk_test_aaaaaaaaaaaaaaaa"}]"#;

    fn parse(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigErrors> {
        let env: HashMap<&str, &str> = pairs.iter().copied().collect();
        Config::from_env(&env, Mode::Vertex)
    }

    #[test]
    fn new_settings_have_their_defaults_and_are_checked() {
        let config = parse(&[("API_KEYS_JSON", KEYS)]).unwrap();
        assert_eq!(config.thought_signatures, SignatureMode::Restore);
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
    fn keys_are_not_judged_against_an_alias_table_that_failed() {
        // Every `models` name would be "unknown": the table is what is wrong.
        let errors = parse(&[
            ("MODEL_ALIASES_JSON", "{nope"),
            (
                "API_KEYS_JSON",
                r#"[{"id":"a","key":"sk_test_aaaaaaaaaaaaaaaa","models":["flash","gemma"]}]"#,
            ),
        ])
        .unwrap_err();
        let vars: Vec<&str> = errors.0.iter().map(|e| e.var).collect();
        assert_eq!(vars, ["MODEL_ALIASES_JSON"], "{errors}");
        // A refused service_key_env fails the table too, under its variable.
        let errors = parse(&[
            (
                "MODEL_ALIASES_JSON",
                r#"{"gemma":{"upstream":"https://x/v1","model":"m","auth_header":"x-serverless-authorization","service_key_env":"API_KEYS_JSON"}}"#,
            ),
            (
                "API_KEYS_JSON",
                r#"[{"id":"a","key":"sk_test_aaaaaaaaaaaaaaaa","models":["gemma"]}]"#,
            ),
        ])
        .unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].var, "MODEL_ALIASES_JSON");
        assert!(
            errors.0[0]
                .message
                .contains("names API_KEYS_JSON, which the proxy reads itself")
        );
    }

    #[test]
    fn with_both_key_sources_set_each_ones_own_problems_are_reported_too() {
        let path =
            std::env::temp_dir().join(format!("vertex-proxy-keys-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"[{"id":"f","key":"sk_test_ffffffffffffffff","colour":"red"}]"#,
        )
        .unwrap();
        let env: HashMap<&str, &str> = [
            ("API_KEYS_JSON", r#"[{"id":"j","key":"short"}]"#),
            ("API_KEYS_FILE", path.to_str().unwrap()),
        ]
        .into();
        let errors = Config::from_env(&env, Mode::Vertex).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| format!("{}: {}", e.var, e.message))
            .collect();
        assert_eq!(lines.len(), 3, "{errors}");
        assert!(
            lines[0].starts_with("API_KEYS_FILE: and API_KEYS_JSON are both set"),
            "{errors}"
        );
        assert!(
            lines[1].starts_with("API_KEYS_JSON: entry 0 (\"j\"): \"key\" is shorter"),
            "{errors}"
        );
        assert!(
            lines[2].starts_with("API_KEYS_FILE: entry 0 (\"f\"): unknown field \"colour\""),
            "{errors}"
        );
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
    fn a_keys_share_holds_the_largest_body_and_no_more_than_the_budget() {
        let config = parse(&[("API_KEYS_JSON", KEYS)]).unwrap();
        assert_eq!(config.max_buffered_bytes_per_key, config.max_body_bytes);
        assert_eq!(config.min_body_bytes_per_sec, 16384);
        // Half the budget, but never less than the largest body.
        let config = parse(&[
            ("API_KEYS_JSON", KEYS),
            ("MAX_BODY_BYTES", "1000"),
            ("MAX_BUFFERED_BYTES", "1500"),
            ("MIN_BODY_BYTES_PER_SEC", "0"),
        ])
        .unwrap();
        assert_eq!(config.max_buffered_bytes_per_key, 1000);
        assert_eq!(config.min_body_bytes_per_sec, 0);
        // Every problem at once, each naming its variable.
        let errors = parse(&[
            ("API_KEYS_JSON", KEYS),
            ("MAX_BODY_BYTES", "2000"),
            ("MAX_BUFFERED_BYTES_PER_KEY", "1000"),
            ("MIN_BODY_BYTES_PER_SEC", "fast"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = errors.0.iter().map(|e| e.var).collect();
        assert_eq!(
            vars,
            ["MAX_BUFFERED_BYTES_PER_KEY", "MIN_BODY_BYTES_PER_SEC"]
        );
        assert!(
            errors.0[0]
                .message
                .contains("less than MAX_BODY_BYTES (2000)")
        );
        let errors = parse(&[
            ("API_KEYS_JSON", KEYS),
            ("MAX_BUFFERED_BYTES_PER_KEY", "1e12"),
        ]);
        assert_eq!(errors.unwrap_err().0[0].var, "MAX_BUFFERED_BYTES_PER_KEY");
        let errors = parse(&[
            ("API_KEYS_JSON", KEYS),
            ("MAX_BUFFERED_BYTES", "67108864"),
            ("MAX_BUFFERED_BYTES_PER_KEY", "67108865"),
        ])
        .unwrap_err();
        assert!(errors.0[0].message.contains("more than MAX_BUFFERED_BYTES"));
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
            config.aliases.resolve("flash").unwrap().model,
            "google/gemini-2.5-flash-lite"
        );
        assert_eq!(
            config.aliases.resolve("pro-preview").unwrap().model,
            "google/gemini-3-pro-preview"
        );
        assert_eq!(
            config.base_url.unwrap().to_string(),
            "http://127.0.0.1:9000/"
        );

        // Credentials in the base URL are refused, and neither quoted nor shown.
        let errors = parse(&[
            ("API_KEYS_JSON", KEYS),
            ("VERTEX_BASE_URL", "https://user:hunter2@vertex.example.com"),
        ])
        .unwrap_err();
        assert_eq!(errors.0[0].var, "VERTEX_BASE_URL");
        assert!(errors.0[0].message.starts_with("may not hold credentials"));
        assert!(!errors.to_string().contains("hunter2"), "{errors}");

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
