//! Token usage and its cost: read from the tail of Vertex's response as it streams past, and
//! priced with `PRICES_JSON`.
//!
//! Vertex sends `usage` last: in the final SSE chunk before `data: [DONE]`, or at the end of a
//! JSON body. Keeping a bounded tail of the bytes and parsing it once the response has ended
//! adds no latency and no buffering to the stream itself.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// How much of the end of a response is kept; the usage object is a few hundred bytes.
const TAIL: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    pub fn cost(&self, usage: &Usage) -> f64 {
        let prompt = usage.prompt_tokens.unwrap_or(0) as f64;
        let completion = usage.completion_tokens.unwrap_or(0) as f64;
        (prompt * self.input + completion * self.output) / 1_000_000.0
    }
}

/// Parses `PRICES_JSON`: `{"flash": {"input": 0.30, "output": 2.50}, ...}`, keyed by alias or
/// Vertex model id.
pub fn parse_prices(json: &str) -> Result<HashMap<String, Price>, Vec<String>> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| vec![format!("is not valid JSON ({e})")])?;
    let Value::Object(map) = value else {
        return Err(vec![
            "must be an object like {\"flash\": {\"input\": 0.30, \"output\": 2.50}} (USD per million tokens)".into(),
        ]);
    };
    let mut errors = Vec::new();
    let mut prices = HashMap::new();
    for (name, entry) in map {
        let field = |f: &str| {
            entry
                .get(f)
                .and_then(Value::as_f64)
                .filter(|p| *p >= 0.0 && p.is_finite())
        };
        let known = entry
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "input" || k == "output"));
        match (field("input"), field("output"), known) {
            (Some(input), Some(output), true) => {
                prices.insert(name, Price { input, output });
            }
            _ => errors.push(format!(
                "{name:?} must be {{\"input\": USD, \"output\": USD}} per million tokens, both numbers >= 0"
            )),
        }
    }
    if errors.is_empty() {
        Ok(prices)
    } else {
        Err(errors)
    }
}

/// The last bytes of a response, kept while it streams past.
#[derive(Debug, Default)]
pub struct Tail(Vec<u8>);

impl Tail {
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.len() >= TAIL {
            self.0.clear();
            self.0.extend_from_slice(&bytes[bytes.len() - TAIL..]);
            return;
        }
        self.0.extend_from_slice(bytes);
        // Trimming only past twice the size keeps the copying amortised over many chunks.
        if self.0.len() > 2 * TAIL {
            self.0.drain(..self.0.len() - TAIL);
        }
    }

    /// The last `"usage": {...}` object in the tail that parses, if any.
    pub fn usage(&self) -> Option<Usage> {
        let bytes = &self.0;
        let needle = b"\"usage\"";
        let mut end = bytes.len();
        while let Some(at) = rfind(&bytes[..end], needle) {
            end = at;
            // An escaped quote means the word was inside a string (say, in the model's answer).
            if at > 0 && bytes[at - 1] == b'\\' {
                continue;
            }
            let rest = skip_space(&bytes[at + needle.len()..]);
            let Some(rest) = rest.strip_prefix(b":") else {
                continue;
            };
            let rest = skip_space(rest);
            if rest.first() != Some(&b'{') {
                continue; // `"usage": null` in a chunk that has none
            }
            if let Some(object) = balanced_object(rest)
                && let Ok(usage) = serde_json::from_slice::<Usage>(object)
            {
                return Some(usage);
            }
        }
        None
    }
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

fn skip_space(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// The JSON object at the start of `bytes`, up to its matching brace.
fn balanced_object(bytes: &[u8]) -> Option<&[u8]> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(&bytes[..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_of(chunks: &[&str]) -> Option<Usage> {
        let mut tail = Tail::default();
        for chunk in chunks {
            tail.push(chunk.as_bytes());
        }
        tail.usage()
    }

    const USAGE: Usage = Usage {
        prompt_tokens: Some(12),
        completion_tokens: Some(30),
        total_tokens: Some(42),
    };

    #[test]
    fn finds_usage_in_the_last_sse_chunk() {
        let chunks = [
            "data: {\"choices\":[{\"delta\":{\"content\":\"say \\\"usage\\\": {\\\"prompt_tokens\\\": 1}\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"completion_tokens\":30,\"prompt_tokens\":12,\"total_tokens\":42,\"completion_tokens_details\":{\"reasoning_tokens\":3}}}\n\n",
            "data: [DONE]\n\n",
        ];
        assert_eq!(usage_of(&chunks), Some(USAGE));
    }

    #[test]
    fn finds_usage_at_the_end_of_a_large_json_body() {
        let content = "x".repeat(100_000);
        let body = format!(
            "{{\"choices\":[{{\"message\":{{\"content\":\"{content}\"}}}}],\"usage\" : {{\"prompt_tokens\":12,\"completion_tokens\":30,\"total_tokens\":42}}}}"
        );
        let (a, b) = body.split_at(50_000);
        assert_eq!(usage_of(&[a, b]), Some(USAGE));
    }

    #[test]
    fn no_usage_means_none() {
        assert_eq!(
            usage_of(&["data: {\"choices\":[]}\n\n", "data: [DONE]\n\n"]),
            None
        );
        assert_eq!(usage_of(&["{\"usage\": {\"prompt_tokens\": 1"]), None);
        assert_eq!(usage_of(&[]), None);
    }

    #[test]
    fn the_tail_stays_bounded() {
        let mut tail = Tail::default();
        for _ in 0..1000 {
            tail.push(&[b'a'; 100]);
        }
        assert!(tail.0.len() <= 2 * TAIL);
        tail.push(&vec![b'b'; 3 * TAIL]);
        assert_eq!(tail.0.len(), TAIL);
    }

    #[test]
    fn prices_parse_and_cost() {
        let prices = parse_prices(r#"{"flash": {"input": 0.30, "output": 2.50}, "google/gemini-3-pro-preview": {"input": 2, "output": 12}}"#).unwrap();
        let cost = prices["flash"].cost(&USAGE);
        assert!((cost - (12.0 * 0.30 + 30.0 * 2.50) / 1e6).abs() < 1e-15);
        assert_eq!(prices["google/gemini-3-pro-preview"].input, 2.0);
        let errors = parse_prices(r#"{"a": {"input": -1, "output": 1}, "b": {"input": 1}, "c": 3, "d": {"input": 1, "output": 1, "cached": 1}}"#).unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(parse_prices("[]").is_err() && parse_prices("{").is_err());
    }
}
