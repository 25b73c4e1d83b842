//! The way in: every tool-call id that carries a signature is taken apart, and each
//! assistant message's first tool call that lost its signature gets one back.

use std::ops::Range;
use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::{Carried, SENTINEL, SignatureMode, take_apart};
use crate::log::{self, SignatureCounts};
use crate::rewrite::{self, ModelField};

/// The body for `new_model`: the model spliced in; every id that carries a signature back to
/// Vertex's own (whatever the mode, so that switching it never leaves Vertex with a foreign
/// id); and, when `fill_gaps` (a Gemini 3 model, `restore` or `fill`), a signature on each
/// assistant message's first tool call without `extra_content`: with `restore`, the one its
/// id carried (or OpenRouter's `reasoning_details` held), else the sentinel. The client's own
/// `extra_content` always wins. `None` when there is nothing to do but the model.
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
    let found = read(body)?;
    let mut counts = SignatureCounts::default();
    let mut edits: Vec<(Range<usize>, Bytes)> = Vec::with_capacity(found.len() + 1);
    let mut malformed = false;
    for found in found {
        let (span, id, call) = match found {
            Found::Id { span, id } => (span, id, None),
            Found::Call { span, id, call } => (span, id, Some(call)),
        };
        let carried = id.as_deref().map_or(Carried::Plain, take_apart);
        let signature = match &carried {
            Carried::Signed { id: own, signature } => {
                if let Some(span) = span {
                    edits.push((span, rewrite::json_string(own)));
                }
                Some(signature.as_str())
            }
            Carried::Malformed => {
                malformed = true;
                None
            }
            Carried::Plain => None,
        };
        let Some(call) = call.filter(|c| fill_gaps && c.gap.is_some()) else {
            continue;
        };
        let restored = match mode {
            SignatureMode::Restore => signature.or(call.detail.as_deref()),
            _ => None,
        };
        let signature = match restored {
            Some(real) => {
                counts.restored += 1;
                real
            }
            // Only the first call of a step is signed: the others need nothing.
            None if call.first => {
                counts.filled += 1;
                SENTINEL
            }
            None => continue,
        };
        let Some(gap) = call.gap else { continue };
        let comma = if gap.empty { "" } else { "," };
        let field = format!(
            r#""extra_content":{{"google":{{"thought_signature":{}}}}}{comma}"#,
            String::from_utf8_lossy(&rewrite::json_string(signature))
        );
        edits.push((gap.at..gap.at, Bytes::from(field)));
    }
    if malformed {
        log::warning(
            "a tool-call id carries a thought-signature marker but no signature: sent as an ordinary id",
        );
    }
    if edits.is_empty() {
        return None;
    }
    edits.push((model.span.clone(), rewrite::json_string(new_model)));
    Some((rewrite::splice(body, edits), counts))
}

/// An id in a request: a tool message's `tool_call_id`, or an assistant message's tool call.
enum Found {
    Id {
        span: Option<Range<usize>>,
        id: Option<String>,
    },
    Call {
        span: Option<Range<usize>>,
        id: Option<String>,
        call: CallGap,
    },
}

/// What an assistant's tool call lacks, and what may fill it.
struct CallGap {
    /// The message's first tool call: the one Gemini 3 signs.
    first: bool,
    /// Where `extra_content` would go, when the call has none.
    gap: Option<Gap>,
    /// The signature OpenRouter's `reasoning_details` holds for this call.
    detail: Option<String>,
}

/// Just inside the `{` of a tool call without `extra_content`.
struct Gap {
    at: usize,
    /// The call object is otherwise empty: no comma after the insertion.
    empty: bool,
}

/// Every id and tool call in the body's messages, in order. The body was validated by
/// `find_model`; a shape other than the usual one means there is nothing here to do.
fn read(body: &[u8]) -> Option<Vec<Found>> {
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
        #[serde(borrow, default)]
        tool_call_id: Option<&'a RawValue>,
        #[serde(default)]
        reasoning_details: Option<Vec<Detail>>,
    }
    #[derive(Deserialize)]
    struct ToolCall<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
        extra_content: Option<IgnoredAny>,
    }
    let text = std::str::from_utf8(body).ok()?;
    let request = serde_json::from_str::<Request>(text).ok()?;
    let offset = |raw: &RawValue| raw.get().as_ptr() as usize - text.as_ptr() as usize;
    // An id's span when it is a string; its value, unescaped.
    let id_of = |raw: Option<&RawValue>| match raw {
        Some(raw) if raw.get().starts_with('"') => {
            let start = offset(raw);
            let id = serde_json::from_str::<String>(raw.get()).ok();
            (Some(start..start + raw.get().len()), id)
        }
        _ => (None, None),
    };
    let mut found = Vec::new();
    for message in request.messages {
        let Ok(message) = serde_json::from_str::<Message>(message.get()) else {
            continue;
        };
        if message.tool_call_id.is_some() {
            let (span, id) = id_of(message.tool_call_id);
            found.push(Found::Id { span, id });
        }
        let (Some("assistant"), Some(calls)) = (message.role.as_deref(), message.tool_calls) else {
            continue;
        };
        for (n, raw) in calls.into_iter().enumerate() {
            let Ok(call) = serde_json::from_str::<ToolCall>(raw.get()) else {
                continue;
            };
            let (span, id) = id_of(call.id);
            let object = raw.get();
            let gap = (call.extra_content.is_none() && object.starts_with('{')).then(|| Gap {
                at: offset(raw) + 1,
                empty: object[1..].trim_start().starts_with('}'),
            });
            let detail = (message.reasoning_details.iter().flatten())
                .find(|d| d.matches(id.as_deref()))
                .and_then(|d| d.data.clone());
            let call = CallGap {
                first: n == 0,
                gap,
                detail,
            };
            found.push(Found::Call { span, id, call });
        }
    }
    Some(found)
}

/// One of OpenRouter's `reasoning_details`: `{"type": "reasoning.encrypted", "id": <tool
/// call id>, "data": <signature>}`, which pi and others round-trip.
#[derive(Deserialize)]
struct Detail {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    data: Option<String>,
}

impl Detail {
    /// Whether it holds the signature of the call with `id`, as sent or taken apart.
    fn matches(&self, id: Option<&str>) -> bool {
        let (Some(id), Some(own)) = (id, self.id.as_deref()) else {
            return false;
        };
        let bare = |id| match take_apart(id) {
            Carried::Signed { id, .. } => id,
            _ => id,
        };
        self.kind.as_deref() == Some("reasoning.encrypted")
            && self.data.as_deref().is_some_and(|d| !d.is_empty())
            && bare(own) == bare(id)
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
}
