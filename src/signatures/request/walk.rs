//! The walk through a chat request's messages that finds every tool-call id and tool call,
//! one message, one call at a time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::rewrite::IsKey;
use crate::signatures::{Carried, take_apart};

/// An id in a request: a tool message's `tool_call_id`, or an assistant message's tool call.
pub enum Found<'a> {
    Id {
        span: Option<Range<usize>>,
        id: Option<Cow<'a, str>>,
    },
    Call {
        span: Option<Range<usize>>,
        id: Option<Cow<'a, str>>,
        call: CallGap,
    },
}

/// What an assistant's tool call lacks, and what may fill it.
pub struct CallGap {
    /// The message's first tool call: the one Gemini 3 signs.
    pub first: bool,
    /// Where the signature would go, when the call has no `extra_content` of its own.
    pub gap: Option<Gap>,
    /// The span of the signature OpenRouter's `reasoning_details` holds for this call: a JSON
    /// string, quotes included.
    pub detail: Option<Range<usize>>,
}

/// The most `reasoning_details` ids kept for one message (a few dozen bytes each).
const MAX_DETAILS: usize = 1024;

/// Where a call's signature goes.
pub enum Gap {
    /// Just inside the `{` of a call without `extra_content`; `empty`: the call is otherwise
    /// empty, so no comma follows the insertion.
    Inside { at: usize, empty: bool },
    /// The value of `"extra_content": null`, which Vertex reads as no signature. It takes a
    /// key's last value, so a member inserted beside the null would be overruled by it: the
    /// null itself is replaced.
    Null(Range<usize>),
}

/// Hands `each` every id and tool call in the body's messages, in order, as the walk reaches
/// them. The walk holds one message, one call, at a time: a request may be as large as
/// `MAX_BODY_BYTES`, and the memory budget counts its bytes, not what is built from them.
/// The body was validated by `find_model`; `None` when its shape is other than the usual one,
/// there is nothing to do.
pub fn read<'a>(body: &'a Bytes, details: bool, each: &mut dyn FnMut(Found<'a>)) -> Option<()> {
    let text = std::str::from_utf8(body).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let walk = Walk {
        text,
        details,
        each,
    };
    deserializer.deserialize_map(walk).ok()?;
    deserializer.end().ok()
}

/// The walk's place in the body, and where what it finds goes.
struct Walk<'a, 'f> {
    text: &'a str,
    /// Signatures are restored: OpenRouter's `reasoning_details` are read (in no other mode
    /// is anything taken from them).
    details: bool,
    each: &'f mut dyn FnMut(Found<'a>),
}

impl<'a> Walk<'a, '_> {
    fn offset(&self, raw: &RawValue) -> usize {
        // A raw value borrows from `text`: its offset is the distance between the pointers.
        raw.get().as_ptr() as usize - self.text.as_ptr() as usize
    }

    /// An id's span when it is a string; its value, unescaped.
    fn id_of(&self, raw: Option<&'a RawValue>) -> (Option<Range<usize>>, Option<Cow<'a, str>>) {
        match raw {
            Some(raw) if raw.get().starts_with('"') => {
                let start = self.offset(raw);
                let id = serde_json::from_str::<Text>(raw.get()).ok().map(|t| t.0);
                (Some(start..start + raw.get().len()), id)
            }
            _ => (None, None),
        }
    }

    /// One message. One that is not the usual shape is passed over, as a whole.
    fn message(&mut self, raw: &'a RawValue) {
        #[derive(Deserialize)]
        struct Message<'a> {
            #[serde(borrow, default)]
            role: Option<Text<'a>>,
            #[serde(borrow, default)]
            tool_calls: Option<&'a RawValue>,
            #[serde(borrow, default)]
            tool_call_id: Option<&'a RawValue>,
            #[serde(borrow, default)]
            reasoning_details: Option<&'a RawValue>,
        }
        let Ok(message) = serde_json::from_str::<Message>(raw.get()) else {
            return;
        };
        // A tool result's id is cleaned whatever else the message holds.
        if message.tool_call_id.is_some() {
            let (span, id) = self.id_of(message.tool_call_id);
            (self.each)(Found::Id { span, id });
        }
        let calls = message.tool_calls;
        if calls.is_some_and(|calls| !calls.get().starts_with('[')) {
            return;
        }
        let assistant = message.role.is_some_and(|role| role.0 == "assistant");
        let calls = calls.filter(|_| assistant);
        // Details matter only to an assistant's calls, when restoring: another message's, or
        // in another mode, are not read. A list that is not the usual shape gives none, and
        // the message's ids and calls are still seen to.
        let mut details = HashMap::new();
        if let (true, Some(_), Some(raw)) = (self.details, calls, message.reasoning_details) {
            let mut read = serde_json::Deserializer::from_str(raw.get());
            let seed = Details {
                text: self.text,
                found: &mut details,
            };
            if read.deserialize_seq(seed).is_err() {
                details.clear();
            }
        }
        if let Some(calls) = calls {
            let mut read = serde_json::Deserializer::from_str(calls.get());
            // An array of valid JSON: nothing in it can fail.
            let _ = read.deserialize_seq(Calls {
                walk: self,
                details: &details,
            });
        }
    }

    /// The `n`th tool call of an assistant message.
    fn call(&mut self, n: usize, raw: &'a RawValue, details: &HashMap<Cow<str>, Range<usize>>) {
        #[derive(Deserialize)]
        struct ToolCall<'a> {
            #[serde(borrow, default)]
            id: Option<&'a RawValue>,
            /// `null` too: it is no signature, but it is there, and is replaced.
            #[serde(borrow, default, deserialize_with = "present")]
            extra_content: Option<&'a RawValue>,
        }
        let Ok(call) = serde_json::from_str::<ToolCall>(raw.get()) else {
            return;
        };
        let (span, id) = self.id_of(call.id);
        let object = raw.get();
        let gap = match call.extra_content {
            None if object.starts_with('{') => Some(Gap::Inside {
                at: self.offset(raw) + 1,
                empty: object[1..].trim_start().starts_with('}'),
            }),
            Some(value) if value.get() == "null" => {
                let start = self.offset(value);
                Some(Gap::Null(start..start + value.get().len()))
            }
            _ => None,
        };
        let detail = match &id {
            Some(id) if !details.is_empty() => details.get(bare(id)).cloned(),
            _ => None,
        };
        let call = CallGap {
            first: n == 0,
            gap,
            detail,
        };
        (self.each)(Found::Call { span, id, call });
    }
}

/// A field that is there, `null` or not: `Option` alone reads a `null` as no field.
fn present<'a, D: Deserializer<'a>>(deserializer: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Vertex's own id for an id as a client sent it.
fn bare(id: &str) -> &str {
    match take_apart(id) {
        Carried::Signed { id, .. } => id,
        _ => id,
    }
}

impl<'a> Visitor<'a> for Walk<'a, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'a>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(is_messages) = map.next_key_seed(IsKey("messages"))? {
            if !is_messages {
                map.next_value::<IgnoredAny>()?;
            } else if std::mem::replace(&mut seen, true) {
                return Err(de::Error::duplicate_field("messages"));
            } else {
                map.next_value_seed(Messages(&mut self))?;
            }
        }
        Ok(())
    }
}

/// `messages`, one at a time.
struct Messages<'w, 'a, 'f>(&'w mut Walk<'a, 'f>);

impl<'a> DeserializeSeed<'a> for Messages<'_, 'a, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'a> Visitor<'a> for Messages<'_, 'a, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(message) = seq.next_element::<&'a RawValue>()? {
            self.0.message(message);
        }
        Ok(())
    }
}

/// An assistant message's `tool_calls`, one at a time.
struct Calls<'w, 'a, 'f, 'd> {
    walk: &'w mut Walk<'a, 'f>,
    details: &'d HashMap<Cow<'a, str>, Range<usize>>,
}

impl<'a> Visitor<'a> for Calls<'_, 'a, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of tool calls")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut n = 0;
        while let Some(call) = seq.next_element::<&'a RawValue>()? {
            self.walk.call(n, call, self.details);
            n += 1;
        }
        Ok(())
    }
}

/// OpenRouter's `reasoning_details`, which pi and others round-trip: of each `{"type":
/// "reasoning.encrypted", "id": <tool call id>, "data": <signature>}` with a signature, the
/// span of its `data`, by Vertex's own id, the first for each id. Nothing is kept of the
/// others.
struct Details<'a, 'd> {
    text: &'a str,
    found: &'d mut HashMap<Cow<'a, str>, Range<usize>>,
}

impl<'a> DeserializeSeed<'a> for Details<'a, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'a> Visitor<'a> for Details<'a, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of reasoning details")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        #[derive(Deserialize)]
        struct Detail<'a> {
            #[serde(rename = "type", borrow)]
            kind: Option<Text<'a>>,
            #[serde(borrow)]
            id: Option<Text<'a>>,
            /// A string, or `null`: read as it was sent, since it goes to Vertex as it is.
            #[serde(borrow)]
            data: Option<&'a RawValue>,
        }
        while let Some(detail) = seq.next_element::<Detail>()? {
            let data = match detail.data {
                Some(data) if !data.get().starts_with('"') => {
                    return Err(de::Error::custom("a detail's data is not a string"));
                }
                // Not `""`: an empty signature is none.
                Some(data) if data.get().len() > 2 => data,
                _ => continue,
            };
            let (Some(kind), Some(id)) = (detail.kind, detail.id) else {
                continue;
            };
            if kind.0 != "reasoning.encrypted" {
                continue;
            }
            let id = match id.0 {
                Cow::Borrowed(id) => Cow::Borrowed(bare(id)),
                Cow::Owned(id) => Cow::Owned(bare(&id).to_owned()),
            };
            // A message's calls are few: past this many, the rest of its details are passed
            // over, so that the map stays small whatever the body holds.
            if self.found.len() == MAX_DETAILS {
                continue;
            }
            let start = data.get().as_ptr() as usize - self.text.as_ptr() as usize;
            self.found
                .entry(id)
                .or_insert(start..start + data.get().len());
        }
        Ok(())
    }
}

/// A string, borrowed from the body unless escapes in it had to be undone.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text<'a>, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(text.to_owned())))
    }
}
