//! The way in: every tool-call id that carries a signature is taken apart, and each
//! assistant message's first tool call that lost its signature gets one back.

mod walk;

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem;

use super::{Carried, SENTINEL, SignatureMode, take_apart};
use crate::error::ProxyError;
use crate::log::{self, SignatureCounts};
use crate::rewrite::{self, ModelField};
use walk::{CallGap, Found, Gap, read};

/// The most splices one request may need: each holds about 170 bytes (its place in the list,
/// which grows by doubling, and its two pieces of the body), and a body can ask for one every
/// 11 bytes, which would make a 32 MiB body some 400 MiB, outside the budget that counts its
/// bytes. 200,000 took 32.5 MiB (measured), and is more than a conversation within Gemini's
/// context window has tool calls (about 3 splices each: a call's id, its result's, and a
/// signature).
const MAX_EDITS: usize = 200_000;

/// The body for `new_model`: the model spliced in; every id that carries a signature back to
/// Vertex's own (whatever the mode, so that switching it never leaves Vertex with a foreign
/// id); and, when `fill_gaps` (a Gemini 3 model, `restore` or `fill`), a signature on each
/// assistant message's first tool call without `extra_content` (or with a `null` one): with
/// `restore`, the one its id carried (or OpenRouter's `reasoning_details` held), else the
/// sentinel. The client's own `extra_content` always wins. `None` when there is nothing to do
/// but the model; an error past [`MAX_EDITS`].
pub fn complete(
    body: &Bytes,
    model: &ModelField,
    new_model: &str,
    mode: SignatureMode,
    fill_gaps: bool,
) -> Result<Option<(Vec<Bytes>, SignatureCounts)>, ProxyError> {
    let completed = gather(body, mode, fill_gaps);
    let Some(mut edits) = completed else {
        return Ok(None);
    };
    if edits.list.len() > MAX_EDITS {
        return Err(ProxyError::bad_request(
            "too_many_tool_calls",
            format!(
                "the request's tool calls need more than {MAX_EDITS} changes to carry thought signatures back to Vertex; send a shorter conversation"
            ),
        ));
    }
    if edits.malformed {
        log::warning(
            "a tool-call id carries a thought-signature marker but no signature: sent as an ordinary id",
        );
    }
    if edits.list.is_empty() {
        return Ok(None);
    }
    edits
        .list
        .push((model.span.clone(), rewrite::json_string(new_model)));
    Ok(Some((rewrite::splice(body, edits.list), edits.counts)))
}

/// The splices `body` needs, found by one walk; `None` when it has nothing to look at. The
/// walk stops gathering past [`MAX_EDITS`].
fn gather(body: &Bytes, mode: SignatureMode, fill_gaps: bool) -> Option<Edits<'_>> {
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
        shared: HashMap::new(),
        counts: SignatureCounts::default(),
        malformed: false,
    };
    let details = mode == SignatureMode::Restore && fill_gaps;
    read(body, details, &mut |found| {
        if edits.list.len() <= MAX_EDITS {
            edits.take(found)
        }
    })?;
    Some(edits)
}

/// The splices a request needs, gathered as its ids and calls are found: nothing else of
/// them is kept, so what is held follows what is done, not the size of the body.
struct Edits<'a> {
    body: &'a Bytes,
    mode: SignatureMode,
    fill_gaps: bool,
    list: Vec<(Range<usize>, Bytes)>,
    /// Each detail's splice, by where its signature is and the shape it goes in.
    shared: HashMap<(usize, Shape), Bytes>,
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
                    // Sent without escapes, Vertex's id is the start of the client's: the
                    // carried part is cut out, and nothing is built.
                    let edit = match &id {
                        Some(Cow::Borrowed(_)) => {
                            (span.start + 1 + own.len()..span.end - 1, Bytes::new())
                        }
                        _ => (span, rewrite::json_string(own)),
                    };
                    self.list.push(edit);
                }
                Some(signature)
            }
            Carried::Malformed => {
                self.malformed = true;
                None
            }
            Carried::Plain => None,
        };
        let Some(CallGap {
            first,
            gap: Some(gap),
            detail,
        }) = call.filter(|_| self.fill_gaps)
        else {
            return;
        };
        let (span, shape) = match gap {
            Gap::Inside { at, empty: false } => (at..at, Shape::Member),
            Gap::Inside { at, empty: true } => (at..at, Shape::Alone),
            Gap::Null(span) => (span, Shape::Value),
        };
        let field = match (self.mode, signature, detail) {
            (SignatureMode::Restore, Some(signature), _) => {
                self.counts.restored += 1;
                shape.around(&rewrite::json_string(&signature))
            }
            // A detail's signature, its bytes as the client sent them: built once for each
            // detail and shape, and shared by every call that names it.
            (SignatureMode::Restore, None, Some(data)) => {
                self.counts.restored += 1;
                let body = self.body;
                let field = self.shared.entry((data.start, shape));
                field.or_insert_with(|| shape.around(&body[data])).clone()
            }
            // Only the first call of a step is signed: the others need nothing.
            _ if first => {
                self.counts.filled += 1;
                SENTINELS[shape as usize].clone()
            }
            _ => return,
        };
        self.list.push((span, field));
    }
}

/// What a signature is put in.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Shape {
    /// A member, just inside a call's `{`, before the call's first member.
    Member,
    /// A member, in an otherwise empty call.
    Alone,
    /// The value alone, in place of a `null`.
    Value,
}

impl Shape {
    /// The splice for `signature`, a JSON string.
    fn around(self, signature: &[u8]) -> Bytes {
        const VALUE: &str = r#"{"google":{"thought_signature":"#;
        const MEMBER: &str = r#""extra_content":{"google":{"thought_signature":"#;
        let (open, close) = match self {
            Shape::Member => (MEMBER, "}},"),
            Shape::Alone => (MEMBER, "}}"),
            Shape::Value => (VALUE, "}}"),
        };
        Bytes::from([open.as_bytes(), signature, close.as_bytes()].concat())
    }
}

/// The sentinel in each shape, built once: a body may have many steps to fill, and each
/// shares these bytes.
static SENTINELS: LazyLock<[Bytes; 3]> = LazyLock::new(|| {
    let sentinel = rewrite::json_string(SENTINEL);
    [Shape::Member, Shape::Alone, Shape::Value].map(|shape| shape.around(&sentinel))
});

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
            complete(&bytes, &field, "google/gemini-3-pro-preview", mode, gemini3).unwrap()?;
        Some((String::from_utf8(pieces.concat()).unwrap(), counts))
    }

    /// One splice each (a sentinel) up to the bound; one more is refused, not gathered.
    #[test]
    fn a_body_that_needs_more_splices_than_the_bound_is_refused() {
        let body = |steps: usize| {
            let step = r#"{"role":"assistant","tool_calls":[{}]}"#;
            let messages = vec![step; steps].join(",");
            format!(r#"{{"model":"x","messages":[{messages}]}}"#)
        };
        let at_bound = body(MAX_EDITS);
        let (_, counts) = completed(&at_bound, SignatureMode::Fill, true).expect("spliced");
        assert_eq!(counts.filled, MAX_EDITS);
        let over = Bytes::from(body(MAX_EDITS + 1));
        let field = find_model(&over).unwrap();
        let refused = complete(
            &over,
            &field,
            "google/gemini-3-pro-preview",
            SignatureMode::Fill,
            true,
        );
        let message = refused.expect_err("over the bound").message();
        assert!(message.contains("more than 200000 changes"), "{message}");
    }

    /// The test bodies' model, and what `completed` splices in its place.
    const MODEL_AS_SENT: &str = r#""model":"p""#;
    const MODEL_AS_SPLICED: &str = r#""model":"google/gemini-3-pro-preview""#;

    fn signed(filled: usize, restored: usize) -> SignatureCounts {
        SignatureCounts { restored, filled }
    }

    #[test]
    fn sentinels_go_only_where_a_first_tool_call_has_no_extra_content() {
        let body = r#"{"model":"p","messages":[{"role":"user","tool_calls":[{}]},{"role":"assistant","tool_calls":[{ }]},{"role":"assistant","tool_calls":[{"id":"a"},{"id":"b"}]},{"role":"assistant","tool_calls":[{"extra_content":{"google":{"thought_signature":"real"}}}]},{"role":"assistant","tool_calls":[]},{"role":"assistant","content":"no tools"}]}"#;
        let (out, counts) = completed(body, SignatureMode::Fill, true).expect("filled");
        assert_eq!(counts, signed(2, 0));
        let expected = body
            .replacen(MODEL_AS_SENT, MODEL_AS_SPLICED, 1)
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
            .replacen(MODEL_AS_SENT, MODEL_AS_SPLICED, 1)
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
        let plain = history("call_1", "call_2").replacen(MODEL_AS_SENT, MODEL_AS_SPLICED, 1);
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

    /// A `reasoning_details` that is not the usual shape gives no signature, and the message's
    /// carried id is still cleaned and its first call still gets the sentinel.
    #[test]
    fn odd_reasoning_details_give_nothing_and_skip_nothing() {
        let carried = carry("call_1", "c2lnLTE=").unwrap();
        for details in [
            "[1]",
            r#"[{"type":"reasoning.encrypted","id":"call_1","data":7}]"#,
        ] {
            let body = format!(
                r#"{{"model":"p","messages":[{{"role":"assistant","tool_calls":[{{"id":"{carried}"}},{{"id":"call_2"}}],"reasoning_details":{details}}}]}}"#
            );
            for mode in [SignatureMode::Restore, SignatureMode::Fill] {
                let (out, _) = completed(&body, mode, true).expect("spliced");
                assert!(!out.contains(MARKER), "{details} {mode:?}: {out}");
                assert!(
                    out.contains(r#""thought_signature":"#),
                    "{details} {mode:?}: {out}"
                );
            }
        }
    }

    /// A tool result's carried id is cleaned even where the message's `tool_calls` is odd.
    #[test]
    fn a_results_id_is_cleaned_whatever_its_tool_calls() {
        let carried = carry("call_1", "c2lnLTE=").unwrap();
        let body = format!(
            r#"{{"model":"p","messages":[{{"role":"tool","tool_call_id":"{carried}","tool_calls":7,"content":"x"}}]}}"#
        );
        let (out, _) = completed(&body, SignatureMode::Off, false).expect("cleaned");
        assert!(out.contains(r#""tool_call_id":"call_1""#), "{out}");
    }

    #[test]
    fn a_null_extra_content_is_replaced_not_doubled() {
        // Vertex takes a key's last value: a signature inserted beside the null would be
        // overruled by it, and the step refused for a missing signature.
        let body = r#"{"model":"p","messages":[{"role":"assistant","tool_calls":[{"id":"c1","type":"function","extra_content" : null},{"id":"c2","extra_content":null}]}]}"#;
        let (out, counts) = completed(body, SignatureMode::Fill, true).expect("filled");
        assert_eq!(counts, signed(1, 0));
        let expected = body
            .replacen(MODEL_AS_SENT, MODEL_AS_SPLICED, 1)
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
    fn an_id_sent_with_escapes_is_written_again_whole() {
        let carried = carry("call_1", "c2lnLTE=").unwrap();
        let escaped = carried.replacen('_', "\\u005f", 1);
        let body = history(&escaped, "call_2");
        let (out, counts) = completed(&body, SignatureMode::Restore, true).unwrap();
        assert_eq!(counts, signed(0, 1));
        let (plain, _) =
            completed(&history(&carried, "call_2"), SignatureMode::Restore, true).unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn filler_the_walk_passes_over_changes_nothing() {
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
