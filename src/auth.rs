//! The Google credentials: Application Default Credentials through google-cloud-auth, for
//! Vertex's access token and for the ID tokens of private services; each warmed at startup,
//! rebuilt when it breaks for good, and the headers it adds to each upstream request.
//!
//! google-cloud-auth caches the token, refreshes it before expiry and retries transient
//! failures by itself. After a non-transient one (a 4xx from the metadata server, say) it
//! never asks again, so an instance would stay broken until restarted: here the credential is
//! then rebuilt, with backoff, until a fetch succeeds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use google_cloud_auth::credentials::idtoken::{self, IDTokenCredentials};
use google_cloud_auth::credentials::{
    self, CacheableResource, Credentials, CredentialsProvider, EntityTag,
};
use google_cloud_auth::errors::CredentialsError;
use http::{HeaderMap, HeaderValue};

use crate::error::ProxyError;
use crate::{lock, log};

pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How long a worker reuses the headers it last got from google-cloud-auth. Asking the crate
/// costs about 3 k instructions and a dozen allocations per request; it replaces a token four
/// minutes before the token expires, so a copy at most a second old is still valid.
const REUSE_FOR: Duration = Duration::from_secs(1);

/// The first wait before rebuilding a broken credential, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// One `ERROR` line per distinct cause in this long.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// At most one credential built anew after the upstream refused a token, per credential, in
/// this long: a service that refuses every token must not make each request build one (each
/// keeps a refresh task of google-cloud-auth's until its token expires).
const RENEW_EVERY: Duration = Duration::from_secs(30);

/// Where upstream authorization headers come from.
#[derive(Clone)]
pub enum TokenSource {
    Google {
        shared: Arc<Google>,
        /// The headers last fetched, and when; one per worker thread (see `for_worker`).
        recent: Arc<Mutex<Option<Recent>>>,
    },
    /// A fixed token, for demo mode's stand-in, which checks nothing.
    Fixed(HeaderValue),
}

/// Headers a worker fetched, and when. Shared with the requests that use them, so that reuse
/// copies no map.
type Recent = (Instant, Arc<HeaderMap>);

/// Makes a new credential: Application Default Credentials, or a test's own.
type Build = Box<dyn Fn() -> Result<Credentials, String> + Send + Sync>;

/// The credential every worker shares, and what is known of its health.
pub struct Google {
    /// What it yields and for whom, in the client's error: "Google access token", "Vertex".
    what: (&'static str, &'static str),
    /// The same for the log, which may name a service's audience: the client may not.
    label: String,
    /// The credential in use; replaced whole when it is rebuilt.
    credentials: RwLock<Credentials>,
    build: Build,
    /// The last fetch failed; `/health` says so.
    failing: AtomicBool,
    /// A rebuild is under way: one at a time.
    rebuilding: AtomicBool,
    /// When a credential was last built anew after a refused token (tokio's clock, which
    /// tests can move).
    renewed: Mutex<Option<tokio::time::Instant>>,
    /// The causes logged in the last minute, and when.
    logged: Mutex<Vec<(String, Instant)>>,
}

impl TokenSource {
    /// Builds ADC. Must run inside the tokio runtime: the crate spawns its refresh task.
    pub fn application_default() -> Result<TokenSource, String> {
        let build = || {
            credentials::Builder::default()
                .with_scopes([SCOPE])
                .build()
                .map_err(|e| format!("Application Default Credentials: {e}"))
        };
        Ok(TokenSource::google(build()?, Box::new(build)))
    }

    /// ID tokens for `audience`, from google-cloud-auth's ID-token credentials: the metadata
    /// server's identity endpoint on Cloud Run, or a service-account file signing locally
    /// (`GOOGLE_APPLICATION_CREDENTIALS`). They come as `authorization: Bearer …`. Must run
    /// inside the tokio runtime.
    pub fn id_token(audience: &str) -> Result<TokenSource, String> {
        let audience = audience.to_owned();
        let label = format!("Google ID token for {audience}");
        let build = move || {
            idtoken::Builder::new(audience.as_str())
                .build()
                .map(|id| Credentials::from(IdTokenHeaders(id)))
                .map_err(|e| {
                    format!(
                        "cannot make ID tokens for {audience} from these credentials ({e}); \
                         use a service-account key file, or run `gcloud auth \
                         application-default login --impersonate-service-account EMAIL`"
                    )
                })
        };
        let what = ("Google ID token", "the service");
        Ok(TokenSource::with(build()?, Box::new(build), what, label))
    }

    /// `credentials` now, and `build` to make another when it breaks.
    pub fn google(credentials: Credentials, build: Build) -> TokenSource {
        let what = ("Google access token", "Vertex");
        TokenSource::with(credentials, build, what, what.0.into())
    }

    fn with(
        credentials: Credentials,
        build: Build,
        what: (&'static str, &'static str),
        label: String,
    ) -> Self {
        TokenSource::Google {
            shared: Arc::new(Google {
                what,
                label,
                credentials: RwLock::new(credentials),
                build,
                failing: AtomicBool::new(false),
                rebuilding: AtomicBool::new(false),
                renewed: Mutex::default(),
                logged: Mutex::default(),
            }),
            recent: Arc::default(),
        }
    }

    /// The same credential with a reuse slot of its own, so that worker threads never
    /// contend on one lock.
    pub fn for_worker(&self) -> TokenSource {
        match self {
            TokenSource::Google { shared, .. } => TokenSource::Google {
                shared: shared.clone(),
                recent: Arc::default(),
            },
            TokenSource::Fixed(value) => TokenSource::Fixed(value.clone()),
        }
    }

    /// Whether the last attempt to get a token failed.
    pub fn failing(&self) -> bool {
        match self {
            TokenSource::Google { shared, .. } => shared.failing.load(Ordering::Relaxed),
            TokenSource::Fixed(_) => false,
        }
    }

    /// Starts the first fetch now, so the first request after a cold start finds a token.
    pub fn warm_up(&self, timeout: Duration) {
        if let TokenSource::Google { .. } = self {
            let source = self.clone();
            // A failure is logged by `headers`, and recovered from there.
            tokio::spawn(async move { source.headers(timeout).await });
        }
    }

    /// The headers that authorize a request to Vertex: `authorization`, plus whatever else the
    /// credential needs (for user credentials with a quota project, `x-goog-user-project`).
    pub async fn headers(&self, timeout: Duration) -> Result<Arc<HeaderMap>, ProxyError> {
        let (shared, recent) = match self {
            TokenSource::Fixed(value) => {
                let mut headers = HeaderMap::with_capacity(1);
                headers.insert(http::header::AUTHORIZATION, value.clone());
                return Ok(Arc::new(headers));
            }
            TokenSource::Google { shared, recent } => (shared, recent),
        };
        if let Some((at, headers)) = &*lock(recent)
            && at.elapsed() < REUSE_FOR
        {
            return Ok(headers.clone());
        }
        let credentials = shared.current();
        let fetched = Arc::new(shared.fetch(&credentials, timeout).await?);
        // Errors are never reused: the next request asks again.
        *lock(recent) = Some((Instant::now(), fetched.clone()));
        Ok(fetched)
    }

    /// After the upstream refused `refused`, the token it was sent (revoked, say, or from a
    /// deleted key): headers worth one more attempt, or `None`. Another request may already
    /// have replaced that token: then the current one. Else a credential built anew,
    /// bypassing every cache, by one request at a time and at most once in [`RENEW_EVERY`]:
    /// the requests meanwhile get the upstream's answer.
    pub async fn after_refusal(
        &self,
        refused: Option<&HeaderValue>,
        timeout: Duration,
    ) -> Result<Option<Arc<HeaderMap>>, ProxyError> {
        let TokenSource::Google { shared, .. } = self else {
            // A fixed token would only be refused again.
            return Ok(None);
        };
        let current = self.headers(timeout).await?;
        if current.get(http::header::AUTHORIZATION) != refused {
            return Ok(Some(current));
        }
        {
            let mut renewed = lock(&shared.renewed);
            if renewed.is_some_and(|at| at.elapsed() < RENEW_EVERY) {
                return Ok(None);
            }
            *renewed = Some(tokio::time::Instant::now());
        }
        self.fresh(timeout).await.map(Some)
    }

    /// Headers from a credential built anew, bypassing every cache.
    async fn fresh(&self, timeout: Duration) -> Result<Arc<HeaderMap>, ProxyError> {
        let TokenSource::Google { shared, recent } = self else {
            return self.headers(timeout).await;
        };
        let credentials = (shared.build)().map_err(|e| shared.failed(&e))?;
        let fetched = Arc::new(shared.fetch(&credentials, timeout).await?);
        *shared
            .credentials
            .write()
            .unwrap_or_else(|e| e.into_inner()) = credentials;
        *lock(recent) = Some((Instant::now(), fetched.clone()));
        Ok(fetched)
    }
}

impl Google {
    fn current(&self) -> Credentials {
        // A poisoned lock still holds a whole credential: it is only ever replaced.
        self.credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One fetch from `credentials`, bounded by `timeout`, with failures logged and a broken
    /// credential rebuilt in the background.
    async fn fetch(
        self: &Arc<Self>,
        credentials: &Credentials,
        timeout: Duration,
    ) -> Result<HeaderMap, ProxyError> {
        // The crate waits for its refresh task without a deadline; a hung metadata server must
        // not hang every request with it.
        let fetched = tokio::time::timeout(timeout, credentials.headers(http::Extensions::new()));
        match fetched.await {
            Ok(Ok(CacheableResource::New { data, .. })) => {
                self.failing.store(false, Ordering::Relaxed);
                Ok(data)
            }
            // Only returned when the caller passes an entity tag, which we never do.
            Ok(Ok(CacheableResource::NotModified)) => {
                Err(self.failed("the credential answered NotModified"))
            }
            Ok(Err(e)) => {
                let error = self.failed(&e.to_string());
                if !e.is_transient() {
                    self.rebuild_in_background(timeout);
                }
                Err(error)
            }
            Err(_) => {
                self.failed("no token within TOKEN_TIMEOUT_SECS");
                Err(ProxyError::bad_gateway(
                    "token_unavailable",
                    format!(
                        "could not obtain a {} for {} within {}s",
                        self.what.0,
                        self.what.1,
                        timeout.as_secs()
                    ),
                ))
            }
        }
    }

    /// Marks the token failing, logs `cause` unless it was logged in the last minute, and
    /// returns the client's error, which never holds the cause.
    fn failed(&self, cause: &str) -> ProxyError {
        self.failing.store(true, Ordering::Relaxed);
        let mut logged = lock(&self.logged);
        logged.retain(|(_, at)| at.elapsed() < LOG_EVERY);
        if !logged.iter().any(|(seen, _)| seen == cause) {
            logged.push((cause.to_owned(), Instant::now()));
            log::error(&format!("{}: {cause}", self.label));
        }
        ProxyError::bad_gateway(
            "token_unavailable",
            format!(
                "could not obtain a {} for {} (the proxy's log has the cause)",
                self.what.0, self.what.1
            ),
        )
    }

    /// Builds new credentials, with backoff, until one yields a token or fails only
    /// transiently (which google-cloud-auth retries by itself), then puts it in use.
    fn rebuild_in_background(self: &Arc<Self>, timeout: Duration) {
        if self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let google = self.clone();
        tokio::spawn(async move {
            let mut wait = BACKOFF.0;
            loop {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(BACKOFF.1);
                let credentials = match (google.build)() {
                    Ok(credentials) => credentials,
                    Err(e) => {
                        google.failed(&e);
                        continue;
                    }
                };
                let fetched =
                    tokio::time::timeout(timeout, credentials.headers(http::Extensions::new()));
                let usable = match fetched.await {
                    Ok(Ok(_)) => {
                        google.failing.store(false, Ordering::Relaxed);
                        true
                    }
                    Ok(Err(e)) => e.is_transient(),
                    Err(_) => true,
                };
                if usable {
                    *google
                        .credentials
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = credentials;
                    log::info(&format!("{}: the credential was rebuilt", google.label));
                    break;
                }
            }
            google.rebuilding.store(false, Ordering::Release);
        });
    }
}

/// google-cloud-auth's ID-token credentials as a credential that yields headers, so that an
/// ID token is cached, reused, rebuilt and reported exactly as the access token is.
#[derive(Debug)]
struct IdTokenHeaders(IDTokenCredentials);

impl CredentialsProvider for IdTokenHeaders {
    async fn headers(
        &self,
        _: http::Extensions,
    ) -> Result<CacheableResource<HeaderMap>, CredentialsError> {
        // The crate caches the token and fetches the next one before this one expires.
        let token = self.0.id_token().await?;
        let mut value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| CredentialsError::from_msg(false, "the ID token is not a header value"))?;
        value.set_sensitive(true);
        let mut data = HeaderMap::with_capacity(1);
        data.insert(http::header::AUTHORIZATION, value);
        Ok(CacheableResource::New {
            entity_tag: EntityTag::new(),
            data,
        })
    }

    async fn universe_domain(&self) -> Option<String> {
        None
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // SECURITY: no token, ever.
        match self {
            TokenSource::Google { .. } => f.write_str("TokenSource::Google"),
            TokenSource::Fixed(_) => f.write_str("TokenSource::Fixed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Issues `Bearer 1`, `Bearer 2`, … and counts how often it was asked; fails when told to,
    /// transiently or for good (then it keeps failing, as google-cloud-auth's cache does).
    #[derive(Debug, Default, Clone)]
    struct Counting {
        asked: Arc<AtomicU32>,
        fail: Arc<std::sync::atomic::AtomicBool>,
        permanent: Arc<std::sync::atomic::AtomicBool>,
        broken: Arc<std::sync::atomic::AtomicBool>,
    }

    impl CredentialsProvider for Counting {
        async fn headers(
            &self,
            _: http::Extensions,
        ) -> Result<CacheableResource<HeaderMap>, CredentialsError> {
            let n = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
            if self.broken.load(Ordering::SeqCst) || self.permanent.load(Ordering::SeqCst) {
                self.broken.store(true, Ordering::SeqCst);
                return Err(CredentialsError::from_msg(
                    false,
                    "metadata server said 403",
                ));
            }
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
        let source =
            TokenSource::google(Credentials::from(provider), Box::new(|| Err("no".into())));
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

    #[tokio::test]
    async fn a_credential_broken_for_good_is_rebuilt_and_the_next_fresh_one_is_used() {
        let provider = Counting::default();
        let permanent = provider.permanent.clone();
        let rebuilt = Arc::new(tokio::sync::Notify::new());
        let (template, signal) = (provider.clone(), rebuilt.clone());
        // Each build is a new credential with an empty cache, as ADC's would be.
        let build: Build = Box::new(move || {
            signal.notify_one();
            let fresh = Counting {
                broken: Arc::default(),
                ..template.clone()
            };
            Ok(Credentials::from(fresh))
        });
        let source = TokenSource::google(Credentials::from(provider), build);
        let timeout = Duration::from_secs(5);

        permanent.store(true, Ordering::SeqCst);
        assert!(source.headers(timeout).await.is_err());
        assert!(source.failing());
        // The old credential stays broken even once the cause is gone...
        permanent.store(false, Ordering::SeqCst);
        assert!(source.headers(timeout).await.is_err());
        // ...until the rebuild, after the first backoff, puts a new one in use.
        tokio::time::timeout(Duration::from_secs(10), rebuilt.notified())
            .await
            .expect("a rebuild");
        let recovered = async {
            loop {
                if let Ok(headers) = source.headers(timeout).await {
                    return headers;
                }
                tokio::task::yield_now().await;
            }
        };
        let headers = tokio::time::timeout(Duration::from_secs(10), recovered)
            .await
            .expect("the rebuilt credential serves");
        assert!(authorization(&headers).starts_with("Bearer "));
        assert!(!source.failing());

        // `fresh` bypasses the worker's reuse slot and the credential's cache.
        let before = authorization(&source.headers(timeout).await.unwrap()).to_owned();
        let fresh = source.fresh(timeout).await.unwrap();
        assert_ne!(authorization(&fresh), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_renewed_once_in_30_s_and_the_others_take_the_current_one() {
        let provider = Counting::default();
        let built = Arc::new(AtomicU32::new(0));
        let (template, count) = (provider.clone(), built.clone());
        let build: Build = Box::new(move || {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(Credentials::from(template.clone()))
        });
        let source = TokenSource::google(Credentials::from(provider), build);
        let other_worker = source.for_worker();
        let timeout = Duration::from_secs(5);
        let refused = source.headers(timeout).await.unwrap();
        let first = refused.get(http::header::AUTHORIZATION);
        assert_eq!(authorization(&refused), "Bearer 1");
        // The first refusal builds a credential anew, and tries its token.
        let renewed = source.after_refusal(first, timeout).await.unwrap();
        assert_eq!(authorization(&renewed.unwrap()), "Bearer 2");
        assert_eq!(built.load(Ordering::SeqCst), 1);
        // A request that had sent the old token takes the current one, and builds nothing.
        let renewed = source.after_refusal(first, timeout).await.unwrap();
        assert_eq!(authorization(&renewed.unwrap()), "Bearer 2");
        // The new one refused too, within 30 s: no other attempt, no other credential, in
        // any worker.
        let second = HeaderValue::from_static("Bearer 2");
        assert!(
            source
                .after_refusal(Some(&second), timeout)
                .await
                .unwrap()
                .is_none()
        );
        let other = other_worker.headers(timeout).await.unwrap();
        let sent = other.get(http::header::AUTHORIZATION);
        assert!(
            other_worker
                .after_refusal(sent, timeout)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(built.load(Ordering::SeqCst), 1);
        // 30 s on, a refusal may build one again.
        tokio::time::advance(RENEW_EVERY).await;
        let current = source.headers(timeout).await.unwrap();
        let sent = current.get(http::header::AUTHORIZATION);
        assert!(source.after_refusal(sent, timeout).await.unwrap().is_some());
        assert_eq!(built.load(Ordering::SeqCst), 2);
        // A fixed token is never tried again.
        let fixed = TokenSource::Fixed(HeaderValue::from_static("Bearer demo"));
        let sent = HeaderValue::from_static("Bearer demo");
        assert!(
            fixed
                .after_refusal(Some(&sent), timeout)
                .await
                .unwrap()
                .is_none()
        );
    }
}
