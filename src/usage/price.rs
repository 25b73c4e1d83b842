//! `PRICES_JSON`: what a million tokens cost, by alias or Vertex model id, and a request's
//! cost from its usage.

use std::collections::HashMap;

use serde_json::Value;

use super::Usage;
use crate::repeats;

/// USD per million tokens. Cache prices are Claude's; without them, cached tokens cost what
/// input does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
}

impl Price {
    pub fn cost(&self, usage: &Usage) -> f64 {
        let count = |n: Option<u64>| n.unwrap_or(0) as f64;
        // Gemini counts its cached tokens within the prompt's.
        let cached = count(usage.cached_tokens);
        let input = count(usage.prompt_tokens.or(usage.input_tokens)) - cached;
        let output = count(usage.completion_tokens.or(usage.output_tokens));
        let read = count(usage.cache_read_input_tokens) + cached;
        let write = count(usage.cache_creation_input_tokens);
        (input * self.input
            + output * self.output
            + read * self.cache_read.unwrap_or(self.input)
            + write * self.cache_write.unwrap_or(self.input))
            / 1_000_000.0
    }
}

/// Parses `PRICES_JSON`: `{"flash": {"input": 0.30, "output": 2.50}, ...}`, keyed by alias or
/// Vertex model id; `cache_read` and `cache_write` may be added (Claude's cached tokens).
pub fn parse_prices(json: &str) -> Result<HashMap<String, Price>, Vec<String>> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| vec![format!("is not valid JSON ({e})")])?;
    let Value::Object(map) = value else {
        return Err(vec![
            "must be an object like {\"flash\": {\"input\": 0.30, \"output\": 2.50}} (USD per million tokens)".into(),
        ]);
    };
    // The last of a repeated name would win without a word.
    let mut errors = repeats::by_entry(json, "");
    let mut prices = HashMap::new();
    for (name, entry) in map {
        let field = |f: &str| {
            entry
                .get(f)
                .and_then(Value::as_f64)
                .filter(|p| *p >= 0.0 && p.is_finite())
        };
        const FIELDS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];
        let known = entry
            .as_object()
            .is_some_and(|o| o.keys().all(|k| FIELDS.contains(&k.as_str())));
        let cache_ok = ["cache_read", "cache_write"]
            .iter()
            .all(|f| entry.get(f).is_none() || field(f).is_some());
        match (field("input"), field("output"), known && cache_ok) {
            (Some(input), Some(output), true) => {
                let (cache_read, cache_write) = (field("cache_read"), field("cache_write"));
                let price = Price {
                    input,
                    output,
                    cache_read,
                    cache_write,
                };
                prices.insert(name, price);
            }
            _ => errors.push(format!(
                "{name:?} must be {{\"input\": USD, \"output\": USD}} per million tokens, both numbers >= 0, and may add \"cache_read\" and \"cache_write\""
            )),
        }
    }
    if errors.is_empty() {
        Ok(prices)
    } else {
        Err(errors)
    }
}
