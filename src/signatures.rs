//! Gemini 3's thought signatures, for clients that drop them: the real one put back from what
//! this instance saw (`restore`), else the documented sentinel (`fill`).
//!
//! Gemini 3 refuses a request whose current turn's tool calls lost the signature it issued
//! with them (Vertex's "Thought signatures" documentation), and many clients rebuild the
//! assistant message without `extra_content`. Signatures are read from responses as they pass
//! ([`Harvest`]), kept per API key and tool-call id in a bounded [`Store`], and spliced back
//! into requests ([`complete`]); nothing else of either is touched.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::log::SignatureCounts;
use crate::rewrite::{self, ModelField};

/// What Gemini 3 accepts in place of a thought signature it issued: for history a client
/// rebuilt, or that another model (or instance) wrote.
pub const SENTINEL: &str = "skip_thought_signature_validator";

/// `THOUGHT_SIGNATURES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMode {
    /// Put back the signature this instance saw; the sentinel when there is none.
    Restore,
    /// Always the sentinel.
    Fill,
    /// Leave requests as they are.
    Off,
}

impl SignatureMode {
    pub fn parse(text: &str) -> Option<SignatureMode> {
        match text {
            "restore" => Some(SignatureMode::Restore),
            "fill" => Some(SignatureMode::Fill),
            "off" => Some(SignatureMode::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMode::Restore => "restore",
            SignatureMode::Fill => "fill",
            SignatureMode::Off => "off",
        }
    }
}

/// Whether a Vertex model checks thought signatures.
pub fn applies_to(model: &str) -> bool {
    model.starts_with("google/gemini-3")
}

// ------------------------------------------------------------------------- the store

/// The signatures seen, by API key and tool-call id: bounded in bytes, and each kept for a
/// time to live. Shared by the workers, since a client's next request may land on any.
pub struct Store {
    inner: Mutex<Entries>,
    /// `THOUGHT_SIGNATURES_CACHE_BYTES`.
    capacity: usize,
    /// `THOUGHT_SIGNATURES_TTL_SECS`.
    ttl: Duration,
}

type Slot = (String, String);

#[derive(Default)]
struct Entries {
    map: HashMap<Slot, (String, Instant)>,
    /// Insertion order, oldest first: with one time to live, the oldest expires first.
    order: VecDeque<(Slot, Instant)>,
    bytes: usize,
}

/// What an entry costs, roughly: its strings twice (map and order) and the bookkeeping.
fn cost((key, call): &Slot, signature: &str) -> usize {
    2 * (key.len() + call.len()) + signature.len() + 96
}

impl Store {
    pub fn new(capacity: usize, ttl: Duration) -> Store {
        Store {
            inner: Mutex::default(),
            capacity,
            ttl,
        }
    }

    fn remember(&self, key_id: &str, found: Vec<(String, String)>) {
        let now = Instant::now();
        let mut entries = crate::lock(&self.inner);
        for (call, signature) in found {
            let slot = (key_id.to_owned(), call);
            let size = cost(&slot, &signature);
            if size > self.capacity {
                continue;
            }
            if let Some((old, _)) = entries.map.insert(slot.clone(), (signature, now)) {
                entries.bytes -= cost(&slot, &old);
            }
            entries.bytes += size;
            entries.order.push_back((slot, now));
        }
        entries.evict(self.capacity, self.ttl, now);
    }

    fn recall(&self, key_id: &str, call: &str) -> Option<String> {
        let entries = crate::lock(&self.inner);
        // The map is keyed by owned strings; a lookup builds the pair once.
        let slot = (key_id.to_owned(), call.to_owned());
        let (signature, at) = entries.map.get(&slot)?;
        (at.elapsed() < self.ttl).then(|| signature.clone())
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.lock().unwrap().bytes
    }
}

impl Entries {
    fn evict(&mut self, capacity: usize, ttl: Duration, now: Instant) {
        while let Some((slot, at)) = self.order.front() {
            if self.bytes <= capacity && now.duration_since(*at) < ttl {
                break;
            }
            // An entry replaced since has a newer record further on: only the live one counts.
            if self.map.get(slot).is_some_and(|(_, live)| live == at) {
                let (signature, _) = self.map.remove(slot).expect("just seen");
                self.bytes -= cost(slot, &signature);
            }
            self.order.pop_front();
        }
    }
}

// ---------------------------------------------------------------------- the requests

/// Where a signature goes: just inside the `{` of an assistant message's first tool call that
/// has no `extra_content` at all.
#[derive(Debug, PartialEq, Eq)]
struct Gap {
    at: usize,
    /// The call object is otherwise empty: no comma after the insertion.
    empty: bool,
    id: Option<String>,
}

/// The body for `new_model`, a Gemini 3 model, with a signature in each gap: the one the
/// store holds for this key and call (`restore`), else the sentinel. `None` when there is
/// nothing to put in.
pub fn complete(
    body: &Bytes,
    model: &ModelField,
    new_model: &str,
    mode: SignatureMode,
    restore: Option<(&Store, &str)>,
) -> Option<(Vec<Bytes>, SignatureCounts)> {
    if mode == SignatureMode::Off {
        return None;
    }
    let gaps = gaps(body);
    if gaps.is_empty() {
        return None;
    }
    let mut counts = SignatureCounts::default();
    let mut edits: Vec<(Range<usize>, Bytes)> = Vec::with_capacity(gaps.len() + 1);
    edits.push((model.span.clone(), rewrite::json_string(new_model)));
    for gap in gaps {
        let remembered = match (mode, restore, &gap.id) {
            (SignatureMode::Restore, Some((store, key_id)), Some(id)) => store.recall(key_id, id),
            _ => None,
        };
        let signature = match &remembered {
            Some(real) => {
                counts.restored += 1;
                real.as_str()
            }
            None => {
                counts.filled += 1;
                SENTINEL
            }
        };
        let signature = rewrite::json_string(signature);
        let comma = if gap.empty { "" } else { "," };
        let field = format!(
            r#""extra_content":{{"google":{{"thought_signature":{}}}}}{comma}"#,
            String::from_utf8_lossy(&signature)
        );
        edits.push((gap.at..gap.at, Bytes::from(field)));
    }
    Some((rewrite::splice(body, edits), counts))
}

/// The gaps in a request body. One first tool call that has `extra_content` is left alone: a
/// real signature is never overwritten, and a client's own `extra_content` is its business.
fn gaps(body: &[u8]) -> Vec<Gap> {
    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow, default)]
        messages: Vec<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(default)]
        role: Option<String>,
        #[serde(borrow, default)]
        tool_calls: Option<Vec<&'a RawValue>>,
    }
    #[derive(Deserialize)]
    struct ToolCall {
        id: Option<String>,
        extra_content: Option<IgnoredAny>,
    }
    // The body was validated by `find_model`; a shape other than the usual one means there
    // is nothing here to fill.
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    let Ok(request) = serde_json::from_str::<Request>(text) else {
        return Vec::new();
    };
    let mut gaps = Vec::new();
    for message in request.messages {
        let Ok(message) = serde_json::from_str::<Message>(message.get()) else {
            continue;
        };
        let first = match (message.role.as_deref(), message.tool_calls.as_deref()) {
            (Some("assistant"), Some([first, ..])) => *first,
            _ => continue,
        };
        let call = first.get();
        let Ok(parsed) = serde_json::from_str::<ToolCall>(call) else {
            continue;
        };
        if parsed.extra_content.is_none() && call.starts_with('{') {
            // The raw value borrows from `text`, so its offset is the distance between them.
            let start = call.as_ptr() as usize - text.as_ptr() as usize;
            gaps.push(Gap {
                at: start + 1,
                empty: call[1..].trim_start().starts_with('}'),
                id: parsed.id,
            });
        }
    }
    gaps
}

// --------------------------------------------------------------------- the responses

const NEEDLE: &[u8] = b"\"tool_calls\"";
/// The most of a response kept while a `tool_calls` array is incomplete.
const MAX_CAPTURE: usize = 1024 * 1024;

/// Reads the signatures of one response's tool calls as its bytes pass, and stores them
/// before those bytes go on to the client (so its next request finds them). Bytes are kept
/// only from a `"tool_calls"` array to its end; the stream itself is never held.
pub struct Harvest {
    store: Arc<Store>,
    key_id: String,
    /// From the first `"tool_calls"` not yet read; empty when not in one.
    capture: Vec<u8>,
    /// The end of the previous bytes, for a needle split between two frames.
    tail: Vec<u8>,
    gave_up: bool,
}

impl Harvest {
    pub fn new(store: Arc<Store>, key_id: &str) -> Harvest {
        Harvest {
            store,
            key_id: key_id.to_owned(),
            capture: Vec::new(),
            tail: Vec::new(),
            gave_up: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.gave_up {
            return;
        }
        if self.capture.is_empty() {
            let head = &bytes[..bytes.len().min(NEEDLE.len() - 1)];
            let mut window = std::mem::take(&mut self.tail);
            window.extend_from_slice(head);
            if let Some(at) = memmem::find(&window, NEEDLE) {
                self.capture.extend_from_slice(&window[at..]);
                self.capture.extend_from_slice(&bytes[head.len()..]);
            } else if let Some(at) = memmem::find(bytes, NEEDLE) {
                self.capture.extend_from_slice(&bytes[at..]);
            } else {
                let keep = window.len().min(NEEDLE.len() - 1);
                self.tail = if bytes.len() >= NEEDLE.len() - 1 {
                    bytes[bytes.len() - (NEEDLE.len() - 1)..].to_vec()
                } else {
                    window[window.len() - keep..].to_vec()
                };
                return;
            }
        } else {
            self.capture.extend_from_slice(bytes);
            // An array can only have ended where a `]` came.
            if memchr::memchr(b']', bytes).is_none() {
                return self.bound();
            }
        }
        self.read_arrays();
        self.bound();
    }

    /// Reads every complete `"tool_calls": [...]` in the capture, stores what they carry, and
    /// keeps only what may still be part of one.
    fn read_arrays(&mut self) {
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(at) = memmem::find(&self.capture[from..], NEEDLE) {
            let start = from + at;
            let after = start + NEEDLE.len();
            let rest = &self.capture[after..];
            let value = rest.trim_ascii_start();
            let Some(value) = value.strip_prefix(b":").map(<[u8]>::trim_ascii_start) else {
                if rest.trim_ascii_start().is_empty() {
                    break; // the colon has not come yet
                }
                from = after;
                continue;
            };
            if value.is_empty() {
                break;
            }
            if value[0] != b'[' {
                from = after;
                continue;
            }
            let mut calls = serde_json::Deserializer::from_slice(value).into_iter::<Vec<Call>>();
            match calls.next() {
                Some(Ok(calls_read)) => {
                    found.extend(calls_read.into_iter().filter_map(Call::signed));
                    from = self.capture.len() - value.len() + calls.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => {
                    from = start;
                    break;
                }
                _ => from = after,
            }
        }
        if !found.is_empty() {
            self.store.remember(&self.key_id, found);
        }
        match memmem::find(&self.capture[from..], NEEDLE) {
            Some(at) => drop(self.capture.drain(..from + at)),
            None => {
                let keep = self.capture.len().min(NEEDLE.len() - 1);
                self.tail = self.capture[self.capture.len() - keep..].to_vec();
                self.capture.clear();
            }
        }
    }

    fn bound(&mut self) {
        if self.capture.len() > MAX_CAPTURE {
            self.gave_up = true;
            self.capture = Vec::new();
        }
    }
}

/// A tool call, or the delta of one, as far as signatures go.
#[derive(Deserialize)]
struct Call {
    id: Option<String>,
    extra_content: Option<Extra>,
}

#[derive(Deserialize)]
struct Extra {
    google: Option<GoogleExtra>,
}

#[derive(Deserialize)]
struct GoogleExtra {
    thought_signature: Option<String>,
}

impl Call {
    fn signed(self) -> Option<(String, String)> {
        let signature = self.extra_content?.google?.thought_signature?;
        (signature != SENTINEL).then_some((self.id?, signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::find_model;

    const SENTINEL_FIELD: &str =
        r#""extra_content":{"google":{"thought_signature":"skip_thought_signature_validator"}}"#;

    fn completed(
        body: &str,
        mode: SignatureMode,
        store: Option<(&Store, &str)>,
    ) -> (String, SignatureCounts) {
        let field = find_model(body.as_bytes()).unwrap();
        let bytes = Bytes::copy_from_slice(body.as_bytes());
        let (pieces, counts) = complete(&bytes, &field, "google/gemini-3-pro-preview", mode, store)
            .expect("something to fill");
        (String::from_utf8(pieces.concat()).unwrap(), counts)
    }

    #[test]
    fn sentinels_go_only_where_a_first_tool_call_has_no_extra_content() {
        let body = r#"{"model":"p","messages":[{"role":"user","tool_calls":[{}]},{"role":"assistant","tool_calls":[{ }]},{"role":"assistant","tool_calls":[{"id":"a"},{"id":"b"}]},{"role":"assistant","tool_calls":[{"extra_content":{"google":{"thought_signature":"real"}}}]},{"role":"assistant","tool_calls":[]},{"role":"assistant","content":"no tools"}]}"#;
        let (out, counts) = completed(body, SignatureMode::Fill, None);
        assert_eq!(
            counts,
            SignatureCounts {
                restored: 0,
                filled: 2
            }
        );
        let expected = body
            .replacen(
                r#""model":"p""#,
                r#""model":"google/gemini-3-pro-preview""#,
                1,
            )
            .replacen(r#"[{ }]"#, &format!("[{{{SENTINEL_FIELD} }}]"), 1)
            .replacen(
                r#"[{"id":"a"}"#,
                &format!(r#"[{{{SENTINEL_FIELD},"id":"a"}}"#),
                1,
            );
        assert_eq!(out, expected);
        serde_json::from_str::<serde_json::Value>(&expected).expect("still JSON");
        let field = find_model(br#"{"model":"p"}"#).unwrap();
        let nothing = Bytes::from_static(br#"{"model":"p"}"#);
        assert!(complete(&nothing, &field, "m", SignatureMode::Fill, None).is_none());
        assert!(gaps(br#"{"model":"p","messages":"x"}"#).is_empty());
        assert!(complete(&Bytes::from(body), &field, "m", SignatureMode::Off, None).is_none());
    }

    const HISTORY: &str = r#"{"model":"p","messages":[{"role":"assistant","tool_calls":[{"id":"call_1","type":"function"}]},{"role":"assistant","tool_calls":[{"id":"call_2"}]}]}"#;

    #[test]
    fn restore_puts_back_what_this_key_was_sent_and_fills_the_rest() {
        let store = Store::new(1 << 20, Duration::from_secs(60));
        store.remember("alice", vec![("call_1".into(), "c2lnLTE=".into())]);
        let (out, counts) = completed(HISTORY, SignatureMode::Restore, Some((&store, "alice")));
        assert_eq!(
            counts,
            SignatureCounts {
                restored: 1,
                filled: 1
            }
        );
        assert!(
            out.contains(
                r#"[{"extra_content":{"google":{"thought_signature":"c2lnLTE="}},"id":"call_1""#
            ),
            "{out}"
        );
        assert!(out.contains(&format!(r#"[{{{SENTINEL_FIELD},"id":"call_2"}}"#)));
        // Another key never gets it.
        let (out, counts) = completed(HISTORY, SignatureMode::Restore, Some((&store, "bob")));
        assert_eq!(counts.filled, 2);
        assert!(!out.contains("c2lnLTE="));
        // `fill` ignores the store.
        let (_, counts) = completed(HISTORY, SignatureMode::Fill, Some((&store, "alice")));
        assert_eq!(counts.restored, 0);
    }

    #[test]
    fn the_store_forgets_past_its_size_and_its_time_to_live() {
        let one = cost(&("k".into(), "call_0".into()), &"s".repeat(100));
        let store = Store::new(3 * one, Duration::from_secs(60));
        for i in 0..5 {
            store.remember("k", vec![(format!("call_{i}"), "s".repeat(100))]);
        }
        assert!(store.recall("k", "call_0").is_none() && store.recall("k", "call_1").is_none());
        assert!((2..5).all(|i| store.recall("k", &format!("call_{i}")).is_some()));
        assert_eq!(store.bytes(), 3 * one);
        // Replacing an entry does not count it twice, nor evict it by its old record.
        store.remember("k", vec![("call_4".into(), "t".repeat(100))]);
        assert_eq!(store.bytes(), 3 * one);
        assert_eq!(store.recall("k", "call_4").unwrap(), "t".repeat(100));
        let expired = Store::new(1 << 20, Duration::ZERO);
        expired.remember("k", vec![("call_0".into(), "s".into())]);
        assert!(expired.recall("k", "call_0").is_none());
    }

    fn harvested(chunks: &[&[u8]]) -> Arc<Store> {
        let store = Arc::new(Store::new(1 << 20, Duration::from_secs(60)));
        let mut harvest = Harvest::new(store.clone(), "k");
        for chunk in chunks {
            harvest.push(chunk);
        }
        store
    }

    #[test]
    fn signatures_are_read_from_json_and_from_sse_split_anywhere() {
        let json = br#"{"choices":[{"message":{"content":"say \"tool_calls\": [","role":"assistant","tool_calls":[{"extra_content":{"google":{"thought_signature":"c2lnLUE="}},"function":{"arguments":"{}","name":"f"},"id":"call_A","type":"function"},{"function":{"arguments":"{}","name":"g"},"id":"call_B","type":"function"}]}}],"usage":{}}"#;
        let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_S\",\"extra_content\":{\"google\":{\"thought_signature\":\"c2lnLVM=\"}},\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\ndata: [DONE]\n\n";
        for (body, call, signature) in [
            (&json[..], "call_A", "c2lnLUE="),
            (&sse[..], "call_S", "c2lnLVM="),
        ] {
            for split in [1, 3, 7, 64, body.len()] {
                let chunks: Vec<&[u8]> = body.chunks(split).collect();
                let store = harvested(&chunks);
                assert_eq!(
                    store.recall("k", call).as_deref(),
                    Some(signature),
                    "split {split}"
                );
                assert!(store.recall("k", "call_B").is_none());
            }
        }
        // The sentinel is not remembered: it is what restore falls back to anyway.
        let sentinel = format!(
            r#"{{"tool_calls":[{{"id":"x","extra_content":{{"google":{{"thought_signature":"{SENTINEL}"}}}}}}]}}"#
        );
        assert!(harvested(&[sentinel.as_bytes()]).recall("k", "x").is_none());
    }

    #[test]
    fn a_response_without_tool_calls_keeps_nothing() {
        let store = Arc::new(Store::new(1 << 20, Duration::from_secs(60)));
        let mut harvest = Harvest::new(store, "k");
        for _ in 0..1000 {
            harvest.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"word \"}}]}\n\n");
        }
        assert!(harvest.capture.is_empty());
        assert!(harvest.tail.len() < NEEDLE.len());
    }
}
