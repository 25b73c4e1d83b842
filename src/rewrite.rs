//! Splices into request bodies: the client's JSON is validated once and never re-serialised.
//!
//! A rewrite replaces the bytes of one value and leaves every other byte exactly as the client
//! sent it, so fields the proxy does not know (thought signatures, `extra_body.google`, images)
//! reach the upstream unchanged.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::ProxyError;

/// The same limit serde_json applies when it builds values.
pub const MAX_DEPTH: usize = 128;

/// Where the top-level `model` of a request body is, and what it says.
#[derive(Debug, PartialEq, Eq)]
pub struct ModelField {
    /// The requested model, after JSON unescaping.
    pub name: String,
    /// The byte range of the value, quotes included.
    pub span: Range<usize>,
}

/// Finds the top-level `model` of a chat or embeddings request, validating the whole body.
///
/// Refuses (with a message fit for the client) bodies that are not UTF-8, not JSON, not an
/// object, nested deeper than [`MAX_DEPTH`], or whose `model` is missing, not a string, or
/// given twice. Duplicates are found after unescaping, so `"mod\u0065l"` counts: Vertex and
/// the proxy must never disagree on which model was asked for.
pub fn find_model(body: &[u8]) -> Result<ModelField, ProxyError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ProxyError::bad_request(
            "invalid_body",
            format!(
                "request body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        return Err(ProxyError::bad_request(
            "invalid_body",
            "request body must be a JSON object",
        ));
    }
    if nesting_exceeds(body, MAX_DEPTH) {
        return Err(ProxyError::bad_request(
            "invalid_body",
            format!("request body is nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let found = deserializer
        .deserialize_map(TopLevel)
        .and_then(|found| deserializer.end().map(|()| found))
        .map_err(|e| match e.classify() {
            // Our own messages (duplicate model); they quote nothing from the body.
            serde_json::error::Category::Data => {
                ProxyError::bad_request("invalid_body", e.to_string())
            }
            _ => ProxyError::bad_request(
                "invalid_json",
                format!(
                    "request body is not valid JSON: {} at line {} column {}",
                    syntax_reason(&e),
                    e.line(),
                    e.column()
                ),
            ),
        })?;
    let Some(raw) = found else {
        return Err(ProxyError::bad_request(
            "missing_model",
            "request body has no \"model\" field",
        ));
    };
    let name: String = serde_json::from_str(raw.get()).map_err(|e| {
        let message = match raw.get().starts_with('"') {
            // A string that serde cannot take: a lone surrogate (`"\ud800"`).
            true => format!("\"model\" is not a valid string: {}", syntax_reason(&e)),
            false => "\"model\" must be a string".to_owned(),
        };
        ProxyError::bad_request("invalid_model", message)
    })?;
    // The raw value borrows from `text`, so its offset is the distance between the pointers.
    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
    Ok(ModelField {
        name,
        span: start..start + raw.get().len(),
    })
}

/// serde_json's syntax message without its position suffix.
fn syntax_reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The body with the `model` value replaced by `model_json` (a JSON string: the route's
/// `model_json`), every other byte unchanged, as three pieces that share the original buffer:
/// nothing of a large body is copied.
pub fn splice_model(body: &Bytes, span: &Range<usize>, model_json: &Bytes) -> [Bytes; 3] {
    [
        body.slice(..span.start),
        model_json.clone(),
        body.slice(span.end..),
    ]
}

/// `body` with each range of `edits` replaced by its bytes (an empty range inserts), as pieces
/// that share the original buffer. The ranges must not overlap.
pub fn splice(body: &Bytes, mut edits: Vec<(Range<usize>, Bytes)>) -> Vec<Bytes> {
    edits.sort_by_key(|(range, _)| range.start);
    let mut pieces = Vec::with_capacity(edits.len() * 2 + 1);
    let mut at = 0;
    for (range, insert) in edits {
        pieces.push(body.slice(at..range.start));
        pieces.push(insert);
        at = range.end;
    }
    pieces.push(body.slice(at..));
    pieces
}

/// The bytes of the top-level member whose value is at `value` (`"model": "x"`, key to value),
/// with one comma beside it, so that removing the range leaves valid JSON: the comma after
/// it, or, for the last member, the one before it.
pub fn member_with_comma(body: &[u8], value: &Range<usize>) -> Range<usize> {
    let key = member_start(body, value);
    let rest = &body[value.end..];
    let after = value.end + (rest.len() - rest.trim_ascii_start().len());
    if body.get(after) == Some(&b',') {
        return key..after + 1;
    }
    let before = body[..key].iter().rposition(|b| !b.is_ascii_whitespace());
    match before {
        Some(comma) if body[comma] == b',' => comma..value.end,
        _ => key..value.end,
    }
}

/// Where the member whose value is at `value` starts: the key's opening quote. The key is
/// known (it unescapes to a plain word), so it holds no quote of its own.
pub fn member_start(body: &[u8], value: &Range<usize>) -> usize {
    let colon = body[..value.start]
        .iter()
        .rposition(|&b| b == b':')
        .unwrap_or(0);
    let close = body[..colon].iter().rposition(|&b| b == b'"').unwrap_or(0);
    body[..close].iter().rposition(|&b| b == b'"').unwrap_or(0)
}

/// The members of `defaults` whose keys the body's top level lacks, as `"key":value,` each:
/// what goes just inside the body's `{` (see [`insert_first`]). `None` when the body has
/// them all.
pub fn missing_members(body: &[u8], defaults: &Map<String, Value>) -> Option<Bytes> {
    // The body was validated by `find_model`; its keys are compared unescaped, one at a time:
    // nothing is kept of a body's keys but which defaults they name (a body may have millions).
    let present = serde_json::Deserializer::from_slice(body)
        .deserialize_map(Named(defaults))
        .ok()?;
    let mut members = Vec::new();
    for ((key, value), present) in defaults.iter().zip(present) {
        if !present {
            serde_json::to_writer(&mut members, key).ok()?;
            members.push(b':');
            serde_json::to_writer(&mut members, value).ok()?;
            members.push(b',');
        }
    }
    (!members.is_empty()).then(|| Bytes::from(members))
}

/// Which of the defaults' keys a body's top level names, in the defaults' order.
struct Named<'d>(&'d Map<String, Value>);

impl<'de> Visitor<'de> for Named<'_> {
    type Value = Vec<bool>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<bool>, A::Error> {
        let mut present = vec![false; self.0.len()];
        while let Some(found) = map.next_key_seed(Named(self.0))? {
            if let Some(at) = found {
                present[at] = true;
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(present)
    }
}

/// A key, as the index of the default it names.
impl<'de> DeserializeSeed<'de> for Named<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, key: D) -> Result<Option<usize>, D::Error> {
        struct Key<'d>(&'d Map<String, Value>);
        impl Visitor<'_> for Key<'_> {
            type Value = Option<usize>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
                Ok(self.0.keys().position(|k| k == key))
            }
        }
        key.deserialize_str(Key(self.0))
    }
}

/// `pieces` with `members` just inside the body's opening `{`. The first piece holds it:
/// every other edit is inside the object.
pub fn insert_first(mut pieces: Vec<Bytes>, members: Bytes) -> Vec<Bytes> {
    let Some(brace) = pieces.first().and_then(|p| memchr::memchr(b'{', p)) else {
        return pieces;
    };
    let first = pieces.remove(0);
    let tail = [first.slice(..=brace), members, first.slice(brace + 1..)];
    tail.into_iter().chain(pieces).collect()
}

/// A string as a JSON value, quotes included.
pub fn json_string(text: &str) -> Bytes {
    Bytes::from(serde_json::to_string(text).expect("a string always serialises"))
}

/// serde_json skips values without a depth limit, so nesting is measured here first. Strings
/// (a base64 image is one long string) are jumped over with memchr rather than walked.
pub fn nesting_exceeds(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                // To the closing quote, skipping escaped characters.
                i += 1;
                loop {
                    let Some(rest) = body.get(i..) else {
                        return false; // ends inside an escape: the parser reports it
                    };
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(at) if body[i + at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at;
                            break;
                        }
                        None => return false, // unterminated: the parser reports it
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Visits the top-level object, keeping only the raw `model` value.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut model = None;
        while let Some(is_model) = map.next_key_seed(IsKey("model"))? {
            let value: &'de RawValue = map.next_value()?;
            if is_model {
                if model.is_some() {
                    return Err(de::Error::custom(
                        "request body has more than one \"model\" field",
                    ));
                }
                model = Some(value);
            }
        }
        Ok(model)
    }
}

/// Deserialises an object key (unescaped) into "is it this one?".
pub struct IsKey(pub &'static str);

impl<'de> DeserializeSeed<'de> for IsKey {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for IsKey {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(body: &str, model: &str) -> Result<(String, String), ProxyError> {
        let field = find_model(body.as_bytes())?;
        let out = splice_model(
            &Bytes::copy_from_slice(body.as_bytes()),
            &field.span,
            &json_string(model),
        )
        .concat();
        Ok((field.name, String::from_utf8(out).unwrap()))
    }

    fn refusal(body: &[u8]) -> ProxyError {
        find_model(body).expect_err("must be refused")
    }

    #[test]
    fn replaces_only_the_model_value() {
        let body = r#" { "messages":[{"role":"user","content":"model \"x\""}], "model" : "flash" ,"z":{"model":"inner"}} "#;
        let (name, out) = rewrite(body, "google/gemini-2.5-flash").unwrap();
        assert_eq!(name, "flash");
        assert_eq!(
            out,
            r#" { "messages":[{"role":"user","content":"model \"x\""}], "model" : "google/gemini-2.5-flash" ,"z":{"model":"inner"}} "#
        );
    }

    #[test]
    fn a_member_comes_out_with_one_comma() {
        let cut = |body: &str| {
            let field = find_model(body.as_bytes()).unwrap();
            let range = member_with_comma(body.as_bytes(), &field.span);
            let out = format!("{}{}", &body[..range.start], &body[range.end..]);
            serde_json::from_str::<serde_json::Value>(&out).expect("still JSON");
            out
        };
        assert_eq!(cut(r#"{"model" : "a", "x":1}"#), r#"{ "x":1}"#);
        assert_eq!(cut(r#"{"x":1 , "mod\u0065l":"a" }"#), r#"{"x":1  }"#);
        assert_eq!(cut(r#"{ "model":"a" }"#), r#"{  }"#);
        assert_eq!(
            cut(r#"{"a":{"model":"inner"},"model":"b","c":[1]}"#),
            r#"{"a":{"model":"inner"},"c":[1]}"#
        );
    }

    #[test]
    fn defaults_fill_only_what_the_client_left_out() {
        let defaults: Map<String, Value> = serde_json::from_str(
            r#"{"reasoning_effort":"none","chat_template_kwargs":{"enable_thinking":true}}"#,
        )
        .unwrap();
        let body = r#" {"model":"a","reasoning_effort":"high"}"#;
        let members = missing_members(body.as_bytes(), &defaults).unwrap();
        assert_eq!(
            members,
            r#""chat_template_kwargs":{"enable_thinking":true},"#
        );
        let pieces = insert_first(vec![Bytes::from(body)], members);
        assert_eq!(
            pieces.concat(),
            br#" {"chat_template_kwargs":{"enable_thinking":true},"model":"a","reasoning_effort":"high"}"#
        );
        // Keys are compared unescaped.
        let escaped = r#"{"model":"a","reasoning_\u0065ffort":"x","chat_template_kwargs":null}"#;
        assert_eq!(missing_members(escaped.as_bytes(), &defaults), None);
    }

    #[test]
    fn unescapes_the_model_name() {
        let (name, out) = rewrite(r#"{"model":"fl\u0061sh"}"#, "a/b").unwrap();
        assert_eq!(name, "flash");
        assert_eq!(out, r#"{"model":"a/b"}"#);
    }

    #[test]
    fn refuses_duplicate_model_keys_even_when_escaped() {
        for body in [
            r#"{"model":"flash","model":"pro"}"#,
            r#"{"model":"flash","mod\u0065l":"pro"}"#,
            r#"{"m\u006fdel":"flash","x":1,"model":"flash"}"#,
        ] {
            let error = refusal(body.as_bytes());
            assert_eq!(error.status(), 400);
            assert!(error.message().contains("more than one"), "{error:?}");
        }
    }

    #[test]
    fn refuses_broken_bodies_with_a_reason() {
        let deep = format!(
            "{{\"model\":\"flash\",\"a\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let at_limit = format!(
            "{{\"model\":\"flash\",\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(find_model(at_limit.as_bytes()).is_ok());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "JSON object"),
            (b"[1,2]".to_vec(), "JSON object"),
            (b"\"flash\"".to_vec(), "JSON object"),
            (b"".to_vec(), "JSON object"),
            (b"{\"model\":\"flash\"".to_vec(), "not valid JSON"),
            (b"{\"model\":\"flash\"} trailing".to_vec(), "not valid JSON"),
            (b"{\"model\":\"flash\",}".to_vec(), "not valid JSON"),
            (b"{\"messages\":[]}".to_vec(), "no \"model\""),
            (b"{\"model\":42}".to_vec(), "must be a string"),
            (b"{\"model\":null}".to_vec(), "must be a string"),
            (b"{\"model\":[\"flash\"]}".to_vec(), "must be a string"),
            (b"{\"model\":\"\\ud800\"}".to_vec(), "not a valid string"),
            (b"{\"model\":\"fl\xffash\"}".to_vec(), "UTF-8"),
            (deep.into_bytes(), "nested deeper"),
        ];
        for (body, reason) in cases {
            let error = refusal(&body);
            assert_eq!(error.status(), 400);
            assert!(
                error.message().contains(reason),
                "{:?}: {}",
                String::from_utf8_lossy(&body),
                error.message()
            );
        }
    }

    #[test]
    fn unterminated_strings_and_escapes_are_refused_not_panicked_on() {
        for body in [
            &b"{\"model\":\"a\\"[..],
            b"{\"model\":\"a",
            b"{\"\\",
            b"{\"a\":\"\\\"\\",
        ] {
            assert_eq!(refusal(body).status(), 400);
        }
    }

    #[test]
    fn nesting_ignores_brackets_inside_strings() {
        let body = format!(
            r#"{{"model":"flash","s":"{}\"{}"}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(find_model(body.as_bytes()).is_ok());
    }
}
