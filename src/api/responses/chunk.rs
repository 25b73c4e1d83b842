//! A chat completion chunk (or a whole completion, whose `message` reads as one delta), read
//! into borrowed structs: only the members the translation uses, strings borrowed from the
//! upstream's bytes where they have no escapes.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::{Count, Text};

#[derive(Deserialize)]
pub(crate) struct Chunk<'a> {
    #[serde(borrow, default)]
    pub choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    pub usage: Option<ChatUsage>,
    /// Google's error as an event (an object; anything else is not an error).
    #[serde(borrow, default)]
    pub error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(crate) struct Choice<'a> {
    #[serde(borrow, default)]
    pub delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    pub message: Option<Delta<'a>>,
    #[serde(borrow, default)]
    pub finish_reason: Text<'a>,
}

#[derive(Deserialize)]
pub(crate) struct Delta<'a> {
    #[serde(borrow, default)]
    pub content: Text<'a>,
    #[serde(borrow, default)]
    pub reasoning_content: Text<'a>,
    #[serde(borrow, default)]
    pub reasoning: Text<'a>,
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<CallDelta<'a>>>,
}

#[derive(Deserialize)]
pub(crate) struct CallDelta<'a> {
    #[serde(default)]
    pub index: Count,
    #[serde(borrow, default)]
    pub id: Text<'a>,
    #[serde(borrow, default)]
    pub function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize, Default)]
pub(crate) struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    pub name: Text<'a>,
    #[serde(borrow, default)]
    pub arguments: Text<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ChatUsage {
    #[serde(default)]
    pub prompt_tokens: Count,
    #[serde(default)]
    pub completion_tokens: Count,
    #[serde(default)]
    pub total_tokens: Count,
    #[serde(default)]
    pub prompt_tokens_details: Option<Details>,
    #[serde(default)]
    pub completion_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
pub(crate) struct Details {
    #[serde(default)]
    pub cached_tokens: Count,
    #[serde(default)]
    pub reasoning_tokens: Count,
}

/// Google's error: `{code, message, status}`.
#[derive(Deserialize, Default)]
pub(crate) struct ChunkError<'a> {
    #[serde(default)]
    pub code: Count,
    #[serde(borrow, default)]
    pub message: Text<'a>,
    #[serde(borrow, default)]
    pub status: Text<'a>,
}

/// Reads the chunks in one SSE event's data, or in a whole answer: one, or an array of them
/// (Vertex wraps some errors in one). False if it is no chat completion.
pub(crate) fn each(data: &[u8], mut read: impl FnMut(&Chunk<'_>)) -> bool {
    if data.trim_ascii_start().first() == Some(&b'[') {
        let Ok(chunks) = serde_json::from_slice::<Vec<Chunk>>(data) else {
            return false;
        };
        chunks.iter().for_each(read);
        return true;
    }
    match serde_json::from_slice::<Chunk>(data) {
        Ok(chunk) => {
            read(&chunk);
            true
        }
        Err(_) => false,
    }
}
