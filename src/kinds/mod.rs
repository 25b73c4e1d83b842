//! The upstream kinds, one file each, and the one place that matches on [`Kind`].
//!
//! A kind is the phases of [`UpstreamKind`] it overrides, in the manner of pingora's
//! `ProxyHttp`: where the request goes and what its body becomes are its own to say; its own
//! headers, its own reading of an upstream error and its own edit of the answer have
//! do-nothing defaults. [`flow`] runs the phases over the transport ([`crate::upstream`]);
//! a kind that does not fit it (the embeddings' fan-out) overrides [`UpstreamKind::forward`]
//! whole. Adding a kind is a file here and one arm in [`Kinds::forward`].

mod service;
mod vertex;
mod vertex_anthropic;
mod vertex_gemini;
mod vertex_openai;
mod vertex_predict;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Response, Uri, header};

use crate::api::Operation;
use crate::body::{BoxEdit, Held, ProxyBody};
use crate::config::Config;
use crate::error::{Origin, ProxyError, UpstreamError};
use crate::log::{Answered, RequestLog, SignatureCounts};
use crate::models::{Kind, Route};
use crate::rewrite::{self, ModelField};
use crate::upstream::{Outgoing, Queued, Upstream};
use crate::usage::Price;
pub use vertex::VertexUrls;

/// One forwarded request, as each phase sees it.
pub struct Call<'a> {
    pub operation: Operation,
    /// The operation the client called: `operation`, or the one translated to it.
    pub asked: Operation,
    pub route: &'a Route,
    /// The model as the client named it, and where it is in the body.
    pub model: &'a ModelField,
    /// The client's body and headers, as they came.
    pub body: &'a Bytes,
    pub headers: &'a HeaderMap,
    /// The client's query string, as it came (`key=` included: a kind passes on only what
    /// it must).
    pub query: Option<&'a str>,
    /// What the route's usage costs, for the log.
    pub price: Option<Price>,
}

/// What a request needs beyond its kind: the transport, and Vertex's URLs.
#[derive(Clone, Copy)]
pub struct Way<'a> {
    pub upstream: &'a Upstream,
    pub vertex: &'a Arc<VertexUrls>,
}

/// Where a prepared request goes, in any of the route's locations.
pub enum Target {
    /// One of Vertex's OpenAI endpoints, whose URLs are built at startup.
    VertexOpenAi(Operation),
    /// The path after Vertex's `…/locations/{location}/`.
    VertexPath(String),
    /// The same URL wherever: a service's.
    Url(Uri),
}

impl Target {
    /// The URL in `location`.
    fn uri(&self, vertex: &VertexUrls, location: &str) -> Result<Uri, ProxyError> {
        match self {
            Target::VertexOpenAi(operation) => vertex.uri(location, *operation),
            Target::VertexPath(path) => vertex.at(location, path),
            Target::Url(uri) => Ok(uri.clone()),
        }
    }
}

/// What a kind's [`UpstreamKind::prepare`] makes of a request.
pub struct Prepared {
    /// The body's pieces, which share the client's buffer.
    pub body: Vec<Bytes>,
    pub target: Target,
    /// Thought signatures put in the body, for the log.
    pub signatures: SignatureCounts,
}

/// The phases of a forwarded request that a kind may override.
pub(crate) trait UpstreamKind: Sync {
    /// What its models are, and the endpoint they belong at, for a request sent elsewhere.
    const IS: &'static str;
    const BELONGS_AT: Operation;
    /// Who answers, as messages name it.
    const ORIGIN: Origin = Origin::Vertex;
    /// Its answers give usage at their start as well as at their end (Claude's streams
    /// give the input counts first).
    const USAGE_AT_START: bool = false;
    /// The alias's defaults go into its bodies.
    const DEFAULTS: bool = true;

    /// Whether it can serve `operation`.
    fn serves(operation: Operation) -> bool;

    /// A reason to refuse this request that the operation alone does not give.
    fn refuse(&self, _call: &Call) -> Option<ProxyError> {
        None
    }

    /// Step 4: the body the upstream gets, and where it goes. Every kind that takes the
    /// default flow says; one that overrides [`UpstreamKind::forward`] is never asked.
    fn prepare(&self, _call: &Call) -> Result<Prepared, ProxyError> {
        Err(ProxyError::bad_gateway(
            "upstream_url",
            "this kind of upstream prepares its own calls",
        ))
    }

    /// Headers of its own, beside the client's allowlisted ones and the credential.
    fn add_headers(&self, _call: &Call, _headers: &mut HeaderMap) {}

    /// An error the upstream answered, before the client gets it.
    fn upstream_error(&self, _call: &Call, _error: &mut UpstreamError) {}

    /// Step 6: an edit of a successful, uncompressed answer's bytes as they pass.
    fn relay_edit(&self, _call: &Call, _headers: &HeaderMap) -> Option<BoxEdit> {
        None
    }

    /// Steps 4 to 6, by the default flow unless the kind does not fit it.
    async fn forward(
        &self,
        way: Way<'_>,
        call: Call<'_>,
        held: Held,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        flow(self, way, call, held, log).await
    }
}

/// The default flow: prepare, send (again while it fails before the client has a byte),
/// relay.
async fn flow<K: UpstreamKind + ?Sized>(
    kind: &K,
    way: Way<'_>,
    call: Call<'_>,
    held: Held,
    log: &mut RequestLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    let route = call.route;
    // 4. Prepare: the kind's body, then the alias's defaults for the fields the client left
    // out (the client wins), then the headers.
    let Prepared {
        body,
        target,
        signatures,
    } = kind.prepare(&call)?;
    let body = match route.defaults.is_empty() || !K::DEFAULTS {
        true => body,
        false => match rewrite::missing_members(call.body, &route.defaults) {
            Some(members) => rewrite::insert_first(body, members),
            None => body,
        },
    };
    let credential = way.upstream.credential(&route.auth).await?;
    let mut extra = HeaderMap::new();
    kind.add_headers(&call, &mut extra);
    log.signatures(signatures);
    let headers = (Cow::Borrowed(call.headers), extra);
    let outgoing = Outgoing::new(headers, credential, body, route.auth.clone());
    // 5. Send it, to the route's locations in turn.
    let locate = |location: &str| target.uri(way.vertex, location);
    let mut answer = (way.upstream)
        .send(outgoing, (&route.locations, locate), K::ORIGIN, log)
        .await;
    if let Err(ProxyError::Upstream(e)) = &mut answer {
        log.upstream_failed(e.status);
        kind.upstream_error(&call, e);
    }
    let answer = answer?;
    drop(held);
    let head = answer.response.headers();
    let compressed = head.contains_key(header::CONTENT_ENCODING);
    let status = answer.response.status();
    log.upstream_answered(Answered {
        status: status.as_u16(),
        compressed,
        queued: answer.response.extensions().get::<Queued>().is_some(),
        usage_at_start: K::USAGE_AT_START,
        sse: crate::upstream::is_sse(head),
    });
    // 6. Relay it, through the kind's edit.
    let edit = match status.is_success() && !compressed {
        true => kind.relay_edit(&call, head),
        false => None,
    };
    Ok(way.upstream.relay(answer, edit))
}

/// Every kind, with the state each keeps: one per worker, sharing what must be shared.
#[derive(Clone)]
pub struct Kinds {
    vertex: Arc<VertexUrls>,
    openai: vertex_openai::VertexOpenAi,
    anthropic: vertex_anthropic::VertexAnthropic,
    gemini: vertex_gemini::VertexGemini,
    predict: vertex_predict::VertexPredict,
    service: service::PrivateService,
}

impl Kinds {
    /// `project` is resolved once, at startup; URLs are built for every location a route can
    /// take.
    pub fn new(config: &Config, project: String) -> Kinds {
        Kinds {
            vertex: Arc::new(VertexUrls::new(config, project)),
            openai: vertex_openai::VertexOpenAi::new(config),
            anthropic: vertex_anthropic::VertexAnthropic::new(config),
            gemini: vertex_gemini::VertexGemini,
            predict: vertex_predict::VertexPredict,
            service: service::PrivateService::new(config),
        }
    }

    pub fn project(&self) -> &str {
        self.vertex.project()
    }

    /// One URL on each distinct upstream origin, to connect to early.
    pub fn origins(&self) -> Vec<Uri> {
        let mut origins = self.vertex.origins();
        origins.extend(self.service.origins.iter().cloned());
        origins
    }

    /// Steps 4 to 6 of a request, by its route's kind: refused if the kind cannot serve
    /// the operation, logged as routed if it can.
    pub async fn forward(
        &self,
        upstream: &Upstream,
        call: Call<'_>,
        held: Held,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let way = Way {
            upstream,
            vertex: &self.vertex,
        };
        // Gemini's own API reaches Google's models by their native methods, whatever kind of
        // route the OpenAI API would take to them.
        let native = matches!(call.operation, Operation::Gemini(_));
        match call.route.kind {
            Kind::VertexOpenAi | Kind::VertexEmbeddings if native => {
                dispatch(&self.gemini, way, call, held, log).await
            }
            Kind::VertexOpenAi => dispatch(&self.openai, way, call, held, log).await,
            Kind::VertexAnthropic => dispatch(&self.anthropic, way, call, held, log).await,
            Kind::VertexEmbeddings => dispatch(&self.predict, way, call, held, log).await,
            Kind::Service => dispatch(&self.service, way, call, held, log).await,
        }
    }
}

async fn dispatch<K: UpstreamKind>(
    kind: &K,
    way: Way<'_>,
    call: Call<'_>,
    held: Held,
    log: &mut RequestLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    if !K::serves(call.operation) {
        return Err(wrong_endpoint::<K>(&call.model.name, call.asked));
    }
    if let Some(refused) = kind.refuse(&call) {
        return Err(refused);
    }
    let route = call.route;
    log.routed(&call.model.name, &route.model, route.location(), call.price);
    kind.forward(way, call, held, log).await
}

/// A model sent to an endpoint that cannot serve it: a Claude model to an OpenAI endpoint,
/// another to the Messages API, an embedding model to chat.
fn wrong_endpoint<K: UpstreamKind>(model: &str, asked: Operation) -> ProxyError {
    let model: String = model.chars().take(100).collect();
    ProxyError::bad_request(
        "wrong_endpoint",
        format!(
            "model {model:?} is {}: send it to {}, not {}",
            K::IS,
            K::BELONGS_AT.endpoint(),
            asked.endpoint()
        ),
    )
}
