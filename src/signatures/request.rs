//! The way in: every tool-call id that carries a signature is taken apart, and each
//! assistant message's first tool call that lost its signature gets one back.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Carried, SENTINEL, SignatureMode, take_apart};
use crate::log::{self, SignatureCounts};
use crate::rewrite::{self, IsKey, ModelField};

/// The body for `new_model`: the model spliced in; every id that carries a signature back to
/// Vertex's own (whatever the mode, so that switching it never leaves Vertex with a foreign
/// id); and, when `fill_gaps` (a Gemini 3 model, `restore` or `fill`), a signature on each
/// assistant message's first tool call without `extra_content` (or with a `null` one): with
/// `restore`, the one its id carried (or OpenRouter's `reasoning_details` held), else the
/// sentinel. The client's own `extra_content` always wins. `None` when there is nothing to do
/// but the model.
pub fn complete(
    body: &Bytes,
    model: &ModelField,
    new_model: &str,
    mode: SignatureMode,
    fill_gaps: bool,
) -> Option<(Vec<Bytes>, SignatureCounts)> {
    let fill_gaps = fill_gaps && mode != SignatureMode::Off;
    // Every request to Vertex's OpenAI endpoint is looked at: the finder is built once.
    static MARKED: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(super::MARKER));
    if !fill_gaps && MARKED.find(body).is_none() {
        return None;
    }
    let mut edits = Edits {
        body,
        mode,
        fill_gaps,
        list: Vec::new(),
        counts: SignatureCounts::default(),
        malformed: false,
    };
    read(body, &mut |found| edits.take(found))?;
    if edits.malformed {
        log::warning(
            "a tool-call id carries a thought-signature marker but no signature: sent as an ordinary id",
        );
    }
    if edits.list.is_empty() {
        return None;
    }
    edits
        .list
        .push((model.span.clone(), rewrite::json_string(new_model)));
    Some((rewrite::splice(body, edits.list), edits.counts))
}

/// The splices a request needs, gathered as its ids and calls are found: nothing else of
/// them is kept, so what is held follows what is done, not the size of the body.
struct Edits<'a> {
    body: &'a Bytes,
    mode: SignatureMode,
    fill_gaps: bool,
    list: Vec<(Range<usize>, Bytes)>,
    counts: SignatureCounts,
    /// An id had the marker but no signature after it: the request's warning says so, once.
    malformed: bool,
}

impl Edits<'_> {
    fn take(&mut self, found: Found) {
        let (span, id, call) = match found {
            Found::Id { span, id } => (span, id, None),
            Found::Call { span, id, call } => (span, id, Some(call)),
        };
        let carried = id.as_deref().map_or(Carried::Plain, take_apart);
        let signature = match carried {
            Carried::Signed { id: own, signature } => {
                if let Some(span) = span {
                    self.list.push((span, rewrite::json_string(own)));
                }
                Some(signature)
            }
            Carried::Malformed => {
                self.malformed = true;
                None
            }
            Carried::Plain => None,
        };
        let Some(call) = call.filter(|c| self.fill_gaps && c.gap.is_some()) else {
            return;
        };
        // The signature as a JSON string. A detail's is the client's own bytes, shared rather
        // than copied: many calls may name the same detail.
        let restored = match (self.mode, signature, call.detail) {
            (SignatureMode::Restore, Some(signature), _) => Some(rewrite::json_string(&signature)),
            (SignatureMode::Restore, None, Some(data)) => Some(self.body.slice(data)),
            _ => None,
        };
        let signature = match restored {
            Some(real) => {
                self.counts.restored += 1;
                real
            }
            // Only the first call of a step is signed: the others need nothing.
            None if call.first => {
                self.counts.filled += 1;
                SENTINEL_JSON.clone()
            }
            None => return,
        };
        let Some(gap) = call.gap else { return };
        // Three splices in a row: `splice` keeps the order of those that start together.
        let (span, open, close) = match gap {
            Gap::Inside { at, empty: false } => (at..at, INSIDE, "}},"),
            Gap::Inside { at, empty: true } => (at..at, INSIDE, "}}"),
            Gap::Null(span) => (span, VALUE, "}}"),
        };
        let end = span.end;
        self.list.push((span, Bytes::from_static(open.as_bytes())));
        self.list.push((end..end, signature));
        self.list
            .push((end..end, Bytes::from_static(close.as_bytes())));
    }
}

/// What goes before the signature: the whole member, inside a call's `{`.
const INSIDE: &str = r#""extra_content":{"google":{"thought_signature":"#;
/// What goes before the signature in place of a `null`: the value alone.
const VALUE: &str = r#"{"google":{"thought_signature":"#;

/// The sentinel as a JSON string, built once and shared by every call it fills.
static SENTINEL_JSON: LazyLock<Bytes> = LazyLock::new(|| rewrite::json_string(SENTINEL));

/// An id in a request: a tool message's `tool_call_id`, or an assistant message's tool call.
enum Found<'a> {
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
struct CallGap {
    /// The message's first tool call: the one Gemini 3 signs.
    first: bool,
    /// Where the signature would go, when the call has no `extra_content` of its own.
    gap: Option<Gap>,
    /// The span of the signature OpenRouter's `reasoning_details` holds for this call: a JSON
    /// string, quotes included.
    detail: Option<Range<usize>>,
}

/// Where a call's signature goes.
enum Gap {
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
fn read<'a>(body: &'a Bytes, each: &mut dyn FnMut(Found<'a>)) -> Option<()> {
    let text = std::str::from_utf8(body).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let walk = Walk { text, each };
    deserializer.deserialize_map(walk).ok()?;
    deserializer.end().ok()
}

/// The walk's place in the body, and where what it finds goes.
struct Walk<'a, 'f> {
    text: &'a str,
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
        let calls = message.tool_calls;
        if calls.is_some_and(|calls| !calls.get().starts_with('[')) {
            return;
        }
        let assistant = message.role.is_some_and(|role| role.0 == "assistant");
        let calls = calls.filter(|_| assistant);
        // Only the calls read the details: the other messages' are never looked at.
        let mut details = HashMap::new();
        if let (Some(_), Some(raw)) = (calls, message.reasoning_details) {
            let mut read = serde_json::Deserializer::from_str(raw.get());
            let seed = Details {
                text: self.text,
                found: &mut details,
            };
            if read.deserialize_seq(seed).is_err() {
                return;
            }
        }
        if message.tool_call_id.is_some() {
            let (span, id) = self.id_of(message.tool_call_id);
            (self.each)(Found::Id { span, id });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::find_model;
    use crate::signatures::{MARKER, carry};

    const SENTINEL_FIELD: &str =
        r#""extra_content":{"google":{"thought_signature":"skip_thought_signature_validator"}}"#;

    fn completed(
        body: &str,
        mode: SignatureMode,
        gemini3: bool,
    ) -> Option<(String, SignatureCounts)> {
        let field = find_model(body.as_bytes()).unwrap();
        let bytes = Bytes::copy_from_slice(body.as_bytes());
        let (pieces, counts) =
            complete(&bytes, &field, "google/gemini-3-pro-preview", mode, gemini3)?;
        Some((String::from_utf8(pieces.concat()).unwrap(), counts))
    }

    fn signed(filled: usize, restored: usize) -> SignatureCounts {
        SignatureCounts { restored, filled }
    }

    #[test]
    fn sentinels_go_only_where_a_first_tool_call_has_no_extra_content() {
        let body = r#"{"model":"p","messages":[{"role":"user","tool_calls":[{}]},{"role":"assistant","tool_calls":[{ }]},{"role":"assistant","tool_calls":[{"id":"a"},{"id":"b"}]},{"role":"assistant","tool_calls":[{"extra_content":{"google":{"thought_signature":"real"}}}]},{"role":"assistant","tool_calls":[]},{"role":"assistant","content":"no tools"}]}"#;
        let (out, counts) = completed(body, SignatureMode::Fill, true).expect("filled");
        assert_eq!(counts, signed(2, 0));
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
        assert!(completed(r#"{"model":"p"}"#, SignatureMode::Fill, true).is_none());
        assert!(completed(r#"{"model":"p","messages":"x"}"#, SignatureMode::Fill, true).is_none());
        assert!(completed(body, SignatureMode::Off, true).is_none());
        // Not Gemini 3: nothing to fill.
        assert!(completed(body, SignatureMode::Restore, false).is_none());
    }

    fn history(first: &str, second: &str) -> String {
        format!(
            r#"{{"model":"p","messages":[{{"role":"user","content":"go"}},{{"role":"assistant","tool_calls":[{{"id":"{first}","type":"function"}},{{"id":"{second}","type":"function"}}]}},{{"role":"tool","tool_call_id":"{first}","content":"a"}},{{"role":"tool","tool_call_id":"{second}","content":"b"}}]}}"#
        )
    }

    #[test]
    fn restore_takes_the_signature_from_the_id_and_vertex_gets_its_own_ids() {
        let carried = carry("call_1", "c2lnLTE=").unwrap();
        let body = history(&carried, "call_2");
        let (out, counts) = completed(&body, SignatureMode::Restore, true).unwrap();
        assert_eq!(counts, signed(0, 1));
        let expected = history("call_1", "call_2")
            .replacen(
                r#""model":"p""#,
                r#""model":"google/gemini-3-pro-preview""#,
                1,
            )
            .replacen(
                r#"[{"id":"call_1""#,
                r#"[{"extra_content":{"google":{"thought_signature":"c2lnLTE="}},"id":"call_1""#,
                1,
            );
        assert_eq!(out, expected);
        // `fill` and `off` clean the ids too; `fill` puts the sentinel where the id had one.
        let (out, counts) = completed(&body, SignatureMode::Fill, true).unwrap();
        assert_eq!(counts, signed(1, 0));
        assert!(
            !out.contains(MARKER) && out.contains(SENTINEL_FIELD),
            "{out}"
        );
        let (out, counts) = completed(&body, SignatureMode::Off, true).unwrap();
        assert_eq!(counts, signed(0, 0));
        let plain = history("call_1", "call_2").replacen(
            r#""model":"p""#,
            r#""model":"google/gemini-3-pro-preview""#,
            1,
        );
        assert_eq!(out, plain);
        // For a model that checks no signature, ids are still cleaned, nothing filled.
        let (out, _) = completed(&body, SignatureMode::Restore, false).unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn the_clients_own_extra_content_wins_and_is_not_doubled() {
        let carried = carry("call_1", "c2lnLTE=").unwrap();
        let body = format!(
            r#"{{"model":"p","messages":[{{"role":"assistant","tool_calls":[{{"id":"{carried}","extra_content":{{"google":{{"thought_signature":"b3du"}}}}}}]}}]}}"#
        );
        let (out, counts) = completed(&body, SignatureMode::Restore, true).unwrap();
        assert_eq!(counts, signed(0, 0));
        assert_eq!(out.matches("thought_signature").count(), 1);
        assert!(
            out.contains(
                r#"{"id":"call_1","extra_content":{"google":{"thought_signature":"b3du"}}}"#
            ),
            "{out}"
        );
    }

    #[test]
    fn a_malformed_carried_part_is_an_ordinary_id_and_reasoning_details_are_read() {
        let odd = format!("call_1{MARKER}not*base64");
        let body = history(&odd, "call_2");
        let (out, counts) = completed(&body, SignatureMode::Restore, true).unwrap();
        assert_eq!(counts, signed(1, 0));
        assert_eq!(out.matches(&odd).count(), 2, "{out}");
        // OpenRouter's convention, by the id as the client has it.
        let carried = carry("call_1", "c2lnLTE=").unwrap();
        let body = format!(
            r#"{{"model":"p","messages":[{{"role":"assistant","tool_calls":[{{"id":"call_1"}}],"reasoning_details":[{{"type":"reasoning.text","id":"call_1","data":"x"}},{{"type":"reasoning.encrypted","id":"{carried}","data":"ZGV0YWls"}}]}}]}}"#
        );
        let (out, counts) = completed(&body, SignatureMode::Restore, true).unwrap();
        assert_eq!(counts, signed(0, 1));
        assert!(
            out.contains(
                r#"[{"extra_content":{"google":{"thought_signature":"ZGV0YWls"}},"id":"call_1"}]"#
            ),
            "{out}"
        );
    }

    #[test]
    fn a_null_extra_content_is_replaced_not_doubled() {
        // Vertex takes a key's last value: a signature inserted beside the null would be
        // overruled by it, and the step refused for a missing signature.
        let body = r#"{"model":"p","messages":[{"role":"assistant","tool_calls":[{"id":"c1","type":"function","extra_content" : null},{"id":"c2","extra_content":null}]}]}"#;
        let (out, counts) = completed(body, SignatureMode::Fill, true).expect("filled");
        assert_eq!(counts, signed(1, 0));
        let expected = body
            .replacen(
                r#""model":"p""#,
                r#""model":"google/gemini-3-pro-preview""#,
                1,
            )
            .replacen(
                r#""extra_content" : null"#,
                r#""extra_content" : {"google":{"thought_signature":"skip_thought_signature_validator"}}"#,
                1,
            );
        assert_eq!(out, expected);
        // With `restore`, the signature the id carried, in the same place; the later call
        // carries none and keeps its null.
        let carried = carry("c1", "c2lnLTE=").unwrap();
        let body = format!(
            r#"{{"model":"p","messages":[{{"role":"assistant","tool_calls":[{{"extra_content":null,"id":"{carried}"}},{{"extra_content":null}}]}}]}}"#
        );
        let (out, counts) = completed(&body, SignatureMode::Restore, true).unwrap();
        assert_eq!(counts, signed(0, 1));
        assert_eq!(
            out,
            r#"{"model":"google/gemini-3-pro-preview","messages":[{"role":"assistant","tool_calls":[{"extra_content":{"google":{"thought_signature":"c2lnLTE="}},"id":"c1"},{"extra_content":null}]}]}"#
        );
        // `off` leaves the null as the client sent it.
        let (out, _) = completed(&body, SignatureMode::Off, true).unwrap();
        assert!(
            out.contains(r#"[{"extra_content":null,"id":"c1"}"#),
            "{out}"
        );
    }

    #[test]
    fn what_is_not_looked_for_costs_nothing_and_changes_nothing() {
        // Filler of every kind the walk passes over, element by element: a user's long
        // `reasoning_details`, empty messages, an assistant's long run of empty calls and
        // of details that hold no signature. The edits are those of the conversation alone.
        let many = |item: &str| vec![item; 100_000].join(",");
        let signature = carry("call_1", "c2lnLTE=").unwrap();
        let conversation = |filler: bool| {
            let (user, empty, calls, details) = match filler {
                true => (
                    many("{}"),
                    many("{}") + ",",
                    format!(",{}", many("{}")),
                    many("{}") + ",",
                ),
                false => Default::default(),
            };
            format!(
                r#"{{"model":"p","x":"{MARKER}","messages":[{{"role":"user","reasoning_details":[{user}]}},{empty}{{"role":"assistant","tool_calls":[{{"id":"call_1"}},{{"id":"call_1"}}{calls}],"reasoning_details":[{details}{{"type":"reasoning.encrypted","id":"{signature}","data":"ZGV0YWls"}}]}},{{"role":"tool","tool_call_id":"{signature}"}}]}}"#
            )
        };
        let lean = completed(&conversation(false), SignatureMode::Restore, true).unwrap();
        let padded = completed(&conversation(true), SignatureMode::Restore, true).unwrap();
        // Both calls name the detail: both get its signature; the carried id is cleaned.
        assert_eq!(lean.1, signed(0, 2));
        assert_eq!(padded.1, lean.1);
        let field =
            r#"{"extra_content":{"google":{"thought_signature":"ZGV0YWls"}},"id":"call_1"}"#;
        assert!(lean.0.contains(&format!("[{field},{field}")), "{}", lean.0);
        assert!(
            lean.0
                .contains(r#"{"role":"tool","tool_call_id":"call_1"}"#)
        );
        let unpad = |text: &str| {
            (text.replace(&(many("{}") + ","), ""))
                .replace(&(format!(",{}", many("{}"))), "")
                .replace(&many("{}"), "")
        };
        assert_eq!(unpad(&padded.0), lean.0);
        // Not Gemini 3, `flash` with the marker anywhere: the same walk, nothing to fill.
        let (out, counts) = completed(&conversation(true), SignatureMode::Restore, false).unwrap();
        assert_eq!(counts, signed(0, 0));
        assert_eq!(out.matches("thought_signature").count(), 0);
        assert!(
            completed(
                &conversation(false).replace(&signature, "call_1"),
                SignatureMode::Restore,
                false
            )
            .is_none()
        );
    }
}
