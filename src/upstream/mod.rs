//! The upstream side of the pipeline: prepare the request for the route's kind, send it
//! (again, while it fails before the client has a byte), and relay the answer; and the one
//! mapping from a failed upstream call to a proxy error.
//!
//! One file per kind of upstream holds what is particular to it: [`vertex_openai`],
//! [`vertex_anthropic`] (Claude), [`vertex_predict`] (Google's embedding models) and
//! [`service`] (a private OpenAI-compatible service, with an ID token). Beside
//! them: the connections (`pool`), the header allowlists (`headers`), Google's error envelope
//! ([`envelope`]), what an answer means (`answer`), the retries ([`retry`]) and the startup
//! lookup of the project (`metadata`).

mod answer;
pub mod envelope;
mod headers;
mod metadata;
mod pool;
pub mod retry;
pub mod service;
pub mod vertex_anthropic;
pub mod vertex_openai;
pub mod vertex_predict;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;

use crate::auth::TokenSource;
use crate::body::{self, Pieces, ProxyBody, UpstreamBody};
use crate::config::{Config, RetryPolicy, Timeouts};
use crate::error::{Dialect, Origin, ProxyError};
use crate::log::Attempt;
use crate::log::SignatureCounts;
use crate::models::{Auth, Kind, Route};
use crate::rewrite::{self, ModelField};
use crate::signatures::{self, Harvest, SignatureMode, Store};
pub use answer::Answer;
use headers::{request_headers, response_headers};
pub use metadata::project_from_metadata;
pub use pool::Queued;
use pool::{Failure, Pool};
use retry::{Outcome, Retries};
use vertex_openai::Endpoints;

/// What a forwarded request asks for: the OpenAI endpoints, under Vertex's
/// `…/endpoints/openapi/`, or Claude's Messages API, through `rawPredict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions = 0,
    Embeddings = 1,
    Messages = 2,
    CountTokens = 3,
}

impl Operation {
    fn path(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "chat/completions",
            Operation::Embeddings => "embeddings",
            Operation::Messages => "messages",
            Operation::CountTokens => "messages/count_tokens",
        }
    }

    /// Whether a route of `kind` can serve it.
    pub fn serves(self, kind: Kind) -> bool {
        match self {
            Operation::ChatCompletions => matches!(kind, Kind::VertexOpenAi | Kind::Service),
            Operation::Embeddings => matches!(
                kind,
                Kind::VertexOpenAi | Kind::VertexEmbeddings | Kind::Service
            ),
            Operation::Messages | Operation::CountTokens => kind == Kind::VertexAnthropic,
        }
    }

    /// The shape of the errors its clients read.
    pub fn dialect(self) -> Dialect {
        match self {
            Operation::Messages | Operation::CountTokens => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }

    /// The proxy's path for it, for messages that send a client elsewhere.
    pub fn endpoint(self) -> String {
        format!("/v1/{}", self.path())
    }
}

/// One worker's way upstream: its connections, its copy of the credential, the URLs of the
/// project resolved at startup, and the timeouts that bound each call.
#[derive(Clone)]
pub struct Upstream {
    client: HttpClient,
    /// What each worker's own client is built from.
    settings: ClientSettings,
    tokens: TokenSource,
    /// The ID tokens of the services, by audience.
    id_tokens: IdTokens,
    vertex: Endpoints,
    /// The services' origins, for `preconnect`.
    services: Arc<[http::Uri]>,
    timeouts: Timeouts,
    retries: RetryPolicy,
    /// `THOUGHT_SIGNATURES`.
    signature_mode: SignatureMode,
    /// The signatures seen, shared by every worker.
    signatures: Arc<Store>,
    /// `ANTHROPIC_BETAS`.
    betas: Arc<[String]>,
}

/// What an upstream client is built from.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// `UPSTREAM_CA_FILE`'s certificates, trusted besides the built-in roots.
    pub extra_roots: Arc<[CertificateDer<'static>]>,
    /// `MAX_UPSTREAM_CONNECTIONS`: HTTP/2 connections per origin and worker.
    pub max_connections: usize,
}

impl ClientSettings {
    pub fn of(config: &Config) -> ClientSettings {
        ClientSettings {
            connect_timeout: config.timeouts.connect,
            extra_roots: config.upstream_roots.as_slice().into(),
            max_connections: config.max_upstream_connections,
        }
    }
}

impl Upstream {
    /// `project` is resolved once, at startup; URLs are built for every location a route can
    /// take.
    pub fn new(
        config: &Config,
        project: String,
        (tokens, id_tokens): (TokenSource, IdTokens),
        client: HttpClient,
    ) -> Upstream {
        let locations = config
            .aliases
            .iter()
            .flat_map(|(_, route)| route.locations.iter().map(String::as_str));
        let locations = locations.chain([config.location.as_str()]);
        Upstream {
            client,
            settings: ClientSettings::of(config),
            tokens,
            id_tokens,
            vertex: Endpoints::new(config.base_url.clone(), project, locations),
            services: service::origins(config),
            timeouts: config.timeouts,
            retries: config.retries,
            signature_mode: config.thought_signatures,
            signatures: Arc::new(Store::new(
                config.signature_cache_bytes,
                config.signature_ttl,
            )),
            betas: config.anthropic_betas.as_slice().into(),
        }
    }

    /// The same upstream with connections and a token slot of the calling worker's own, so
    /// that worker threads share no lock on the request path.
    pub fn for_worker(&self) -> Upstream {
        Upstream {
            client: client(&self.settings),
            tokens: self.tokens.for_worker(),
            id_tokens: (self.id_tokens.iter())
                .map(|(audience, tokens)| (audience.clone(), tokens.for_worker()))
                .collect(),
            ..self.clone()
        }
    }

    pub fn project(&self) -> &str {
        self.vertex.project()
    }

    /// Opens this worker's connection to each upstream origin now, all at once, so that the
    /// first request after a cold start does not pay the handshakes (`UPSTREAM_PRECONNECT`).
    /// Must run on the worker's own runtime.
    pub fn preconnect(&self) {
        for uri in self
            .vertex
            .origins()
            .into_iter()
            .chain(self.services.iter().cloned())
        {
            let client = self.client.clone();
            tokio::spawn(async move { client.preconnect(&uri).await });
        }
    }

    /// Step 4: the upstream request for `route`, by its kind: body and authorization.
    /// `key_id` is whose thought signatures may be restored.
    pub async fn prepare(
        &self,
        route: &Route,
        operation: Operation,
        client_headers: &HeaderMap,
        (client_body, model): (&Bytes, &ModelField),
        key_id: &str,
    ) -> Result<Prepared, ProxyError> {
        let body = client_body;
        let (body, signatures, target) = match route.kind {
            Kind::VertexOpenAi => {
                let restore = Some((&*self.signatures, key_id));
                let (body, signatures) =
                    vertex_openai::body(body, model, route, self.signature_mode, restore);
                (body, signatures, Target::OpenAi(operation))
            }
            Kind::VertexAnthropic => {
                let (body, stream) = vertex_anthropic::body(body, model, route, operation);
                let target = vertex_anthropic::target(route, operation, stream);
                (body, SignatureCounts::default(), Target::Path(target))
            }
            Kind::Service => {
                let body = rewrite::splice_model(body, &model.span, &route.model).into();
                let uri = service::url(route, operation)?;
                (body, SignatureCounts::default(), Target::Url(uri))
            }
            // Translated, not spliced: see `embed`.
            Kind::VertexEmbeddings => {
                return Err(ProxyError::bad_gateway(
                    "upstream_url",
                    "embedding models are served through :predict",
                ));
            }
        };
        // The alias's defaults, for the fields the client left out: the client wins.
        let body = match route.defaults.is_empty() {
            true => body,
            false => match rewrite::missing_members(client_body, &route.defaults) {
                Some(members) => rewrite::insert_first(body, members),
                None => body,
            },
        };
        let credential = self.credential(&route.auth, false).await?;
        let mut headers = request_headers(client_headers, credential);
        if route.kind == Kind::VertexAnthropic
            && let Some(betas) = vertex_anthropic::betas(client_headers, &self.betas, operation)
        {
            headers.insert("anthropic-beta", betas);
        }
        Ok(Prepared {
            target,
            headers,
            body,
            auth: route.auth.clone(),
            signatures,
        })
    }

    /// The headers that authorize a request: the access token, or a service's ID token in
    /// the header the alias names. `fresh` bypasses every cache.
    async fn credential(&self, auth: &Auth, fresh: bool) -> Result<HeaderMap, ProxyError> {
        let (tokens, header) = match auth {
            Auth::GoogleAccessToken => (&self.tokens, None),
            Auth::GoogleIdToken { audience, header } => match self.id_tokens.get(audience) {
                Some(tokens) => (tokens, Some(header)),
                None => {
                    return Err(ProxyError::bad_gateway(
                        "token_unavailable",
                        "no ID-token credential was made for this service",
                    ));
                }
            },
        };
        let mut headers = match fresh {
            true => tokens.fresh(self.timeouts.token).await?,
            false => tokens.headers(self.timeouts.token).await?,
        };
        if let Some(header) = header
            && header != header::AUTHORIZATION
            && let Some(token) = headers.remove(header::AUTHORIZATION)
        {
            headers.insert(header.clone(), token);
        }
        Ok(headers)
    }

    /// Step 5: sends the request to the route's locations in turn, as [`retry`] allows,
    /// until an answer is worth relaying: content (a stream, once its first event is not an
    /// error), or an error that would repeat. Each attempt goes in `attempts` once there is
    /// more than one.
    pub async fn send(
        &self,
        route: &Route,
        mut prepared: Prepared,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Answer, ProxyError> {
        let mut retries = Retries::new(self.retries, &route.locations);
        loop {
            let outcome = self.attempt(&mut prepared, retries.location()).await;
            match retries.after(outcome, attempts) {
                ControlFlow::Break(result) => return result,
                ControlFlow::Continue(wait) if wait.is_zero() => {}
                ControlFlow::Continue(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// One attempt at `location`. A 401 means a token the caches still hold was refused
    /// (revoked, say): it is sent once more with a token fetched anew.
    async fn attempt(&self, prepared: &mut Prepared, location: &str) -> Outcome<Answer> {
        let uri = match &prepared.target {
            Target::OpenAi(operation) => self.vertex.uri(location, *operation),
            Target::Path(rest) => self.vertex.at(location, rest),
            Target::Url(uri) => Ok(uri.clone()),
        };
        let uri = match uri {
            Ok(uri) => uri,
            Err(e) => return Outcome::Fail(e),
        };
        let from = prepared.target.origin();
        let mut sent = self.send_once(prepared.request(&uri), from).await;
        if let Err(Outcome::Fail(ProxyError::UpstreamRefused { status: 401, .. })) = sent {
            match self.credential(&prepared.auth, true).await {
                Ok(credential) => prepared.headers.extend(credential),
                Err(e) => return Outcome::Fail(e),
            }
            sent = self.send_once(prepared.request(&uri), from).await;
        }
        match sent {
            Ok(response) => answer::judge(response, self.timeouts.upstream_idle, from).await,
            Err(outcome) => outcome,
        }
    }

    /// Whether a Google token (the access token, or a service's ID token) is failing, for
    /// `/health`.
    pub fn token_failing(&self) -> bool {
        self.tokens.failing() || self.id_tokens.values().any(TokenSource::failing)
    }

    /// Sends once: waits for the response head at most `UPSTREAM_IDLE_TIMEOUT_SECS`.
    /// Connection failures become the proxy's 502 and 504, retried but for TLS and the head
    /// timeout; a refused credential is final.
    async fn send_once(
        &self,
        request: Request<Pieces>,
        from: Origin,
    ) -> Result<Response<UpstreamBody>, Outcome<Answer>> {
        let host = request.uri().host().unwrap_or_default().to_owned();
        let idle = self.timeouts.upstream_idle;
        let response = match tokio::time::timeout(idle, self.client.send(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(failure)) => {
                let error = classify(&failure, (from, &host), self.timeouts.connect);
                return Err(match &error {
                    ProxyError::BadGateway {
                        code: "upstream_tls_error",
                        ..
                    } => Outcome::Fail(error),
                    _ => Outcome::Retry {
                        status: error.status().as_u16(),
                        error,
                        after: None,
                    },
                });
            }
            Err(_) => {
                return Err(Outcome::Fail(ProxyError::GatewayTimeout(format!(
                    "{} did not answer within {}s (UPSTREAM_IDLE_TIMEOUT_SECS)",
                    from.subject(),
                    idle.as_secs()
                ))));
            }
        };
        match response.status() {
            // SDKs take a 401 for "your key is wrong": these are about the proxy's own
            // credentials, so they are the gateway's failure, with the cause in the log.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Outcome::Fail(self.refused(response, from).await))
            }
            _ => Ok(response),
        }
    }

    /// The error for a 401 or 403 from the upstream, with the cause Google's envelope gives.
    async fn refused(&self, response: Response<UpstreamBody>, from: Origin) -> ProxyError {
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), 16 * 1024).collect();
        let cause = match tokio::time::timeout(self.timeouts.upstream_idle, body).await {
            Ok(Ok(body)) => envelope::parse(&body.to_bytes()).map_or_else(
                || "(no Google error in the answer)".to_owned(),
                |e| format!("{} {}", e.status, e.message),
            ),
            _ => "(the answer could not be read)".to_owned(),
        };
        ProxyError::UpstreamRefused {
            status,
            cause,
            from,
        }
    }

    /// Step 6: the response the client gets, by the route's kind. The body streams through
    /// as it comes, cut if the upstream goes silent; for Gemini 3 with `restore`, the
    /// thought signatures it carries are kept for `key_id` on the way.
    pub fn relay(&self, route: &Route, answer: Answer, key_id: &str) -> Response<ProxyBody> {
        let (parts, upstream) = answer.response.into_parts();
        let success =
            parts.status.is_success() && !parts.headers.contains_key(header::CONTENT_ENCODING);
        let edit: Option<body::Edit> = match route.kind {
            Kind::VertexOpenAi
                if success
                    && self.signature_mode == SignatureMode::Restore
                    && signatures::applies_to(&route.model) =>
            {
                let mut harvest = Harvest::new(self.signatures.clone(), key_id);
                Some(Box::new(move |bytes: Bytes| {
                    harvest.push(&bytes);
                    bytes
                }))
            }
            Kind::VertexAnthropic if success && is_sse(&parts.headers) => {
                let mut filter = vertex_anthropic::DropVertexEvents::default();
                Some(Box::new(move |bytes| filter.edit(bytes)))
            }
            _ => None,
        };
        let body = body::idle_limited(upstream, answer.read, edit, self.timeouts.upstream_idle);
        let mut response = Response::new(body);
        *response.status_mut() = parts.status;
        *response.headers_mut() = response_headers(&parts.headers);
        response
    }
}

/// Where a prepared request goes, in any location.
enum Target {
    /// One of the OpenAI endpoints, whose URLs are built at startup.
    OpenAi(Operation),
    /// The path after `…/locations/{location}/`.
    Path(String),
    /// A service's URL: the same wherever.
    Url(http::Uri),
}

impl Target {
    fn origin(&self) -> Origin {
        match self {
            Target::Url(_) => Origin::Service,
            _ => Origin::Vertex,
        }
    }
}

/// A prepared upstream request, kept whole so that it can be sent again.
pub struct Prepared {
    target: Target,
    headers: HeaderMap,
    /// The body's pieces, which share the client's buffer.
    body: Vec<Bytes>,
    auth: Auth,
    /// Thought signatures put in the body, for the log.
    pub signatures: SignatureCounts,
}

impl Prepared {
    fn request(&self, uri: &http::Uri) -> Request<Pieces> {
        let mut request = Request::new(Pieces::new(self.body.iter().cloned()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Whether an answer is an SSE stream.
fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

pub type HttpClient = Pool;

/// The ID-token credentials of the services, by audience, made at startup.
pub type IdTokens = std::collections::BTreeMap<Arc<str>, TokenSource>;

/// A worker's connections for every upstream call ([`Pool`]): HTTP/2 when ALPN offers it,
/// else HTTP/1.1, trusting the built-in roots and `extra_roots` (`UPSTREAM_CA_FILE`). There is
/// a connect timeout but no total timeout: Cloud Run's request timeout bounds streams.
pub fn client(settings: &ClientSettings) -> HttpClient {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // Validated when the configuration was read.
    let _ = roots.add_parsable_certificates(settings.extra_roots.iter().cloned());
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(settings.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Pool::new(https, settings.max_connections)
}

/// Maps a failure to what the caller should be told. Messages name the host and the kind of
/// failure, never a header.
fn classify(
    failure: &Failure,
    (from, host): (Origin, &str),
    connect_timeout: Duration,
) -> ProxyError {
    let name = from.noun();
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
                "connecting to {name} ({host}) timed out after {}s",
                connect_timeout.as_secs()
            ));
        }
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return ProxyError::bad_gateway(
                "upstream_tls_error",
                format!("TLS with {name} ({host}) failed: {tls}"),
            );
        }
        cause = current.source();
    }
    if connecting {
        // "tcp connect error" says little; its cause says what happened.
        let reason = error.source().unwrap_or(error).to_string();
        ProxyError::bad_gateway(
            "upstream_unreachable",
            format!("could not connect to {name} ({host}): {reason}"),
        )
    } else {
        ProxyError::bad_gateway(
            "upstream_error",
            format!("the request to {name} ({host}) failed before a response arrived"),
        )
    }
}
