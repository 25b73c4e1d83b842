//! A `"tool_calls"` array as an answer carries it, read in one pass: each call's index, id
//! (and where it is) and signature.

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::SENTINEL;

/// What the bytes after a `"tool_calls"` key hold.
pub(super) enum Read {
    /// Not all there yet.
    Incomplete,
    /// Not an array (a string that says "tool_calls", or `null`).
    NotArray,
    /// The calls, with spans relative to the bytes read, and where the array ends.
    Array(Vec<Call>, usize),
}

pub(super) fn read_array(after_key: &[u8]) -> Read {
    let rest = after_key.trim_ascii_start();
    let Some(value) = rest.strip_prefix(b":").map(<[u8]>::trim_ascii_start) else {
        return match rest.is_empty() {
            true => Read::Incomplete,
            false => Read::NotArray,
        };
    };
    match value.first() {
        None => return Read::Incomplete,
        Some(b'[') => {}
        Some(_) => return Read::NotArray,
    }
    let start = after_key.len() - value.len();
    let mut array = serde_json::Deserializer::from_slice(value).into_iter::<Vec<Wire>>();
    match array.next() {
        Some(Ok(wires)) => {
            let base = value.as_ptr() as usize;
            let calls = wires.into_iter().map(|w| w.call(base, start)).collect();
            Read::Array(calls, start + array.byte_offset())
        }
        Some(Err(e)) if e.is_eof() => Read::Incomplete,
        _ => Read::NotArray,
    }
}

/// A tool call, or the delta of one, as it comes: read in one pass with the array.
#[derive(Deserialize)]
struct Wire<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    extra_content: Option<Extra>,
}

#[derive(Deserialize)]
struct Extra {
    google: Option<Google>,
}

#[derive(Deserialize)]
struct Google {
    thought_signature: Option<String>,
}

/// A tool call, or the delta of one, as far as signatures go.
pub(super) struct Call {
    pub index: Option<u64>,
    pub id: Option<String>,
    /// The id's span, quotes included, relative to the bytes the array was read from.
    id_span: Option<Range<usize>>,
    signature: Option<String>,
}

impl Wire<'_> {
    /// The call, its id's span counted from `start` (the array's offset), `base` being where
    /// the array's bytes begin in memory.
    fn call(self, base: usize, start: usize) -> Call {
        let (id, id_span) = match self.id {
            Some(id) if id.get().starts_with('"') => {
                let at = id.get().as_ptr() as usize - base + start;
                let text = serde_json::from_str::<String>(id.get()).ok();
                (text, Some(at..at + id.get().len()))
            }
            _ => (None, None),
        };
        Call {
            index: self.index,
            id,
            id_span,
            signature: self.extra_content.and_then(|e| e.google?.thought_signature),
        }
    }
}

impl Call {
    /// A signature worth carrying: the sentinel is what the proxy would put in anyway.
    pub fn signature(&self) -> Option<&str> {
        self.signature.as_deref().filter(|s| *s != SENTINEL)
    }

    pub fn span(&self, at: usize) -> Option<Range<usize>> {
        let span = self.id_span.as_ref()?;
        Some(span.start + at..span.end + at)
    }
}
