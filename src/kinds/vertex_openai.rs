//! Vertex's OpenAI-compatible endpoint (`…/endpoints/openapi/…`), for Gemini and the other
//! models it serves: the model spliced into the body, and Gemini 3's thought signatures put
//! back where clients dropped them ([`crate::signatures`]), from what the answers carried.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use super::{Call, Prepared, Target, UpstreamKind};
use crate::api::Operation;
use crate::body::Edit;
use crate::config::Config;
use crate::error::ProxyError;
use crate::signatures::{self, Harvest, SignatureMode, Store};

#[derive(Clone)]
pub struct VertexOpenAi {
    /// `THOUGHT_SIGNATURES`.
    mode: SignatureMode,
    /// The signatures seen, shared by every worker.
    signatures: Arc<Store>,
}

impl VertexOpenAi {
    pub fn new(config: &Config) -> VertexOpenAi {
        VertexOpenAi {
            mode: config.thought_signatures,
            signatures: Arc::new(Store::new(
                config.signature_cache_bytes,
                config.signature_ttl,
            )),
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

    /// The client's body with the alias replaced by the Vertex model id, and, for Gemini 3,
    /// a thought signature on each assistant message's first tool call that lost its own.
    fn prepare(&self, call: &Call) -> Result<Prepared, ProxyError> {
        let (body, model, route) = (call.body, call.model, call.route);
        let restore = Some((&*self.signatures, call.key_id));
        let completed = match signatures::applies_to(&route.model) {
            true => signatures::complete(body, model, &route.model, self.mode, restore),
            false => None,
        };
        let (body, signatures) = completed.unwrap_or_else(|| {
            let body = crate::rewrite::splice_model(body, &model.span, &route.model);
            (body.into(), Default::default())
        });
        Ok(Prepared {
            body,
            target: Target::VertexOpenAi(call.operation),
            signatures,
        })
    }

    /// With `restore`, Gemini 3's answers pass through a harvest of the signatures they
    /// carry, kept for the key that asked.
    fn relay_edit(&self, call: &Call, _headers: &HeaderMap) -> Option<Edit> {
        if self.mode != SignatureMode::Restore || !signatures::applies_to(&call.route.model) {
            return None;
        }
        let mut harvest = Harvest::new(self.signatures.clone(), call.key_id);
        Some(Box::new(move |bytes: Bytes| {
            harvest.push(&bytes);
            bytes
        }))
    }
}
