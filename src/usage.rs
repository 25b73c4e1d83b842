//! Token usage and its cost: read from the ends of Vertex's response as it streams past, and
//! priced with `PRICES_JSON`.
//!
//! Vertex sends `usage` last: in the final SSE chunk before `data: [DONE]`, or at the end of a
//! JSON body. Claude's streams also give their input counts first, in `message_start`.
//! Keeping a bounded head and tail of the bytes and parsing them once the response has ended
//! adds no latency and no buffering to the stream itself.

mod price;

pub use price::{Price, parse_prices};

use std::sync::LazyLock;

use bytes::Bytes;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

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

/// The last bytes of a response, kept while it streams past. An answer that comes as one
/// piece is kept as that piece (`.1`, shared rather than copied: most JSON answers); from a
/// second piece on, the bytes are copied (`.0`), so that a long stream pins none of the
/// buffers its pieces came in.
#[derive(Debug, Default)]
pub struct Tail(Vec<u8>, Bytes, bool);

impl Tail {
    /// For an answer that is an SSE stream (`sse`), or one JSON text (a JSON-array stream
    /// is one).
    pub fn new(sse: bool) -> Tail {
        Tail(Vec::new(), Bytes::new(), sse)
    }

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

    /// The counts of the answer's last `"usage"` or `"usageMetadata"` object (Gemini's) that
    /// is a member of its top-level object, or of an object there (an event's `response` or
    /// `message`). Nothing the model writes comes after the real counts, and the model's own
    /// objects (Gemini's `functionCall.args`, Claude's `tool_use.input`) lie deeper: a
    /// `usage` in them would otherwise price the request.
    pub fn usage(&self) -> Option<Usage> {
        let tail: &[u8] = match self.1.is_empty() {
            true => &self.0,
            false => &self.1,
        };
        last_usage(tail, self.2)
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

    /// The usage in a stream's `message_start` (`{"type": "message_start", "message": {...,
    /// "usage": {...}}}`), read from its first `data:` line: an event, not whatever object of
    /// the answer's first 4 KiB holds a `"usage"` (a JSON answer's `tool_use.input` may).
    pub fn usage(&self) -> Option<Usage> {
        #[derive(Deserialize)]
        struct Start {
            #[serde(rename = "type")]
            kind: String,
            message: Message,
        }
        #[derive(Deserialize)]
        struct Message {
            usage: Usage,
        }
        let data = (self.0.split(|b| *b == b'\n')).find_map(|line| line.strip_prefix(b"data:"))?;
        let start: Start = serde_json::from_slice(data.trim_ascii()).ok()?;
        (start.kind == "message_start").then_some(start.message.usage)
    }
}

/// How many objects under the keys are read, from the last, before giving up: the real one
/// is the last, and each read may walk the rest of the tail, so a model that writes
/// thousands of them must not make the search quadratic.
const TRIES: usize = 4;

/// How deep the counts may be: a member of the top-level object, or of an object that is
/// one of its members (Claude's `message_start`, the Responses API's `response.completed`).
const LEVELS: usize = 2;

/// See [`Tail::usage`]. Both keys are found in one forward search for what they begin with:
/// memchr's forward search is vectorised and its reverse one is not (about 1 k instructions
/// fewer on a 600-byte answer than searching back).
fn last_usage(bytes: &[u8], sse: bool) -> Option<Usage> {
    static USAGE: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage"));
    let found: Vec<usize> = USAGE.find_iter(bytes).collect();
    let mut tried = 0;
    for &at in found.iter().rev() {
        // An escaped quote means the word was inside a string (say, in the model's answer).
        if at > 0 && bytes[at - 1] == b'\\' {
            continue;
        }
        let after = &bytes[at + b"\"usage".len()..];
        let (gemini, after) = match (after.strip_prefix(b"\""), after.strip_prefix(b"Metadata\"")) {
            (Some(after), _) => (false, after),
            (_, Some(after)) => (true, after),
            _ => continue,
        };
        let Some(value) = after.trim_ascii_start().strip_prefix(b":") else {
            continue;
        };
        let value = value.trim_ascii_start();
        let null = value.strip_prefix(b"null");
        if null.is_none() && value.first() != Some(&b'{') {
            continue;
        }
        if tried == TRIES {
            return None;
        }
        tried += 1;
        // `"usage": null` where the counts would be says there are none: nothing before it
        // is read instead (it could be the client's, echoed). Elsewhere (a chunk of a stream
        // whose last has the counts) it is passed over.
        if let Some(after) = null {
            match closes_top_level(after, sse) {
                true => return None,
                false => continue,
            }
        }
        let read = match gemini {
            true => read_object::<GeminiUsage>(value).map(|(u, n)| (Usage::from(u), n)),
            false => read_object::<Usage>(value),
        };
        let Some((usage, n)) = read else {
            continue;
        };
        let end = bytes.len() - value.len() + n;
        if closes_top_level(&bytes[end..], sse) {
            return Some(usage);
        }
    }
    None
}

/// Where the JSON value at the start of `bytes` ends. Strings and scalars, the members that
/// follow the counts, are skipped by hand (serde's stream reader cost about 1 k instructions
/// an answer for them); objects and arrays by serde. Scalars are not checked: the answer is
/// the upstream's, and only its nesting matters here.
fn value_end(bytes: &[u8]) -> Option<usize> {
    match bytes.first()? {
        b'"' => string_end(bytes),
        b'{' | b'[' => {
            let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<IgnoredAny>();
            matches!(values.next(), Some(Ok(_))).then(|| values.byte_offset())
        }
        _ => {
            let end = bytes
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace());
            Some(end.unwrap_or(bytes.len()))
        }
    }
}

/// Where the string at the start of `bytes` (its opening quote) ends, past its closing quote.
fn string_end(bytes: &[u8]) -> Option<usize> {
    let mut at = 1;
    loop {
        at += memchr::memchr2(b'"', b'\\', bytes.get(at..)?)?;
        if bytes[at] == b'"' {
            return Some(at + 1);
        }
        at += 2;
    }
}

/// The `T` at the start of `bytes`, and where it ends. serde stops at the object's closing
/// brace and leaves what follows unread: one pass over the object.
fn read_object<T: DeserializeOwned>(bytes: &[u8]) -> Option<(T, usize)> {
    let mut objects = serde_json::Deserializer::from_slice(bytes).into_iter::<T>();
    let object = objects.next()?.ok()?;
    Some((object, objects.byte_offset()))
}

/// Whether `rest`, what follows a member's value, closes at most [`LEVELS`] objects (with
/// more members between) and then the answer (or the `]` of Gemini's JSON-array stream), or
/// in an SSE stream the event's line: a member nested deeper is followed by more closing
/// brackets.
fn closes_top_level(mut rest: &[u8], event: bool) -> bool {
    let mut closed = 0;
    loop {
        rest = rest.trim_ascii_start();
        match rest.first() {
            Some(b'}') => {
                rest = &rest[1..];
                let ended = match event {
                    true => {
                        let blank = rest.iter().take_while(|b| matches!(b, b' ' | b'\t'));
                        matches!(rest[blank.count()..].first(), None | Some(b'\r' | b'\n'))
                    }
                    false => matches!(rest.trim_ascii(), b"" | b"]"),
                };
                closed += 1;
                if ended || closed == LEVELS {
                    return ended;
                }
            }
            Some(b',') => {
                let key = rest[1..].trim_ascii_start();
                if key.first() != Some(&b'"') {
                    return false;
                }
                let Some(n) = string_end(key) else {
                    return false;
                };
                let Some(value) = key[n..].trim_ascii_start().strip_prefix(b":") else {
                    return false;
                };
                let value = value.trim_ascii_start();
                let Some(n) = value_end(value) else {
                    return false;
                };
                rest = &value[n..];
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_of(chunks: &[&str]) -> Option<Usage> {
        let sse = chunks.first().is_some_and(|c| c.starts_with("data:"));
        let mut tail = Tail::new(sse);
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
        let body = "data: {\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":30,\"total_tokens\":42}}\n\ndata: {\"usage\":{\"prompt_tokens\":}}\n\ndata: {\"usage\":{\"prompt_tokens\":1]}\n\n";
        assert_eq!(usage_of(&[body]), Some(USAGE));
    }

    /// The model writes objects of its own: Gemini's `functionCall.args`, Claude's
    /// `tool_use.input`. A `usage` in them is no count of the proxy's, whatever it holds.
    #[test]
    fn a_usage_the_model_wrote_is_not_read() {
        let event = |args: &str| {
            format!(
                "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"functionCall\":{{\"name\":\"f\",\"args\":{args}}}}}]}}}}],\"usageMetadata\":{{\"promptTokenCount\":100,\"candidatesTokenCount\":50,\"totalTokenCount\":150}},\"modelVersion\":\"gemini-2.5-flash\"}}\r\n\r\n"
            )
        };
        for args in [
            r#"{"usage":{}}"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
        ] {
            let usage = usage_of(&[&event(args)]).expect("usage");
            assert_eq!(
                (usage.prompt_tokens, usage.total_tokens),
                (Some(100), Some(150)),
                "{args}"
            );
        }
        // A JSON answer, pretty-printed as Google sends one: the nested object is followed by
        // closing brackets on later lines, the real one by the end of the answer.
        let json = "{\n  \"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"args\": {\"usage\": {\"prompt_tokens\": 1}\n}}}]}}],\n  \"usageMetadata\": {\"promptTokenCount\": 7}\n}\n";
        assert_eq!(usage_of(&[json]).and_then(|u| u.prompt_tokens), Some(7));
        // Claude's answer as JSON, the model's input first: only the top-level one counts.
        let claude = r#"{"content":[{"type":"tool_use","input":{"usage":{"cache_read_input_tokens":50000000}}}],"usage":{"input_tokens":5,"output_tokens":2}}"#;
        let usage = usage_of(&[claude]).expect("usage");
        assert_eq!(
            (usage.input_tokens, usage.cache_read_input_tokens),
            (Some(5), None)
        );
        let mut head = Head::default();
        head.push(claude.as_bytes());
        assert_eq!(head.usage(), None, "a JSON answer has no message_start");
        // Nested only: none at all rather than the model's.
        assert_eq!(
            usage_of(&[r#"{"choices":[{"args":{"usage":{"prompt_tokens":1}}}]}"#]),
            None
        );
    }

    /// Gemini's stream without `alt=sse` is one JSON array; its last element has the counts.
    #[test]
    fn the_json_array_streams_last_element_has_the_counts() {
        let array = "[{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":1}}\n,\r\n{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":2,\"totalTokenCount\":5},\"modelVersion\":\"m\"}\n]";
        assert_eq!(usage_of(&[array]).and_then(|u| u.total_tokens), Some(5));
    }

    /// An SSE event longer than the tail: its `data:` is gone, and it is still an event.
    #[test]
    fn an_event_longer_than_the_tail_is_still_read_as_one() {
        let long = "a".repeat(40_000);
        let event = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{long}\"}}}}],\"usage\":{{\"prompt_tokens\":2,\"total_tokens\":5}}}}\n\ndata: [DONE]\n\n"
        );
        assert_eq!(usage_of(&[&event]).and_then(|u| u.total_tokens), Some(5));
    }

    /// `"usage": null` where the counts would be: none, and nothing echoed before it counts.
    #[test]
    fn a_null_usage_at_the_top_means_none() {
        let answer = r#"{"id":"resp_1","output":[],"metadata":{"usage":{"input_tokens":0}},"text":{"usage":{"input_tokens":7}},"usage":null}"#;
        assert_eq!(usage_of(&[answer]), None);
        // A chunk's null before the last chunk's counts is passed over.
        let chunks = [
            "data: {\"choices\":[],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\n",
        ];
        assert_eq!(usage_of(&chunks).and_then(|u| u.prompt_tokens), Some(3));
    }

    #[test]
    fn values_after_the_counts_are_skipped_whole() {
        assert_eq!(string_end(br#""a\"b","#), Some(6));
        assert_eq!(string_end(br#""a\\","#), Some(5));
        assert_eq!(string_end(br#""open"#), None);
        assert_eq!(string_end(br#""ends in \"#), None);
        assert_eq!(value_end(b"12}"), Some(2));
        assert_eq!(value_end(br#"{"a":[1,"}"]},"#), Some(13));
        // A string holding what looks like the end of the object does not end it.
        let rest = br#","system_fingerprint":"} \" }","x":[{}]}"#;
        assert!(closes_top_level(rest, false));
        assert!(closes_top_level(br#","a":1},"b":2}"#, false), "two levels");
        assert!(!closes_top_level(br#","a":1}}}"#, false));
    }

    /// Claude's stream gives its input counts in `message_start`, under `message`.
    #[test]
    fn the_head_reads_message_start() {
        let mut head = Head::default();
        head.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[],\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n");
        assert_eq!(head.usage().and_then(|u| u.input_tokens), Some(9));
    }

    /// Thousands of `usage` objects the model wrote cost a few tries, not one walk each.
    #[test]
    fn many_usage_keys_are_tried_a_few_times_only() {
        let args = vec![r#""usage":{}"#; 3000].join(",");
        let body =
            format!("data: {{\"x\":{{\"y\":{{{args}}}}},\"usage\":{{\"prompt_tokens\":3}}}}\n\n");
        assert_eq!(usage_of(&[&body]).and_then(|u| u.prompt_tokens), Some(3));
        let body =
            format!("data: {{\"usage\":{{\"prompt_tokens\":3}},\"x\":{{\"y\":{{{args}}}}}}}\n\n");
        assert_eq!(
            usage_of(&[&body]),
            None,
            "the real one is last in every answer"
        );
        // Nulls are tries too: each may walk the rest of its object.
        let nulls = vec![r#""usage":null"#; 3000].join(",");
        let body =
            format!("data: {{\"usage\":{{\"prompt_tokens\":3}},\"x\":{{\"y\":{{{nulls}}}}}}}\n\n");
        assert_eq!(usage_of(&[&body]), None);
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
