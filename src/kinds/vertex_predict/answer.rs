//! One `:predict` answer as its part of OpenAI's embeddings answer, written straight into
//! the output: a float embedding is Vertex's own array, spliced as it came (checked to hold
//! numbers only), and a base64 one is built from the floats as they are read. No value per
//! number is ever made.

use std::fmt;

use base64::Engine;
use serde::Deserialize;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ProxyError;

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    predictions: Vec<Prediction<'a>>,
}

#[derive(Deserialize)]
struct Prediction<'a> {
    #[serde(borrow)]
    embeddings: Embeddings<'a>,
}

#[derive(Deserialize)]
struct Embeddings<'a> {
    #[serde(borrow)]
    values: &'a RawValue,
    #[serde(default)]
    statistics: Option<Statistics>,
}

#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    token_count: f64,
}

/// What the output of one call is written as.
pub(super) struct Written {
    pub text: Vec<u8>,
    pub tokens: u64,
}

/// Writes the `count` embeddings of `body`, the answer of the call whose first text is
/// `first`, as `{"object":"embedding","index":I,"embedding":E}` each, comma-separated.
pub(super) fn write(
    body: &[u8],
    (first, count): (usize, usize),
    base64: bool,
) -> Result<Written, ProxyError> {
    let unreadable = || {
        ProxyError::bad_gateway(
            "upstream_error",
            "Vertex's :predict answer could not be read as embeddings",
        )
    };
    let answer: Answer = serde_json::from_slice(body).map_err(|_| unreadable())?;
    if answer.predictions.len() != count {
        return Err(unreadable());
    }
    let mut text = Vec::with_capacity(body.len());
    let mut tokens = 0u64;
    let mut floats = Vec::new();
    for (i, prediction) in answer.predictions.iter().enumerate() {
        let embeddings = &prediction.embeddings;
        tokens += embeddings
            .statistics
            .as_ref()
            .map_or(0.0, |s| s.token_count) as u64;
        floats.clear();
        let mut read = serde_json::Deserializer::from_str(embeddings.values.get());
        let sink = Floats(base64.then_some(&mut floats));
        sink.deserialize(&mut read).map_err(|_| unreadable())?;
        if i > 0 {
            text.push(b',');
        }
        text.extend_from_slice(b"{\"object\":\"embedding\",\"index\":");
        text.extend_from_slice((first + i).to_string().as_bytes());
        text.extend_from_slice(b",\"embedding\":");
        if base64 {
            text.push(b'"');
            let encoded = base64::engine::general_purpose::STANDARD.encode(&floats);
            text.extend_from_slice(encoded.as_bytes());
            text.push(b'"');
        } else {
            text.extend_from_slice(embeddings.values.get().as_bytes());
        }
        text.push(b'}');
    }
    Ok(Written { text, tokens })
}

/// Reads an array of numbers, keeping each as little-endian f32 bytes where asked: the
/// check of a float answer, and the bytes of a base64 one.
struct Floats<'a>(Option<&'a mut Vec<u8>>);

impl<'de> DeserializeSeed<'de> for Floats<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Floats<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<f32>()? {
            if let Some(out) = &mut self.0 {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &[u8] = br#"{"predictions":[{"embeddings":{"values":[0.5, -1.0],"statistics":{"token_count":3,"truncated":false}}},{"embeddings":{"values":[2.25]}}]}"#;

    #[test]
    fn floats_are_vertexs_own_and_base64_is_little_endian_f32() {
        let written = write(ANSWER, (7, 2), false).unwrap();
        assert_eq!(
            String::from_utf8(written.text).unwrap(),
            r#"{"object":"embedding","index":7,"embedding":[0.5, -1.0]},{"object":"embedding","index":8,"embedding":[2.25]}"#
        );
        assert_eq!(written.tokens, 3);
        let written = write(ANSWER, (0, 2), true).unwrap();
        let text = String::from_utf8(written.text).unwrap();
        let json: serde_json::Value = serde_json::from_str(&format!("[{text}]")).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(json[0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            bytes,
            [0.5f32.to_le_bytes(), (-1.0f32).to_le_bytes()].concat()
        );
    }

    #[test]
    fn anything_but_the_embeddings_asked_for_is_refused() {
        assert!(write(ANSWER, (0, 3), false).is_err());
        let strings = br#"{"predictions":[{"embeddings":{"values":["0.5"]}}]}"#;
        assert!(write(strings, (0, 1), false).is_err());
        assert!(write(b"{\"predictions\":", (0, 1), false).is_err());
    }
}
