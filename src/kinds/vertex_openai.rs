//! Vertex's OpenAI-compatible endpoint (`…/endpoints/openapi/…`), for Gemini and the other
//! models it serves: the model spliced into the body, and Gemini 3's thought signatures
//! carried in tool-call ids and put back where clients dropped them ([`crate::signatures`]).

use http::HeaderMap;

use super::{Call, Prepared, Target, UpstreamKind};
use crate::api::Operation;
use crate::body::BoxEdit;
use crate::config::Config;
use crate::error::ProxyError;
use crate::signatures::{self, IdSplicer, SignatureMode};
use crate::upstream::is_sse;

#[derive(Clone)]
pub struct VertexOpenAi {
    /// `THOUGHT_SIGNATURES`.
    mode: SignatureMode,
}

impl VertexOpenAi {
    pub fn new(config: &Config) -> VertexOpenAi {
        VertexOpenAi {
            mode: config.thought_signatures,
        }
    }
}

impl UpstreamKind for VertexOpenAi {
    const IS: &'static str = "not a Claude model";
    const BELONGS_AT: Operation = Operation::ChatCompletions;

    fn serves(operation: Operation) -> bool {
        matches!(
            operation,
            Operation::ChatCompletions | Operation::Embeddings
        )
    }

    /// The client's body with the alias replaced by the Vertex model id, every tool-call id
    /// that carries a signature back to Vertex's own, and, for Gemini 3, a thought signature
    /// on each assistant message's first tool call that lost its own.
    fn prepare(&self, call: &Call) -> Result<Prepared, ProxyError> {
        let (body, model, route) = (call.body, call.model, call.route);
        let gemini3 = signatures::applies_to(&route.model);
        let completed = signatures::complete(body, model, &route.model, self.mode, gemini3)?;
        let (body, signatures) = completed.unwrap_or_else(|| {
            let body = crate::rewrite::splice_model(body, &model.span, &route.model_json);
            (body.into(), Default::default())
        });
        Ok(Prepared {
            body,
            target: Target::VertexOpenAi(call.operation),
            signatures,
        })
    }

    /// With `restore`, each signature in a Gemini 3 answer goes to the client in its tool
    /// call's id, to come back with the next request, to whichever instance takes it.
    fn relay_edit(&self, call: &Call, headers: &HeaderMap) -> Option<BoxEdit> {
        if self.mode != SignatureMode::Restore || !signatures::applies_to(&call.route.model) {
            return None;
        }
        Some(Box::new(IdSplicer::new(is_sse(headers))))
    }
}
