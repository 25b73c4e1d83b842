//! A private OpenAI-compatible service (vLLM or TGI on Cloud Run) at an alias's `upstream`:
//! its URLs, built when the alias was read. The body is Vertex's splice of the model, the
//! credential an ID token (`auth`), and the answer passes as it comes.

use std::sync::Arc;

use http::Uri;

use super::Operation;
use crate::config::Config;
use crate::error::ProxyError;
use crate::models::Route;

/// The URL of `operation` at the route's service.
pub fn url(route: &Route, operation: Operation) -> Result<Uri, ProxyError> {
    match (route.upstream.as_deref(), operation) {
        (Some(service), Operation::ChatCompletions) => Ok(service.chat_completions.clone()),
        (Some(service), Operation::Embeddings) => Ok(service.embeddings.clone()),
        _ => Err(ProxyError::bad_gateway(
            "upstream_url",
            "a private service serves only chat completions and embeddings",
        )),
    }
}

/// The distinct origins of the services the aliases name, to connect to at startup.
pub fn origins(config: &Config) -> Arc<[Uri]> {
    let mut origins: Vec<Uri> = Vec::new();
    for service in config
        .aliases
        .iter()
        .filter_map(|(_, r)| r.upstream.as_deref())
    {
        if !origins.contains(&service.origin) {
            origins.push(service.origin.clone());
        }
    }
    origins.into()
}
