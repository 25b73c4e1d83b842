//! The client APIs a request can arrive in, one file each: the operations each offers, how a
//! request names its model, and the shape of the errors its clients read.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use bytes::Bytes;

use crate::error::{Dialect, ProxyError};
use crate::rewrite::{self, ModelField};

/// What a forwarded request asks for, in the API it arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// OpenAI's `/v1/chat/completions`.
    ChatCompletions,
    /// OpenAI's `/v1/embeddings`.
    Embeddings,
    /// Anthropic's `/v1/messages`.
    Messages,
    /// Anthropic's `/v1/messages/count_tokens`.
    CountTokens,
    /// Gemini's `…/models/{model}:{method}`.
    Gemini(gemini::Method),
}

impl Operation {
    /// Its path after `/v1/`, the same at the proxy and at an OpenAI-compatible upstream.
    pub fn path(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "chat/completions",
            Operation::Embeddings => "embeddings",
            Operation::Messages => "messages",
            Operation::CountTokens => "messages/count_tokens",
            Operation::Gemini(method) => method.as_str(),
        }
    }

    /// The shape of the errors its clients read.
    pub fn dialect(self) -> Dialect {
        match self {
            Operation::ChatCompletions | Operation::Embeddings => openai::DIALECT,
            Operation::Messages | Operation::CountTokens => anthropic::DIALECT,
            Operation::Gemini(_) => gemini::DIALECT,
        }
    }

    /// The model the request names, and where: OpenAI's and Anthropic's APIs name it in the
    /// body's `model` member, Gemini's in the path (`in_path`), which `is_alias` reads.
    pub fn model(
        self,
        body: &Bytes,
        in_path: Option<&str>,
        is_alias: impl Fn(&str) -> bool,
    ) -> Result<ModelField, ProxyError> {
        match (self, in_path) {
            (Operation::Gemini(_), Some(model)) => Ok(ModelField {
                name: gemini::model_name(model, is_alias),
                span: 0..0,
            }),
            _ => rewrite::find_model(body),
        }
    }

    /// The proxy's path for it, for messages that send a client elsewhere.
    pub fn endpoint(self) -> String {
        match self {
            Operation::Gemini(method) => format!("/v1beta/models/MODEL:{}", method.as_str()),
            _ => format!("/v1/{}", self.path()),
        }
    }
}
