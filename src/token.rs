//! The Google credential: Application Default Credentials through google-cloud-auth, warmed at
//! startup, and the headers it adds to each upstream request.

use std::time::Duration;

use google_cloud_auth::credentials::{self, CacheableResource, Credentials};
use http::{HeaderMap, HeaderValue};

use crate::error::ProxyError;

pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Where upstream authorization headers come from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// google-cloud-auth caches the token, refreshes it in the background before it expires,
    /// and lets concurrent callers share one fetch; it is an `Arc` inside, so cloning is cheap.
    Google(Credentials),
    /// A fixed token, for demo mode's stand-in, which checks nothing.
    Fixed(HeaderValue),
}

impl TokenSource {
    /// Builds ADC. Must run inside the tokio runtime: the crate spawns its refresh task.
    pub fn application_default() -> Result<TokenSource, String> {
        credentials::Builder::default()
            .with_scopes([SCOPE])
            .build()
            .map(TokenSource::Google)
            .map_err(|e| format!("Application Default Credentials: {e}"))
    }

    /// Starts the first fetch now, so the first request after a cold start finds a token.
    pub fn warm_up(&self, timeout: Duration) {
        if let TokenSource::Google(_) = self {
            let source = self.clone();
            tokio::spawn(async move {
                if let Err(e) = source.headers(timeout).await {
                    crate::log::warning(&format!(
                        "warming the Google token failed; requests will retry: {}",
                        e.message()
                    ));
                }
            });
        }
    }

    /// The headers that authorize a request to Vertex: `authorization`, plus whatever else the
    /// credential needs (for user credentials with a quota project, `x-goog-user-project`).
    pub async fn headers(&self, timeout: Duration) -> Result<HeaderMap, ProxyError> {
        let credentials = match self {
            TokenSource::Fixed(value) => {
                let mut headers = HeaderMap::with_capacity(1);
                headers.insert(http::header::AUTHORIZATION, value.clone());
                return Ok(headers);
            }
            TokenSource::Google(credentials) => credentials,
        };
        // The crate waits for its refresh task without a deadline; a hung metadata server must
        // not hang every request with it.
        let fetched = tokio::time::timeout(timeout, credentials.headers(http::Extensions::new()))
            .await
            .map_err(|_| {
                ProxyError::bad_gateway(
                    "token_unavailable",
                    format!(
                        "could not obtain a Google access token for Vertex within {}s",
                        timeout.as_secs()
                    ),
                )
            })?;
        match fetched {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            // Only returned when the caller passes an entity tag, which we never do.
            Ok(CacheableResource::NotModified) => Err(ProxyError::bad_gateway(
                "token_unavailable",
                "could not obtain a Google access token for Vertex",
            )),
            Err(e) => {
                crate::log::error(&format!("Google access token: {e}"));
                Err(ProxyError::bad_gateway(
                    "token_unavailable",
                    "could not obtain a Google access token for Vertex (the proxy's log has the cause)",
                ))
            }
        }
    }
}
