//! A private OpenAI-compatible service (vLLM or TGI on Cloud Run) at an alias's `upstream`:
//! its URLs. The body is Vertex's splice of the model, the credential an ID token (`auth`),
//! and the answer passes as it comes.

use std::sync::Arc;

use http::Uri;

use super::Operation;
use crate::config::Config;
use crate::error::ProxyError;
use crate::models::Route;

/// The URL of `operation` at the service: its base with `/chat/completions` or
/// `/embeddings` appended.
pub fn url(route: &Route, operation: Operation) -> Result<Uri, ProxyError> {
    let base = route.upstream.as_deref().unwrap_or_default();
    format!("{base}/{}", operation.path())
        .parse()
        .map_err(|_| ProxyError::bad_gateway("upstream_url", "could not build the service's URL"))
}

/// The distinct origins of the services the aliases name, to connect to at startup.
pub fn origins(config: &Config) -> Arc<[Uri]> {
    let mut origins: Vec<Uri> = Vec::new();
    for (_, route) in config.aliases.iter() {
        let Some(Ok(base)) = route.upstream.as_deref().map(str::parse::<Uri>) else {
            continue;
        };
        let (Some(scheme), Some(authority)) = (base.scheme(), base.authority()) else {
            continue;
        };
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build();
        if let Ok(origin) = origin
            && !origins.contains(&origin)
        {
            origins.push(origin);
        }
    }
    origins.into()
}
