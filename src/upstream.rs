//! The Vertex side: the HTTPS client, upstream URLs, which headers cross the proxy in each
//! direction, and how a failed upstream call becomes a proxy error.

use std::time::Duration;

use http::{HeaderMap, HeaderName, Request, Response, Uri, header};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::body::Pieces;
use crate::error::ProxyError;
use crate::pool::{Failure, Pool, UpstreamBody};

/// The Vertex endpoints we forward to, under `…/endpoints/openapi/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions = 0,
    Embeddings = 1,
}

impl Operation {
    fn path(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "chat/completions",
            Operation::Embeddings => "embeddings",
        }
    }
}

/// Request headers a client may send on to Vertex. Everything else stays here: the client's
/// credentials, cookies, hop-by-hop headers and anything we have not thought about.
const FORWARDED_REQUEST_HEADERS: [HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::USER_AGENT,
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("x-request-id"),
];

/// Response headers Vertex may send back. The SDKs use `retry-after` to pace retries.
const FORWARDED_RESPONSE_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CACHE_CONTROL,
    header::RETRY_AFTER,
    HeaderName::from_static("retry-after-ms"),
    HeaderName::from_static("x-request-id"),
];

pub type HttpClient = Pool;

/// A worker's connections for every upstream call ([`Pool`]): HTTP/2 when ALPN offers it,
/// else HTTP/1.1. There is a connect timeout but no total timeout: Cloud Run's request timeout
/// bounds streams.
pub fn client(connect_timeout: Duration) -> HttpClient {
    use hyper_rustls::ConfigBuilderExt;
    let tls = rustls::ClientConfig::builder()
        .with_webpki_roots()
        .with_no_client_auth();
    client_with(connect_timeout, tls)
}

/// [`client`] with a TLS configuration of the caller's: tests trust their own CA.
pub(crate) fn client_with(connect_timeout: Duration, tls: rustls::ClientConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Pool::new(https)
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
            "{origin}/v1/projects/{}/locations/{location}/endpoints/openapi/{}",
            self.project,
            operation.path()
        );
        // Project and location were validated at startup; this cannot fail for them.
        uri.parse()
            .map_err(|_| ProxyError::bad_gateway("upstream_url", "could not build the Vertex URL"))
    }
}

/// The request headers that go to Vertex: the allowlisted client headers, then the
/// credential's own (`authorization`, maybe `x-goog-user-project`).
pub fn request_headers(client: &HeaderMap, credential: HeaderMap) -> HeaderMap {
    // Room for the usual few; a map of more than 6 would be one allocation over 1 KiB.
    let mut headers = HeaderMap::with_capacity(6);
    copy_allowed(client, &mut headers, &FORWARDED_REQUEST_HEADERS);
    for (name, value) in credential {
        if let Some(name) = name {
            headers.insert(name, value);
        }
    }
    headers
}

/// Vertex's response with only the allowlisted headers kept; status and body untouched.
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(FORWARDED_RESPONSE_HEADERS.len());
    copy_allowed(upstream, &mut headers, &FORWARDED_RESPONSE_HEADERS);
    headers
}

/// Walks the headers present rather than looking up every allowed name: a request has few
/// of them, and comparing well-known names costs less than hashing.
fn copy_allowed(from: &HeaderMap, to: &mut HeaderMap, allowed: &[HeaderName]) {
    for (name, value) in from {
        if allowed.contains(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Sends one request and turns connection failures into the proxy's 502/504.
pub async fn send(
    client: &HttpClient,
    request: Request<Pieces>,
    connect_timeout: Duration,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let host = request.uri().host().unwrap_or_default().to_owned();
    client
        .send(request)
        .await
        .map_err(|e| classify(&e, &host, connect_timeout))
}

/// Maps a failure to what the caller should be told. Messages name the host and the kind of
/// failure, never a header.
fn classify(failure: &Failure, host: &str, connect_timeout: Duration) -> ProxyError {
    let (error, connecting): (&(dyn std::error::Error + 'static), bool) = match failure {
        Failure::Connect(e) => (e.as_ref(), true),
        Failure::Send(e) => (e, false),
    };
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
            && connecting
        {
            return ProxyError::GatewayTimeout(format!(
                "connecting to Vertex ({host}) timed out after {}s",
                connect_timeout.as_secs()
            ));
        }
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return ProxyError::bad_gateway(
                "upstream_tls_error",
                format!("TLS with Vertex ({host}) failed: {tls}"),
            );
        }
        cause = current.source();
    }
    if connecting {
        // "tcp connect error" says little; its cause says what happened.
        let reason = error.source().unwrap_or(error).to_string();
        ProxyError::bad_gateway(
            "upstream_unreachable",
            format!("could not connect to Vertex ({host}): {reason}"),
        )
    } else {
        ProxyError::bad_gateway(
            "upstream_error",
            format!("the request to Vertex ({host}) failed before a response arrived"),
        )
    }
}

/// Reads the project id from the metadata server, as on Cloud Run. Honours
/// `GCE_METADATA_HOST` the way google-cloud-auth does, so tests can fake it.
pub async fn project_from_metadata(client: &HttpClient) -> Result<String, String> {
    let host = std::env::var("GCE_METADATA_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "metadata.google.internal".into());
    let uri = format!("http://{host}/computeMetadata/v1/project/project-id");
    let request = Request::get(&uri)
        .header("metadata-flavor", "Google")
        .body(Pieces::default())
        .map_err(|_| format!("GCE_METADATA_HOST {host:?} does not make a valid URL"))?;
    let fetch = async {
        let response = client.send(request).await.map_err(|e| match e {
            Failure::Connect(e) => error_chain(e.as_ref()),
            Failure::Send(e) => error_chain(&e),
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the metadata server answered {status}"));
        }
        String::from_utf8(body.to_vec())
            .map(|s| s.trim().to_owned())
            .map_err(|_| "the metadata server's project id is not text".to_owned())
    };
    match tokio::time::timeout(Duration::from_secs(3), fetch).await {
        Ok(result) => result.map_err(|e| format!("{uri}: {e}")),
        Err(_) => Err(format!("{uri}: no answer within 3s")),
    }
}

/// An error with its causes, for startup messages: "client error (Connect)" alone says little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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

    #[test]
    fn only_allowlisted_headers_cross_and_the_credential_wins() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
            ("user-agent", "OpenAI/Python 1.0"),
            ("traceparent", "00-abc-def-01"),
            ("x-request-id", "r1"),
            ("authorization", "Bearer client-key"),
            ("x-api-key", "client-key"),
            ("cookie", "session=1"),
            ("connection", "keep-alive"),
            ("x-goog-user-project", "someone-else"),
            ("x-forwarded-for", "1.2.3.4"),
        ] {
            client.append(name, HeaderValue::from_static(value));
        }
        let mut credential = HeaderMap::new();
        credential.insert("authorization", HeaderValue::from_static("Bearer google"));
        let headers = request_headers(&client, credential);
        assert_eq!(headers["authorization"], "Bearer google");
        assert_eq!(headers.get_all("authorization").iter().count(), 1);
        for gone in [
            "x-api-key",
            "cookie",
            "connection",
            "x-goog-user-project",
            "x-forwarded-for",
        ] {
            assert!(headers.get(gone).is_none(), "{gone} was forwarded");
        }
        assert_eq!(headers.len(), 6);
    }
}
