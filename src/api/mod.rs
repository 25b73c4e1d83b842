//! The client APIs a request can arrive in, one file each: the operations each offers, how a
//! request names its model, the shape of the errors its clients read, and, for an API no
//! upstream speaks (OpenAI's Responses), its translation both ways.

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod responses;

use bytes::Bytes;
use http::Response;

use crate::body::ProxyBody;
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
    /// OpenAI's `/v1/responses`, translated to chat completions ([`responses`]).
    Responses,
}

/// A request in an API the upstreams do not speak, as the operation they do, and how its
/// answer goes back.
pub struct Translated {
    pub operation: Operation,
    pub body: Bytes,
    pub translation: Option<responses::Translation>,
}

impl Translated {
    /// The kind's answer, in the API the client called (`project` and `service` hidden from
    /// what a translation writes of the upstream's errors).
    pub async fn answer(
        translation: Option<responses::Translation>,
        answer: Result<Response<ProxyBody>, ProxyError>,
        project: &str,
        service: Option<&str>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        match translation {
            Some(translation) => translation.answer(answer, project, service).await,
            None => answer,
        }
    }
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
            Operation::Responses => "responses",
        }
    }

    /// The request as an operation the upstreams speak: itself, but for the Responses API,
    /// which becomes a chat completion.
    pub fn translate(self, body: Bytes) -> Result<Translated, ProxyError> {
        let (operation, body, translation) = match self {
            Operation::Responses => {
                let (body, translation) = responses::translate(&body)?;
                (Operation::ChatCompletions, body, Some(translation))
            }
            _ => (self, body, None),
        };
        Ok(Translated {
            operation,
            body,
            translation,
        })
    }

    /// The API's name in the log line, for those translated.
    pub fn logged_as(self) -> Option<&'static str> {
        match self {
            Operation::Responses => Some("responses"),
            _ => None,
        }
    }

    /// The shape of the errors its clients read.
    pub fn dialect(self) -> Dialect {
        match self {
            Operation::ChatCompletions | Operation::Embeddings | Operation::Responses => {
                openai::DIALECT
            }
            Operation::Messages | Operation::CountTokens => anthropic::DIALECT,
            Operation::Gemini(_) => gemini::DIALECT,
        }
    }

    /// The model the request names, and where: OpenAI's and Anthropic's APIs name it in the
    /// body's `model` member, Gemini's in the path (`in_path`), read as `resolves` says.
    pub fn model(
        self,
        body: &Bytes,
        in_path: Option<&str>,
        resolves: impl Fn(&str) -> bool,
    ) -> Result<ModelField, ProxyError> {
        match (self, in_path) {
            // The body goes byte for byte and is not parsed (Vertex reads it; inline images
            // make it large); but it goes labelled JSON, so what cannot be a JSON object (a
            // form, a compressed body, nothing) is refused here rather than by a round trip.
            (Operation::Gemini(_), Some(_)) if body.trim_ascii_start().first() != Some(&b'{') => {
                Err(ProxyError::bad_request(
                    "invalid_body",
                    "request body must be a JSON object",
                ))
            }
            (Operation::Gemini(_), Some(model)) => Ok(ModelField {
                name: gemini::model_name(model, resolves),
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
