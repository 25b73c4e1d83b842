//! A private OpenAI-compatible service (vLLM or TGI on Cloud Run) at an alias's `upstream`:
//! the model spliced into the body as for Vertex, sent to the URLs built when the alias was
//! read, with an ID token (`crate::auth`); the answer passes as it comes.

use std::sync::Arc;

use http::Uri;

use super::{Call, Prepared, Target, UpstreamKind};
use crate::api::Operation;
use crate::config::Config;
use crate::error::{Origin, ProxyError};
use crate::rewrite;

#[derive(Clone)]
pub struct PrivateService {
    /// The distinct origins of the services the aliases name, to connect to at startup.
    pub origins: Arc<[Uri]>,
}

impl PrivateService {
    pub fn new(config: &Config) -> PrivateService {
        let mut origins: Vec<Uri> = Vec::new();
        let services = config
            .aliases
            .iter()
            .filter_map(|(_, r)| r.upstream.as_deref());
        for service in services {
            if !origins.contains(&service.origin) {
                origins.push(service.origin.clone());
            }
        }
        PrivateService {
            origins: origins.into(),
        }
    }
}

impl UpstreamKind for PrivateService {
    const IS: &'static str = "a private service's model";
    const BELONGS_AT: Operation = Operation::ChatCompletions;
    const ORIGIN: Origin = Origin::Service;

    fn serves(operation: Operation) -> bool {
        matches!(
            operation,
            Operation::ChatCompletions | Operation::Embeddings
        )
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ProxyError> {
        let url = match (call.route.upstream.as_deref(), call.operation) {
            (Some(service), Operation::ChatCompletions) => service.chat_completions.clone(),
            (Some(service), Operation::Embeddings) => service.embeddings.clone(),
            _ => {
                return Err(ProxyError::bad_gateway(
                    "upstream_url",
                    "a private service serves only chat completions and embeddings",
                ));
            }
        };
        let body = rewrite::splice_model(call.body, &call.model.span, &call.route.model_json);
        Ok(Prepared {
            body: body.into(),
            target: Target::Url(url),
            signatures: Default::default(),
        })
    }
}
