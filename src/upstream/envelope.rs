//! Google's error envelope, as Vertex sends it: `{"error": {"code", "message", "status"}}`,
//! often wrapped in a JSON array.

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
}
