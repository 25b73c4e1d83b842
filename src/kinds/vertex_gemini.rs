//! Gemini's native methods on Vertex (`…/publishers/google/models/{model}:{method}`), for
//! clients of Gemini's own API: the body goes byte for byte, the model in the URL, the query
//! (`alt=sse`) on without `key`; the answer comes back as it is.

use super::{Call, Prepared, Target, UpstreamKind};
use crate::api::{Operation, gemini};
use crate::error::ProxyError;
use crate::models::Kind;

#[derive(Clone)]
pub struct VertexGemini;

impl UpstreamKind for VertexGemini {
    const IS: &'static str = "not one of Google's models";
    const BELONGS_AT: Operation = Operation::ChatCompletions;
    /// An alias's defaults are fields of OpenAI's request body, not of Gemini's.
    const DEFAULTS: bool = false;

    fn serves(operation: Operation) -> bool {
        matches!(operation, Operation::Gemini(_))
    }

    /// Gemini's API reaches Google's models only, and generates with generative ones only.
    fn refuse(&self, call: &Call) -> Option<ProxyError> {
        let Operation::Gemini(method) = call.operation else {
            return None;
        };
        let model: String = call.model.name.chars().take(100).collect();
        let (what, right) = match call.route.kind {
            Kind::VertexEmbeddings if !method.embeds() => ("an embedding model", ":embedContent"),
            Kind::VertexOpenAi if method.embeds() => ("not an embedding model", ":generateContent"),
            Kind::VertexOpenAi if !call.route.model.starts_with("google/") => {
                (Self::IS, "/v1/chat/completions")
            }
            _ => return None,
        };
        Some(ProxyError::bad_request(
            "wrong_endpoint",
            format!(
                "model {model:?} is {what}: send it to {right}, not :{}",
                method.as_str()
            ),
        ))
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ProxyError> {
        let Operation::Gemini(method) = call.operation else {
            return Err(ProxyError::bad_gateway(
                "upstream_url",
                "Gemini's native methods serve Gemini's API only",
            ));
        };
        let name = (call.route.model.strip_prefix("google/")).unwrap_or(&call.route.model);
        let query = gemini::upstream_query(call.query)?;
        let path = format!("publishers/google/models/{name}:{}{query}", method.as_str());
        Ok(Prepared {
            body: vec![call.body.clone()],
            target: Target::VertexPath(path),
            signatures: Default::default(),
        })
    }
}
