//! Token usage and its cost: read from the ends of Vertex's response as it streams past, and
//! priced with `PRICES_JSON`.
//!
//! Vertex sends `usage` last: in the final SSE chunk before `data: [DONE]`, or at the end of a
//! JSON body. Claude's streams also give their input counts first, in `message_start`.
//! Keeping a bounded head and tail of the bytes and parsing them once the response has ended
//! adds no latency and no buffering to the stream itself.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::repeats;

/// How much of the end of a response is kept; the usage object is a few hundred bytes.
const TAIL: usize = 16 * 1024;

/// Counts as OpenAI's endpoints give them, or as Claude's do; Gemini's native ones are read
/// into OpenAI's names, with their thinking and cached counts beside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    /// Gemini's `thoughtsTokenCount`, which `completion_tokens` includes: billed as output.
    #[serde(skip)]
    pub thoughts_tokens: Option<u64>,
    /// Gemini's `cachedContentTokenCount`, which `prompt_tokens` includes.
    #[serde(skip)]
    pub cached_tokens: Option<u64>,
}

/// Gemini's `usageMetadata`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    total_token_count: Option<u64>,
}

impl From<GeminiUsage> for Usage {
    fn from(gemini: GeminiUsage) -> Usage {
        let output = match (gemini.candidates_token_count, gemini.thoughts_token_count) {
            (None, None) => None,
            (answer, thoughts) => Some(answer.unwrap_or(0) + thoughts.unwrap_or(0)),
        };
        Usage {
            prompt_tokens: gemini.prompt_token_count,
            completion_tokens: output,
            total_tokens: gemini.total_token_count,
            thoughts_tokens: gemini.thoughts_token_count,
            cached_tokens: gemini.cached_content_token_count,
            ..Usage::default()
        }
    }
}

impl Usage {
    /// Whether these are Claude's counts.
    pub fn is_anthropic(&self) -> bool {
        self.input_tokens.is_some() || self.output_tokens.is_some()
    }

    /// The counts of `later`, and where it has none, these: a stream's `message_delta`
    /// over its `message_start`.
    pub fn then(self, later: Usage) -> Usage {
        Usage {
            prompt_tokens: later.prompt_tokens.or(self.prompt_tokens),
            completion_tokens: later.completion_tokens.or(self.completion_tokens),
            total_tokens: later.total_tokens.or(self.total_tokens),
            input_tokens: later.input_tokens.or(self.input_tokens),
            output_tokens: later.output_tokens.or(self.output_tokens),
            cache_creation_input_tokens: later
                .cache_creation_input_tokens
                .or(self.cache_creation_input_tokens),
            cache_read_input_tokens: later
                .cache_read_input_tokens
                .or(self.cache_read_input_tokens),
            thoughts_tokens: later.thoughts_tokens.or(self.thoughts_tokens),
            cached_tokens: later.cached_tokens.or(self.cached_tokens),
        }
    }
}

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

/// The last bytes of a response, kept while it streams past. An answer that comes as one
/// piece is kept as that piece (`.1`, shared rather than copied: most JSON answers); from a
/// second piece on, the bytes are copied (`.0`), so that a long stream pins none of the
/// buffers its pieces came in.
#[derive(Debug, Default)]
pub struct Tail(Vec<u8>, Bytes);

impl Tail {
    /// A piece as it passes, kept without a copy if it is the first.
    pub fn push_shared(&mut self, bytes: &Bytes) {
        if self.0.is_empty() && self.1.is_empty() {
            self.1 = bytes.slice(bytes.len().saturating_sub(TAIL)..);
        } else {
            self.push(bytes);
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if !self.1.is_empty() {
            let first = std::mem::take(&mut self.1);
            self.push(&first);
        }
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

    /// The last `"usage": {...}` object in the tail that parses, if any, else Gemini's last
    /// `"usageMetadata"`.
    pub fn usage(&self) -> Option<Usage> {
        let tail: &[u8] = match self.1.is_empty() {
            true => &self.0,
            false => &self.1,
        };
        last_usage(tail).or_else(|| last_gemini_usage(tail))
    }
}

/// The first bytes of a response, kept while they stream past: Claude gives its input
/// counts in its first event.
#[derive(Debug, Default)]
pub struct Head(Vec<u8>);

/// How much of the start of a response is kept; `message_start` is a few hundred bytes.
const HEAD: usize = 4 * 1024;

impl Head {
    pub fn push(&mut self, bytes: &[u8]) {
        let room = HEAD - self.0.len();
        self.0.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// The first `"usage": {...}` object in the head that parses, if any.
    pub fn usage(&self) -> Option<Usage> {
        let needle = b"\"usage\"";
        let mut from = 0;
        while let Some(at) = memchr::memmem::find(&self.0[from..], needle) {
            let at = from + at;
            from = at + needle.len();
            if let Some(usage) = usage_at(&self.0, at) {
                return Some(usage);
            }
        }
        None
    }
}

/// The last `"usage": {...}` object in `bytes` that parses, if any. memchr's forward search
/// is vectorised and its reverse one is not: looking forward for the last occurrence took
/// about 1 k instructions fewer on a 600-byte answer (callgrind).
fn last_usage(bytes: &[u8]) -> Option<Usage> {
    static USAGE: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    let mut end = bytes.len();
    while let Some(at) = USAGE.find_iter(&bytes[..end]).last() {
        end = at;
        if let Some(usage) = usage_at(bytes, at) {
            return Some(usage);
        }
    }
    None
}

/// The last `"usageMetadata": {...}` in `bytes` that parses: a stream's last event has the
/// final counts.
fn last_gemini_usage(bytes: &[u8]) -> Option<Usage> {
    let needle = b"\"usageMetadata\"";
    let mut end = bytes.len();
    while let Some(at) = memchr::memmem::rfind(&bytes[..end], needle) {
        end = at;
        if let Some(gemini) = object_after::<GeminiUsage>(bytes, at, needle.len()) {
            return Some(gemini.into());
        }
    }
    None
}

/// The object that is the value of the key at `at` (`len` bytes, quotes included), read as
/// a `T`, if it is one.
fn object_after<T: DeserializeOwned>(bytes: &[u8], at: usize, len: usize) -> Option<T> {
    // An escaped quote means the word was inside a string (say, in the model's answer).
    if at > 0 && bytes[at - 1] == b'\\' {
        return None;
    }
    let rest = bytes[at + len..].trim_ascii_start();
    let rest = rest.strip_prefix(b":")?.trim_ascii_start();
    if rest.first() != Some(&b'{') {
        return None;
    }
    // serde stops at the object's closing brace and leaves what follows (the rest of the
    // answer) unread: one pass over the object, where finding its end first and then parsing
    // it took two (about 1 k instructions an answer, callgrind).
    T::deserialize(&mut serde_json::Deserializer::from_slice(rest)).ok()
}

/// The usage object whose key starts at `at`, if it is one.
fn usage_at(bytes: &[u8], at: usize) -> Option<Usage> {
    // `"usage": null` in a chunk that has none is no object.
    object_after(bytes, at, b"\"usage\"".len())
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
        input_tokens: None,
        output_tokens: None,
        cache_creation_input_tokens: None,
        cache_read_input_tokens: None,
        thoughts_tokens: None,
        cached_tokens: None,
    };

    #[test]
    fn geminis_usage_metadata_is_read_from_the_last_event_and_priced() {
        let chunks = [
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"say \\\"usageMetadata\\\": {}\"}]}}],\"usageMetadata\":{\"promptTokenCount\":9}}\r\n\r\n",
            "data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":1000,\"candidatesTokenCount\":300,\"thoughtsTokenCount\":200,\"cachedContentTokenCount\":400,\"totalTokenCount\":1500}}\r\n\r\n",
        ];
        let usage = usage_of(&chunks).expect("usage");
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (Some(1000), Some(500), Some(1500))
        );
        assert_eq!(
            (usage.thoughts_tokens, usage.cached_tokens),
            (Some(200), Some(400))
        );
        // 600 input at 1, 400 cached at 0.25, 500 output at 10, per million.
        let price = Price {
            input: 1.0,
            output: 10.0,
            cache_read: Some(0.25),
            cache_write: None,
        };
        assert!((price.cost(&usage) - (600.0 + 100.0 + 5000.0) / 1e6).abs() < 1e-12);
    }

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
    fn a_usage_object_that_does_not_parse_gives_way_to_the_one_before() {
        let body = "{\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":30,\"total_tokens\":42}}\n{\"usage\":{\"prompt_tokens\":}} {\"usage\":{\"prompt_tokens\":1]}";
        assert_eq!(usage_of(&[body]), Some(USAGE));
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
        // The last of a repeated name would win, silently.
        let errors = parse_prices(r#"{"flash": {"input": 1, "output": 2, "input": 0}, "pro": {"input": 1, "output": 2}, "pro": {"input": 0, "output": 0}}"#).unwrap_err();
        assert_eq!(
            errors,
            [
                "\"flash\": \"input\" is given twice",
                "\"pro\" is given twice"
            ]
        );
    }

    #[test]
    fn claude_counts_come_from_both_ends_of_a_stream_and_cache_prices_apply() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":4,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n";
        let end = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":20}}\n\n";
        let (mut head, mut tail) = (Head::default(), Tail::default());
        for chunk in [start, "event: ping\ndata: {}\n\n", end] {
            head.push(chunk.as_bytes());
            tail.push(chunk.as_bytes());
        }
        let usage = head.usage().unwrap().then(tail.usage().unwrap());
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_input_tokens,
                usage.cache_creation_input_tokens
            ),
            (Some(10), Some(20), Some(100), Some(4))
        );
        assert!(usage.is_anthropic());
        let prices = parse_prices(
            r#"{"sonnet": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}}"#,
        )
        .unwrap();
        let cost = prices["sonnet"].cost(&usage);
        assert!((cost - (10.0 * 3.0 + 20.0 * 15.0 + 100.0 * 0.3 + 4.0 * 3.75) / 1e6).abs() < 1e-15);
        assert!(parse_prices(r#"{"s": {"input": 3, "output": 15, "cache_read": "x"}}"#).is_err());
    }
}
