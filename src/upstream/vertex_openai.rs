//! Vertex's OpenAI-compatible endpoint (`…/endpoints/openapi/…`): its URLs, and the changes
//! it needs in a body: the model, and Gemini 3's thought signatures.

use bytes::Bytes;
use http::Uri;

use super::Operation;
use crate::error::ProxyError;
use crate::log::SignatureCounts;
use crate::models::Route;
use crate::rewrite::{self, ModelField};
use crate::signatures::{self, SignatureMode, Store};

/// The body Vertex gets: the client's, with the alias replaced by the Vertex model id, and,
/// for Gemini 3, a thought signature on each assistant message's first tool call that lost
/// its own ([`signatures`]). Returns the pieces and what was put in.
pub fn body(
    body: &Bytes,
    model: &ModelField,
    route: &Route,
    mode: SignatureMode,
    restore: Option<(&Store, &str)>,
) -> (Vec<Bytes>, SignatureCounts) {
    if signatures::applies_to(&route.model)
        && let Some(completed) = signatures::complete(body, model, &route.model, mode, restore)
    {
        return completed;
    }
    (
        rewrite::splice_model(body, &model.span, &route.model).into(),
        SignatureCounts::default(),
    )
}

/// Builds upstream URLs for one project.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `VERTEX_BASE_URL`, used for every location when set.
    base_url: Option<Uri>,
    project: String,
    /// The URLs of the configured locations, built once: building one costs more than the
    /// rest of the routing.
    built: Vec<(String, [Uri; 2])>,
}

impl Endpoints {
    pub fn new<'a>(
        base_url: Option<Uri>,
        project: String,
        locations: impl IntoIterator<Item = &'a str>,
    ) -> Endpoints {
        let mut endpoints = Endpoints {
            base_url,
            project,
            built: Vec::new(),
        };
        for location in locations {
            if endpoints.built.iter().any(|(l, _)| l == location) {
                continue;
            }
            let operations = [Operation::ChatCompletions, Operation::Embeddings];
            if let [Ok(chat), Ok(embeddings)] = operations.map(|op| endpoints.build(location, op)) {
                endpoints
                    .built
                    .push((location.to_owned(), [chat, embeddings]));
            }
        }
        endpoints
    }

    /// One URL on each distinct origin the configured locations reach.
    pub fn origins(&self) -> Vec<Uri> {
        let mut origins: Vec<Uri> = Vec::new();
        for (_, [chat, _]) in &self.built {
            if !origins.iter().any(|o| o.authority() == chat.authority()) {
                origins.push(chat.clone());
            }
        }
        origins
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn uri(&self, location: &str, operation: Operation) -> Result<Uri, ProxyError> {
        match self.built.iter().find(|(l, _)| l == location) {
            Some((_, uris)) => Ok(uris[operation as usize].clone()),
            None => self.build(location, operation),
        }
    }

    fn build(&self, location: &str, operation: Operation) -> Result<Uri, ProxyError> {
        self.at(location, &format!("endpoints/openapi/{}", operation.path()))
    }

    /// `{origin}/v1/projects/{project}/locations/{location}/{rest}`: any Vertex path.
    pub fn at(&self, location: &str, rest: &str) -> Result<Uri, ProxyError> {
        let origin = match &self.base_url {
            Some(base) => format!(
                "{}://{}",
                base.scheme_str().unwrap_or("https"),
                base.authority().map(|a| a.as_str()).unwrap_or_default()
            ),
            // The global endpoint has no location prefix: `global-aiplatform…` answers 404.
            None if location == "global" => "https://aiplatform.googleapis.com".to_owned(),
            None => format!("https://{location}-aiplatform.googleapis.com"),
        };
        let uri = format!(
            "{origin}/v1/projects/{}/locations/{location}/{rest}",
            self.project
        );
        // Project and location were validated at startup, and model ids are checked
        // characters; this cannot fail for them.
        uri.parse()
            .map_err(|_| ProxyError::bad_gateway("upstream_url", "could not build the Vertex URL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(base: Option<&str>) -> Endpoints {
        Endpoints::new(base.map(|b| b.parse().unwrap()), "my-proj".into(), [])
    }

    #[test]
    fn urls_built_at_startup_are_the_urls_built_on_demand() {
        for base in [None, Some("http://127.0.0.1:9000")] {
            let locations = ["global", "us-central1", "global"];
            let built = Endpoints::new(
                base.map(|b| b.parse().unwrap()),
                "my-proj".into(),
                locations,
            );
            assert_eq!(built.built.len(), 2);
            for location in ["global", "us-central1", "europe-west4"] {
                for op in [Operation::ChatCompletions, Operation::Embeddings] {
                    assert_eq!(
                        built.uri(location, op).unwrap(),
                        endpoints(base).uri(location, op).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn urls_for_global_regional_and_override() {
        let global = endpoints(None)
            .uri("global", Operation::ChatCompletions)
            .unwrap();
        assert_eq!(
            global,
            "https://aiplatform.googleapis.com/v1/projects/my-proj/locations/global/endpoints/openapi/chat/completions"
        );
        let regional = endpoints(None)
            .uri("us-central1", Operation::Embeddings)
            .unwrap();
        assert_eq!(
            regional,
            "https://us-central1-aiplatform.googleapis.com/v1/projects/my-proj/locations/us-central1/endpoints/openapi/embeddings"
        );
        let local = endpoints(Some("http://127.0.0.1:9000"))
            .uri("europe-west4", Operation::ChatCompletions)
            .unwrap();
        assert_eq!(
            local,
            "http://127.0.0.1:9000/v1/projects/my-proj/locations/europe-west4/endpoints/openapi/chat/completions"
        );
    }
}
