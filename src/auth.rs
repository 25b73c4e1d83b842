//! The Google credential: Application Default Credentials through google-cloud-auth, warmed at
//! startup, and the headers it adds to each upstream request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use google_cloud_auth::credentials::{self, CacheableResource, Credentials};
use http::{HeaderMap, HeaderValue};

use crate::error::ProxyError;
use crate::lock;

pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How long a worker reuses the headers it last got from google-cloud-auth. Asking the crate
/// costs about 3 k instructions and a dozen allocations per request; it replaces a token four
/// minutes before the token expires, so a copy at most a second old is still valid.
const REUSE_FOR: Duration = Duration::from_secs(1);

/// Where upstream authorization headers come from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// google-cloud-auth caches the token, refreshes it in the background before it expires,
    /// and lets concurrent callers share one fetch; it is an `Arc` inside, so cloning is cheap.
    Google {
        credentials: Credentials,
        /// The headers last fetched, and when; one per worker thread (see `for_worker`).
        recent: Arc<Mutex<Option<(Instant, HeaderMap)>>>,
    },
    /// A fixed token, for demo mode's stand-in, which checks nothing.
    Fixed(HeaderValue),
}

impl TokenSource {
    /// Builds ADC. Must run inside the tokio runtime: the crate spawns its refresh task.
    pub fn application_default() -> Result<TokenSource, String> {
        credentials::Builder::default()
            .with_scopes([SCOPE])
            .build()
            .map(TokenSource::google)
            .map_err(|e| format!("Application Default Credentials: {e}"))
    }

    pub fn google(credentials: Credentials) -> TokenSource {
        TokenSource::Google {
            credentials,
            recent: Arc::default(),
        }
    }

    /// The same credential with a reuse slot of its own, so that worker threads never
    /// contend on one lock.
    pub fn for_worker(&self) -> TokenSource {
        match self {
            TokenSource::Google { credentials, .. } => TokenSource::google(credentials.clone()),
            TokenSource::Fixed(value) => TokenSource::Fixed(value.clone()),
        }
    }

    /// Starts the first fetch now, so the first request after a cold start finds a token.
    pub fn warm_up(&self, timeout: Duration) {
        if let TokenSource::Google { .. } = self {
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
        let (credentials, recent) = match self {
            TokenSource::Fixed(value) => {
                let mut headers = HeaderMap::with_capacity(1);
                headers.insert(http::header::AUTHORIZATION, value.clone());
                return Ok(headers);
            }
            TokenSource::Google {
                credentials,
                recent,
            } => (credentials, recent),
        };
        if let Some((at, headers)) = &*lock(recent)
            && at.elapsed() < REUSE_FOR
        {
            return Ok(headers.clone());
        }
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
            Ok(CacheableResource::New { data, .. }) => {
                // Errors are never reused: the next request asks again.
                *lock(recent) = Some((Instant::now(), data.clone()));
                Ok(data)
            }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use google_cloud_auth::credentials::{CredentialsProvider, EntityTag};
    use google_cloud_auth::errors::CredentialsError;

    use super::*;

    /// Issues `Bearer 1`, `Bearer 2`, … and counts how often it was asked; fails when told to.
    #[derive(Debug, Default)]
    struct Counting {
        asked: Arc<AtomicU32>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl CredentialsProvider for Counting {
        async fn headers(
            &self,
            _: http::Extensions,
        ) -> Result<CacheableResource<HeaderMap>, CredentialsError> {
            let n = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail.load(Ordering::SeqCst) {
                return Err(CredentialsError::from_msg(true, "metadata server down"));
            }
            let mut data = HeaderMap::new();
            data.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {n}")).unwrap(),
            );
            Ok(CacheableResource::New {
                entity_tag: EntityTag::new(),
                data,
            })
        }

        async fn universe_domain(&self) -> Option<String> {
            None
        }
    }

    fn authorization(headers: &HeaderMap) -> &str {
        headers[http::header::AUTHORIZATION].to_str().unwrap()
    }

    #[tokio::test]
    async fn a_worker_reuses_fresh_headers_and_asks_again_once_they_are_old() {
        let provider = Counting::default();
        let (asked, fail) = (provider.asked.clone(), provider.fail.clone());
        let source = TokenSource::google(Credentials::from(provider));
        let timeout = Duration::from_secs(5);

        let first = source.headers(timeout).await.unwrap();
        let second = source.headers(timeout).await.unwrap();
        assert_eq!(authorization(&first), "Bearer 1");
        assert_eq!(authorization(&second), "Bearer 1");
        assert_eq!(asked.load(Ordering::SeqCst), 1, "fresh headers were reused");

        // Another worker has its own slot.
        let other = source.for_worker();
        assert_eq!(
            authorization(&other.headers(timeout).await.unwrap()),
            "Bearer 2"
        );

        // Headers older than REUSE_FOR are fetched again.
        let TokenSource::Google { recent, .. } = &source else {
            unreachable!()
        };
        let aged = Instant::now().checked_sub(REUSE_FOR).unwrap();
        lock(recent).as_mut().unwrap().0 = aged;
        assert_eq!(
            authorization(&source.headers(timeout).await.unwrap()),
            "Bearer 3"
        );

        // An error is passed on, and never reused in place of a token.
        lock(recent).as_mut().unwrap().0 = aged;
        fail.store(true, Ordering::SeqCst);
        assert!(source.headers(timeout).await.is_err());
        fail.store(false, Ordering::SeqCst);
        assert_eq!(
            authorization(&source.headers(timeout).await.unwrap()),
            "Bearer 5"
        );
    }
}
