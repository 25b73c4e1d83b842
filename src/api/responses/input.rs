//! The input items and content parts of a Responses request as read (borrowed, what passes
//! through kept as the client's bytes), and the pieces of chat content written from them.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::{Text, escaped, key, string};
use super::refuse::bad;
use crate::error::ProxyError;

/// An input item: a message, a call, a call's output, reasoning, or a hosted tool's item.
#[derive(Deserialize)]
pub(crate) struct Item<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Text<'a>,
    #[serde(borrow, default)]
    pub role: Text<'a>,
    #[serde(borrow, default)]
    pub content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub call_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub name: Text<'a>,
    #[serde(borrow, default)]
    pub namespace: Text<'a>,
    /// A JSON string; an object is read as its JSON.
    #[serde(borrow, default)]
    pub arguments: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub input: Text<'a>,
    #[serde(borrow, default)]
    pub output: Option<&'a RawValue>,
}

/// A content part: `input_text`, `output_text`, `input_image`, `input_file`, …
#[derive(Deserialize)]
pub(crate) struct Part<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Text<'a>,
    #[serde(borrow, default)]
    pub text: Text<'a>,
    #[serde(borrow, default)]
    pub image_url: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub detail: Text<'a>,
    #[serde(borrow, default)]
    pub filename: Text<'a>,
}

/// A tool output's text, escaped, into `out` (the inside of a JSON string): nothing, the
/// text of its parts joined by newlines (a file named), or another value's JSON text. Its
/// images are returned.
pub(crate) fn output_text<'a>(
    out: &mut Vec<u8>,
    output: Option<&'a str>,
) -> Result<Vec<Part<'a>>, ProxyError> {
    let Some(output) = output else {
        return Ok(Vec::new());
    };
    if !output.starts_with('[') {
        escaped(out, output);
        return Ok(Vec::new());
    }
    let parts: Vec<Part> = serde_json::from_str(output)
        .map_err(|e| bad(format!("content parts must be objects: {e}")))?;
    let (images, rest): (Vec<Part>, Vec<Part>) =
        (parts.into_iter()).partition(|p| p.kind.get() == Some("input_image"));
    let mut first = true;
    for part in &rest {
        let file = (part.kind.get() == Some("input_file")).then(|| {
            let name = part.filename.get().unwrap_or("a file");
            format!("[{name}: a file the proxy cannot pass on]")
        });
        let Some(text) = part.text.get().or(file.as_deref()) else {
            continue;
        };
        if !first {
            out.extend_from_slice(b"\\n");
        }
        first = false;
        escaped(out, text);
    }
    if first && !images.is_empty() {
        out.extend_from_slice(b"(the tool's output is the image in the next message)");
    }
    Ok(images)
}

/// A message's content: a string, or parts (null or absent: none).
pub(crate) enum Content<'a> {
    Text(Text<'a>),
    Parts(Vec<Part<'a>>),
}

pub(crate) fn content<'a>(content: Option<&'a RawValue>) -> Result<Content<'a>, ProxyError> {
    let Some(content) = content else {
        return Ok(Content::Parts(Vec::new()));
    };
    match content.get().as_bytes()[0] {
        b'"' => serde_json::from_str(content.get())
            .map(Content::Text)
            .map_err(|e| {
                bad(format!(
                    "a message's `content` is not a readable string: {e}"
                ))
            }),
        b'[' => serde_json::from_str(content.get())
            .map(Content::Parts)
            .map_err(|e| bad(format!("content parts must be objects: {e}"))),
        _ => Ok(Content::Parts(Vec::new())),
    }
}

/// `{"type":"image_url","image_url":{"url":…,"detail":…}}`
pub(crate) fn image(out: &mut Vec<u8>, part: &Part) {
    out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":");
    raw_or_null(out, part.image_url);
    if let Some(detail) = part.detail.get() {
        key(out, "detail");
        string(out, detail);
    }
    out.extend_from_slice(b"}}");
}

pub(crate) fn raw_or_null(out: &mut Vec<u8>, value: Option<&RawValue>) {
    out.extend_from_slice(value.map_or("null", |v| v.get()).as_bytes());
}
