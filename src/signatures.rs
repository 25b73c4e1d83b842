//! Gemini 3's thought signatures, carried with the conversation rather than kept in a process.
//!
//! Gemini 3 refuses a request whose current turn's tool calls lost the signature it issued
//! with them (Vertex's "Thought signatures" documentation), and many clients rebuild the
//! assistant message without `extra_content`. They keep the tool-call id, though: they must,
//! to pair each result with its call. So the signature rides in the id the client sees,
//! `{id}__thought__{signature as base64url}` ([`answer`] splices it in as the answer passes),
//! and comes back with it: every id that carries one is taken apart on the way in, Vertex
//! gets its own id back, and the signature goes where the client dropped it ([`request`]).
//! Cloud Run may send the next step to any instance, or to one started since: nothing a
//! conversation needs lives in this process.

mod answer;
mod request;
mod tool_calls;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub use answer::IdSplicer;
pub use request::complete;

/// What Gemini 3 accepts in place of a thought signature it issued: for history a client
/// rebuilt, or that another model wrote.
pub const SENTINEL: &str = "skip_thought_signature_validator";

/// Between Vertex's id and the signature it carries. Vertex's ids have no run of two
/// underscores.
pub const MARKER: &str = "__thought__";

/// Bytes of the signature's SHA-256 carried after it: a client that cuts ids short (pi cuts
/// some at 40 characters) must not send Vertex a cut signature, which it refuses where it
/// would take the sentinel.
const CHECK: usize = 4;

/// The longest carried part, in characters, both ways: a signature is a few hundred bytes to
/// a few KB. A longer one is not carried out (the next step gets the sentinel), since it
/// would not be taken back in: an id is not to reach Vertex with a marker.
pub const MAX_CARRIED: usize = 16 * 1024;

/// `THOUGHT_SIGNATURES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMode {
    /// Signatures ride in tool-call ids and are put back from them; the sentinel where an id
    /// carries none.
    Restore,
    /// Always the sentinel; ids go to the client as Vertex sent them.
    Fill,
    /// Leave requests as they are (but for ids that carry a signature, which are cleaned).
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

/// The id the client sees for Vertex's `id` and the `signature` issued with it:
/// `{id}__thought__{base64url of the signature's bytes and the first 4 of their SHA-256}`;
/// `None` when the signature is not plain padded base64, as Vertex's are, since only that
/// comes back exactly as it went.
pub fn carry(id: &str, signature: &str) -> Option<String> {
    // The strict engine takes only a canonical encoding (its padding, no stray bits), which is
    // the one `STANDARD.encode` gives back on the way in.
    let mut bytes = STANDARD.decode(signature).ok().filter(|b| !b.is_empty())?;
    let check = crate::keys::sha256(&bytes);
    bytes.extend_from_slice(&check[..CHECK]);
    if (bytes.len() * 4).div_ceil(3) > MAX_CARRIED {
        return None;
    }
    let mut carried = String::with_capacity(id.len() + MARKER.len() + signature.len() + 8);
    carried.push_str(id);
    carried.push_str(MARKER);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut carried);
    Some(carried)
}

/// A tool-call id as a client sent it back.
#[derive(Debug, PartialEq, Eq)]
pub enum Carried<'a> {
    /// No marker: the id as Vertex issued it, or one of the client's own.
    Plain,
    /// Vertex's own id, and the signature (in Vertex's encoding) it carried.
    Signed { id: &'a str, signature: String },
    /// A marker, but what follows is no signature (too long, not base64url, or cut short, so
    /// that its check fails): the id is an ordinary one.
    Malformed,
}

/// Takes an id apart at its first marker: Vertex's ids have none, the carried part may.
pub fn take_apart(id: &str) -> Carried<'_> {
    let Some(at) = id.find(MARKER) else {
        return Carried::Plain;
    };
    let carried = &id[at + MARKER.len()..];
    if carried.is_empty() || carried.len() > MAX_CARRIED {
        return Carried::Malformed;
    }
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(carried) else {
        return Carried::Malformed;
    };
    match bytes.split_at_checked(bytes.len().saturating_sub(CHECK)) {
        Some((signature, check))
            if !signature.is_empty() && crate::keys::sha256(signature)[..CHECK] == *check =>
        {
            Carried::Signed {
                id: &id[..at],
                signature: STANDARD.encode(signature),
            }
        }
        _ => Carried::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_goes_out_in_the_id_and_comes_back_exactly() {
        for signature in ["c2lnLTE=", "AAECAwQF+/8=", "/+/+AA==", "YWJj"] {
            let id = carry("function-call-123", signature).expect("carried");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{id}"
            );
            assert_eq!(
                take_apart(&id),
                Carried::Signed {
                    id: "function-call-123",
                    signature: signature.to_owned()
                }
            );
        }
        // What would not come back exactly is not carried.
        for odd in ["", "c2lnLTE", "c2lnLTE==", "not base64!", "c2ln-TE="] {
            assert_eq!(carry("x", odd), None, "{odd:?}");
        }
        // Nor what would not be taken back: the bound is the same both ways.
        let largest = STANDARD.encode(vec![7u8; MAX_CARRIED * 3 / 4 - CHECK]);
        let id = carry("x", &largest).expect("carried");
        assert!(matches!(take_apart(&id), Carried::Signed { .. }));
        let larger = STANDARD.encode(vec![7u8; MAX_CARRIED * 3 / 4 - CHECK + 1]);
        assert_eq!(carry("x", &larger), None);
    }

    #[test]
    fn ids_are_taken_apart_at_the_first_marker_and_bad_parts_are_ordinary() {
        assert_eq!(take_apart("call_abc"), Carried::Plain);
        // The carried part may itself hold the marker's characters: the first one splits.
        let id = carry("a", "////////////////").unwrap();
        assert!(id[MARKER.len() + 1..].contains("__"), "{id}");
        assert!(matches!(take_apart(&id), Carried::Signed { id: "a", .. }));
        // Cut anywhere, an id carries nothing: its check fails, or it is no base64url.
        let whole = carry("call_1", "c2lnbmF0dXJlIG9mIHNvbWUgbGVuZ3Ro").unwrap();
        for end in "call_1".len() + MARKER.len() + 1..whole.len() {
            assert_eq!(take_apart(&whole[..end]), Carried::Malformed, "{end}");
        }
        // Standard base64 (LiteLLM's form) has no check: an ordinary id.
        assert_eq!(take_apart("a__thought__c2lnLTE="), Carried::Malformed);
        for bad in [
            format!("a{MARKER}"),
            format!("a{MARKER}not base64!"),
            format!("a{MARKER}A"),
            format!("a{MARKER}{}", "A".repeat(MAX_CARRIED + 4)),
        ] {
            assert_eq!(take_apart(&bad), Carried::Malformed, "{bad}");
        }
    }
}
