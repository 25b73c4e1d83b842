//! The transport under every kind: a worker's connections, the credential header, the
//! attempts (again, while a request fails before the client has a byte), what an answer
//! means, and the relay of its body. It knows no kind: a kind hands it headers, a body, and
//! where the request goes in each location.
//!
//! Beside it: the TLS client ([`connect`]), the connections (`pool`), the header allowlists
//! (`headers`), a request kept for its attempts (`outgoing`), Google's error envelope
//! ([`envelope`]), what an answer means (`answer`), the retries ([`retry`]) and the startup
//! lookup of the project (`metadata`).

mod answer;
mod connect;
pub mod envelope;
mod headers;
mod metadata;
mod outgoing;
mod pool;
pub mod retry;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;

use crate::auth::TokenSource;
use crate::body::{self, BoxEdit, Pieces, ProxyBody, UpstreamBody};
use crate::config::{Config, RetryPolicy, Timeouts};
use crate::error::{Origin, ProxyError};
use crate::models::Auth;
pub use answer::Answer;
use connect::classify;
pub use connect::{ClientSettings, HttpClient, client};
use headers::response_headers;
pub use metadata::project_from_metadata;
pub use outgoing::Outgoing;
use pool::Failure;
pub use pool::Queued;
use retry::{Outcome, Retries};
pub use retry::{Record, Stopping};

/// The ID-token credentials of the services, by audience, made at startup.
pub type IdTokens = std::collections::BTreeMap<Arc<str>, TokenSource>;

/// One worker's way upstream: its connections, its copy of the credentials, and the limits
/// on each call.
#[derive(Clone)]
pub struct Upstream {
    client: HttpClient,
    /// What each worker's own client is built from.
    settings: ClientSettings,
    tokens: TokenSource,
    /// The ID tokens of the services, by audience.
    id_tokens: IdTokens,
    timeouts: Timeouts,
    retries: RetryPolicy,
    /// The server's shutdown, shared by every worker.
    stopping: Stopping,
}

impl Upstream {
    pub fn new(
        config: &Config,
        (tokens, id_tokens): (TokenSource, IdTokens),
        client: HttpClient,
    ) -> Upstream {
        Upstream {
            client,
            settings: ClientSettings::of(config),
            tokens,
            id_tokens,
            timeouts: config.timeouts,
            retries: config.retries,
            stopping: Stopping::default(),
        }
    }

    /// The server's shutdown as the requests see it: the server begins it.
    pub fn stopping(&self) -> &Stopping {
        &self.stopping
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

    /// Opens this worker's connection to each of `origins` now, all at once, so that the
    /// first request after a cold start does not pay the handshakes (`UPSTREAM_PRECONNECT`).
    /// Must run on the worker's own runtime.
    pub fn preconnect(&self, origins: Vec<Uri>) {
        for uri in origins {
            let client = self.client.clone();
            tokio::spawn(async move { client.preconnect(&uri).await });
        }
    }

    /// `MAX_ATTEMPTS` and `RETRY_BUDGET_SECS`.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retries
    }

    /// `UPSTREAM_IDLE_TIMEOUT_SECS`: the longest the upstream may be silent.
    pub fn idle_timeout(&self) -> Duration {
        self.timeouts.upstream_idle
    }

    /// The headers that authorize a request for `auth`, where it puts them (see `placed`):
    /// shared with the worker's cache, not copied, for the Vertex token.
    pub async fn credential(&self, auth: &Auth) -> Result<Arc<HeaderMap>, ProxyError> {
        let tokens = self.tokens(auth)?;
        let credential = tokens.headers(self.timeouts.token).await?;
        Ok(placed(credential, auth))
    }

    /// Where `auth`'s tokens come from.
    fn tokens(&self, auth: &Auth) -> Result<&TokenSource, ProxyError> {
        match auth {
            Auth::GoogleAccessToken => Ok(&self.tokens),
            Auth::GoogleIdToken { audience, .. } => self.id_tokens.get(audience).ok_or_else(|| {
                ProxyError::bad_gateway(
                    "token_unavailable",
                    "no ID-token credential was made for this service",
                )
            }),
        }
    }

    /// After the upstream answered 401 to `sent`, the credential it was given: the
    /// credential's headers worth one more attempt, if any
    /// (`auth::TokenSource::after_refusal`).
    async fn renewed(
        &self,
        auth: &Auth,
        sent: &HeaderMap,
    ) -> Result<Option<Arc<HeaderMap>>, ProxyError> {
        let refused = sent.get(token_header(auth));
        let renewed = (self.tokens(auth)?)
            .after_refusal(refused, self.timeouts.token)
            .await?;
        Ok(renewed.map(|credential| placed(credential, auth)))
    }

    /// Sends `outgoing` to its locations in turn (`locate` gives the URL in each), as
    /// [`retry`] allows, until an answer is worth relaying: content (a stream, once its first
    /// event is not an error), or an error that would repeat. Each attempt goes in `record`
    /// once there is more than one. `from` names the upstream in messages. Once the server
    /// shuts down, no other attempt is made: the last error is the answer, at once.
    pub async fn send(
        &self,
        mut outgoing: Outgoing<'_>,
        (locations, locate): (&[String], impl Fn(&str) -> Result<Uri, ProxyError>),
        from: Origin,
        record: &mut impl Record,
    ) -> Result<Answer, ProxyError> {
        let mut retries = Retries::new(self.retries, locations);
        loop {
            let outcome = match locate(retries.location()) {
                Ok(uri) => self.attempt(&mut outgoing, &uri, from).await,
                Err(e) => Outcome::Fail(e),
            };
            let next = match retries.after(outcome, record.attempts()) {
                ControlFlow::Break(result) => return result,
                ControlFlow::Continue(next) => next,
            };
            if !record.may_retry(next.status, next.wait) {
                return Err(next.error);
            }
            let stopped = tokio::select! {
                biased;
                () = self.stopping.wait() => true,
                () = tokio::time::sleep(next.wait) => false,
            };
            if stopped {
                record.ended_by_shutdown();
                return Err(next.error);
            }
        }
    }

    /// One attempt at `uri`. A 401 means a token the caches still hold was refused (revoked,
    /// say): it is sent once more if there is another token to try.
    async fn attempt(
        &self,
        outgoing: &mut Outgoing<'_>,
        uri: &Uri,
        from: Origin,
    ) -> Outcome<Answer> {
        let mut sent = self
            .send_once(outgoing.request(uri), (uri, from), &outgoing.auth)
            .await;
        if let Err(Outcome::Fail(ProxyError::UpstreamRefused { status: 401, .. })) = sent {
            match self.renewed(&outgoing.auth, &outgoing.credential).await {
                Ok(Some(credential)) => {
                    outgoing.credential = credential;
                    sent = self
                        .send_once(outgoing.request(uri), (uri, from), &outgoing.auth)
                        .await;
                }
                // The refusal stands.
                Ok(None) => {}
                Err(e) => return Outcome::Fail(e),
            }
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
    /// Connection failures become the proxy's 502 and 504, retried only when nothing of the
    /// request was sent (not TLS, the head timeout, or a connection lost once the request
    /// was on it); a refused credential is final.
    async fn send_once(
        &self,
        request: Request<Pieces>,
        (uri, from): (&Uri, Origin),
        auth: &Auth,
    ) -> Result<Response<UpstreamBody>, Outcome<Answer>> {
        let idle = self.timeouts.upstream_idle;
        let response = match tokio::time::timeout(idle, self.client.send(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(failure)) => {
                let host = uri.host().unwrap_or_default();
                let error = classify(&failure, (from, host), self.timeouts.connect);
                // Only what the upstream cannot have seen is sent again: work it may have
                // begun would be done, and billed, twice.
                let seen = matches!(failure, Failure::Sent(_));
                return Err(match &error {
                    ProxyError::BadGateway {
                        code: "upstream_tls_error",
                        ..
                    } => Outcome::Fail(error),
                    _ if seen => Outcome::Fail(error),
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
                Err(Outcome::Fail(self.refused(response, from, auth).await))
            }
            _ => Ok(response),
        }
    }

    /// The error for a 401 or 403 from the upstream, with the cause Google's envelope gives
    /// and what the proxy sent.
    async fn refused(
        &self,
        response: Response<UpstreamBody>,
        from: Origin,
        auth: &Auth,
    ) -> ProxyError {
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
            sent: sent(auth),
        }
    }

    /// Step 6: the response the client gets. The body streams through as it comes, through
    /// `edit`, cut if the upstream goes silent; only the allowlisted headers pass.
    pub fn relay(&self, answer: Answer, edit: Option<BoxEdit>) -> Response<ProxyBody> {
        let (parts, upstream) = answer.response.into_parts();
        let body = body::idle_limited(upstream, answer.read, edit, self.timeouts.upstream_idle);
        let mut response = Response::new(body);
        *response.status_mut() = parts.status;
        *response.headers_mut() = response_headers(&parts.headers);
        response
    }
}

/// The header that carries `auth`'s token.
fn token_header(auth: &Auth) -> &HeaderName {
    match auth {
        Auth::GoogleIdToken { header, .. } => header,
        Auth::GoogleAccessToken => &header::AUTHORIZATION,
    }
}

/// A credential's headers where `auth` puts them: a service's ID token in the header its
/// alias names, and the service's own key, if it has one, in `Authorization`. The Vertex
/// token's are left as they are, and so shared, not copied.
fn placed(credential: Arc<HeaderMap>, auth: &Auth) -> Arc<HeaderMap> {
    let Auth::GoogleIdToken {
        header,
        service_key,
        ..
    } = auth
    else {
        return credential;
    };
    let mut credential = Arc::unwrap_or_clone(credential);
    if header != header::AUTHORIZATION
        && let Some(token) = credential.remove(header::AUTHORIZATION)
    {
        credential.insert(header.clone(), token);
    }
    if let Some(bearer) = service_key.as_ref().and_then(|key| key.bearer.as_ref()) {
        credential.insert(header::AUTHORIZATION, bearer.clone());
    }
    Arc::new(credential)
}

/// What the proxy sent to authorize a request, as a refusal's message says it.
fn sent(auth: &Auth) -> String {
    let Auth::GoogleIdToken {
        header,
        service_key,
        ..
    } = auth
    else {
        return "a Google access token in Authorization".into();
    };
    if header == header::AUTHORIZATION {
        return "a Google ID token in Authorization".into();
    }
    match service_key {
        Some(key) => format!(
            "a Google ID token in X-Serverless-Authorization and the service's own key (from {}) in Authorization",
            key.env
        ),
        None => {
            "a Google ID token in X-Serverless-Authorization and nothing in Authorization".into()
        }
    }
}

/// Whether an answer is an SSE stream.
pub fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}
