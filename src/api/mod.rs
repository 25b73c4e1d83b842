//! The client APIs a request can arrive in, one file each: the operations each offers, how a
//! request names its model, and the shape of the errors its clients read.

pub mod anthropic;
pub mod openai;

use bytes::Bytes;

use crate::error::{Dialect, ProxyError};
use crate::rewrite::{self, ModelField};

/// What a forwarded request asks for, in the API it arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// OpenAI's `/v1/chat/completions`.
    ChatCompletions = 0,
    /// OpenAI's `/v1/embeddings`.
    Embeddings = 1,
    /// Anthropic's `/v1/messages`.
    Messages = 2,
    /// Anthropic's `/v1/messages/count_tokens`.
    CountTokens = 3,
}

impl Operation {
    /// Its path after `/v1/`, the same at the proxy and at an OpenAI-compatible upstream.
    pub fn path(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "chat/completions",
            Operation::Embeddings => "embeddings",
            Operation::Messages => "messages",
            Operation::CountTokens => "messages/count_tokens",
        }
    }

    /// The shape of the errors its clients read.
    pub fn dialect(self) -> Dialect {
        match self {
            Operation::ChatCompletions | Operation::Embeddings => openai::DIALECT,
            Operation::Messages | Operation::CountTokens => anthropic::DIALECT,
        }
    }

    /// The model the request names, and where: every API so far names it in the body's
    /// `model` member.
    pub fn model(self, body: &Bytes) -> Result<ModelField, ProxyError> {
        rewrite::find_model(body)
    }

    /// The proxy's path for it, for messages that send a client elsewhere.
    pub fn endpoint(self) -> String {
        format!("/v1/{}", self.path())
    }
}
