//! The errors upstreams answer with: Vertex's, in Google's envelope, `{"error": {"code",
//! "message", "status"}}`, often wrapped in a JSON array; from Claude, Anthropic's own shape,
//! `{"type": "error", "error": {"type", "message"}}`; and from a private service (vLLM, TGI),
//! OpenAI's, `{"error": {"message", "type", …}}`, or vLLM's older flat one.

use serde::Deserialize;

/// The parts of a Google error the proxy reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GoogleError {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub message: String,
    /// `RESOURCE_EXHAUSTED`, `PERMISSION_DENIED`, …
    #[serde(default)]
    pub status: String,
}

#[derive(Deserialize)]
struct Envelope {
    error: GoogleError,
}

// Wrapped first: serde reads a struct from a sequence too, so `One` would take an array.
#[derive(Deserialize)]
#[serde(untagged)]
enum Either {
    Wrapped([Envelope; 1]),
    One(Envelope),
}

/// The error in `body`, bare or array-wrapped; `None` if it is not Google's envelope.
pub fn parse(body: &[u8]) -> Option<GoogleError> {
    match serde_json::from_slice(body).ok()? {
        Either::Wrapped([envelope]) | Either::One(envelope) => Some(envelope.error),
    }
}

/// Claude's error: its type (`overloaded_error`, …) and message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AnthropicError {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

/// The error in `body` if it is Anthropic's shape.
pub fn parse_anthropic(body: &[u8]) -> Option<AnthropicError> {
    #[derive(Deserialize)]
    struct Shape {
        #[serde(rename = "type")]
        kind: String,
        error: AnthropicError,
    }
    let shape: Shape = serde_json::from_slice(body).ok()?;
    (shape.kind == "error").then_some(shape.error)
}

impl AnthropicError {
    /// The HTTP status Anthropic gives this type of error.
    pub fn status(&self) -> u16 {
        match self.kind.as_str() {
            "invalid_request_error" => 400,
            "authentication_error" => 401,
            "permission_error" => 403,
            "not_found_error" => 404,
            "request_too_large" => 413,
            "rate_limit_error" => 429,
            "overloaded_error" => 529,
            _ => 500,
        }
    }
}

/// An OpenAI-shaped error: its message and its `type` (`BadRequestError`, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OpenAiError {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// The error in `body` if it is OpenAI's shape, nested under `error` or flat (older
/// vLLM); `None` without a `type`, which Google's envelope never has.
pub fn parse_openai(body: &[u8]) -> Option<OpenAiError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Shape {
        Nested { error: OpenAiError },
        Flat(OpenAiError),
    }
    match serde_json::from_slice(body).ok()? {
        Shape::Nested { error } | Shape::Flat(error) => Some(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_array_wrapped() {
        let bare = br#"{"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}}"#;
        let wrapped = br#"[{"error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}}]"#;
        assert_eq!(parse(bare).unwrap().status, "PERMISSION_DENIED");
        let error = parse(wrapped).unwrap();
        assert_eq!(
            (error.code, error.message.as_str()),
            (429, "Resource exhausted.")
        );
        for other in [
            &b"not json"[..],
            b"[]",
            br#"{"message": "x"}"#,
            b"[{\"error\":{}},{\"error\":{}}]",
        ] {
            assert_eq!(parse(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn anthropic_errors() {
        let overloaded =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let error = parse_anthropic(overloaded).unwrap();
        assert_eq!(
            (error.kind.as_str(), error.status()),
            ("overloaded_error", 529)
        );
        assert_eq!(
            parse_anthropic(br#"{"type":"message","error":{"type":"x"}}"#),
            None
        );
        assert_eq!(parse(overloaded).map(|e| e.status).unwrap_or_default(), "");
    }
}
