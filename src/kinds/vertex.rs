//! Vertex's URLs, shared by the Vertex kinds: `{origin}/v1/projects/{project}/locations/
//! {location}/…`, on the location's own host (the global one has none), or on
//! `VERTEX_BASE_URL`.

use http::Uri;

use crate::api::Operation;
use crate::config::Config;
use crate::error::ProxyError;

/// Vertex's URLs for one project, in any location.
#[derive(Debug, Clone)]
pub struct VertexUrls {
    /// `VERTEX_BASE_URL`, used for every location when set.
    base_url: Option<Uri>,
    project: String,
    /// The URLs of the configured locations, built once: building one costs more than the
    /// rest of the routing.
    built: Vec<(String, [Uri; 2])>,
}

impl VertexUrls {
    /// The URLs of every location a route can take, built now.
    pub fn new(config: &Config, project: String) -> VertexUrls {
        let locations = (config.aliases.iter())
            .flat_map(|(_, route)| route.locations.iter().map(String::as_str))
            .chain([config.location.as_str()]);
        VertexUrls::with(config.base_url.clone(), project, locations)
    }

    fn with<'a>(
        base_url: Option<Uri>,
        project: String,
        locations: impl IntoIterator<Item = &'a str>,
    ) -> VertexUrls {
        let mut urls = VertexUrls {
            base_url,
            project,
            built: Vec::new(),
        };
        for location in locations {
            if urls.built.iter().any(|(l, _)| l == location) {
                continue;
            }
            let operations = [Operation::ChatCompletions, Operation::Embeddings];
            if let [Ok(chat), Ok(embeddings)] = operations.map(|op| urls.build(location, op)) {
                urls.built.push((location.to_owned(), [chat, embeddings]));
            }
        }
        urls
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

    /// The URL of one of the OpenAI endpoints in `location`.
    pub fn uri(&self, location: &str, operation: Operation) -> Result<Uri, ProxyError> {
        let slot = match operation {
            Operation::ChatCompletions => Some(0),
            Operation::Embeddings => Some(1),
            _ => None,
        };
        let built = self.built.iter().find(|(l, _)| l == location);
        match built.zip(slot).map(|((_, uris), slot)| &uris[slot]) {
            Some(uri) => Ok(uri.clone()),
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

    fn endpoints(base: Option<&str>) -> VertexUrls {
        VertexUrls::with(base.map(|b| b.parse().unwrap()), "my-proj".into(), [])
    }

    #[test]
    fn urls_built_at_startup_are_the_urls_built_on_demand() {
        for base in [None, Some("http://127.0.0.1:9000")] {
            let locations = ["global", "us-central1", "global"];
            let built = VertexUrls::with(
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
