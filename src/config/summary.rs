//! The resolved configuration, as the startup log line and `vertex-proxy check` show it.

use super::Config;
use crate::models::Auth;

impl Config {
    /// The resolved configuration, for the startup log line. Holds no secret.
    pub fn summary(&self, project: &str) -> serde_json::Value {
        let aliases: serde_json::Map<String, serde_json::Value> = self
            .aliases
            .iter()
            .map(|(alias, route)| {
                let mut shown = serde_json::json!({"model": route.model, "location": route.location(), "locations": route.locations});
                // A service's URL and audience are the operator's to see (a log line, `check`).
                if let (
                    Some(upstream),
                    Auth::GoogleIdToken {
                        audience,
                        header,
                        service_key,
                    },
                ) = (&route.upstream, &route.auth)
                {
                    // The variable that holds the service's key, never the key.
                    let key_env = service_key.as_ref().map(|key| key.env.as_ref());
                    shown = serde_json::json!({"model": route.model, "upstream": upstream.base, "audience": audience.as_ref(), "auth_header": header.as_str(), "service_key_env": key_env});
                }
                (alias.to_owned(), shown)
            })
            .collect();
        serde_json::json!({
            "mode": self.mode.as_str(),
            "port": self.port,
            "project": project,
            "location": self.location,
            "base_url": self.base_url.as_ref().map(ToString::to_string),
            "upstream_extra_roots": self.upstream_roots.len(),
            "aliases": aliases,
            "keys_enabled": self.initial_keys.enabled_count(),
            "keys_source": if self.keys_file.is_some() { "API_KEYS_FILE" } else { "API_KEYS_JSON" },
            "keys_file": self.keys_file.as_ref().map(|p| p.display().to_string()),
            "keys_reload_secs": self.keys_file.as_ref().map(|_| self.keys_reload.as_secs()),
            "allow_raw_model_ids": self.allow_raw_model_ids,
            "priced_models": self.prices.keys().collect::<std::collections::BTreeSet<_>>(),
            "max_body_bytes": self.max_body_bytes,
            "max_buffered_bytes": self.max_buffered_bytes,
            "max_buffered_bytes_per_key": self.max_buffered_bytes_per_key,
            "min_body_bytes_per_sec": self.min_body_bytes_per_sec,
            "shutdown_grace_secs": self.timeouts.shutdown_grace.as_secs(),
            "max_connections": self.max_connections,
            "max_upstream_connections": self.max_upstream_connections,
            "worker_threads": self.worker_threads,
            "upstream_idle_timeout_secs": self.timeouts.upstream_idle.as_secs(),
            "max_attempts": self.retries.max_attempts,
            "retry_budget_secs": self.retries.budget.as_secs(),
            "thought_signatures": self.thought_signatures.as_str(),
            "anthropic_betas": self.anthropic_betas,
        })
    }
}
