//! Google's metadata server, as google-cloud-auth and the proxy's project lookup use it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::cloud_run;
use super::fake_vertex::{full, response};
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMode {
    Ok,
    /// 500: a transient failure, which google-cloud-auth retries by itself.
    Fail,
    /// 403: a failure google-cloud-auth takes as permanent.
    Forbidden,
    /// A token of its own for every fetch: `GOOGLE_TOKEN.1`, `GOOGLE_TOKEN.2`, …
    Numbered,
}

/// Google's metadata server, as google-cloud-auth and the proxy's project lookup use it.
pub struct FakeMetadata {
    pub addr: SocketAddr,
    pub token_requests: Arc<AtomicUsize>,
    pub token_fetched: Arc<Notify>,
    mode: Arc<Mutex<MetadataMode>>,
    /// What it answers for the project id.
    project: Arc<Mutex<String>>,
    /// While false, token requests wait: concurrent callers pile up behind one fetch.
    open: Arc<tokio::sync::watch::Sender<bool>>,
    /// The audience of each ID token asked for, in order.
    pub identity_requests: Arc<Mutex<Vec<String>>>,
    /// The `jti` of each ID token issued, in order.
    pub identity_issued: Arc<Mutex<Vec<u64>>>,
    /// While true, ID tokens are refused with 403 (access tokens are not).
    pub identity_refused: Arc<std::sync::atomic::AtomicBool>,
    /// How long the ID tokens it issues are valid, in seconds (an hour, as Google's).
    pub identity_lifetime: Arc<std::sync::atomic::AtomicU64>,
}

impl FakeMetadata {
    pub async fn start() -> FakeMetadata {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeMetadata {
            addr: listener.local_addr().unwrap(),
            token_requests: Arc::default(),
            token_fetched: Arc::default(),
            mode: Arc::new(Mutex::new(MetadataMode::Ok)),
            project: Arc::new(Mutex::new(PROJECT.into())),
            open: Arc::new(tokio::sync::watch::channel(true).0),
            identity_requests: Arc::default(),
            identity_issued: Arc::default(),
            identity_refused: Arc::default(),
            identity_lifetime: Arc::new(3600.into()),
        };
        let (count, fetched, mode, open, project) = (
            fake.token_requests.clone(),
            fake.token_fetched.clone(),
            fake.mode.clone(),
            fake.open.clone(),
            fake.project.clone(),
        );
        let issued = fake.identity_issued.clone();
        let (identities, refused, lifetime) = (
            fake.identity_requests.clone(),
            fake.identity_refused.clone(),
            fake.identity_lifetime.clone(),
        );
        serve(listener, move |request: Request<Incoming>| {
            let (count, fetched, mode) = (count.clone(), fetched.clone(), mode.clone());
            let (identities, refused, issued) =
                (identities.clone(), refused.clone(), issued.clone());
            let lifetime = lifetime.load(Ordering::SeqCst);
            let project = project.lock().unwrap().clone();
            let mut open = open.subscribe();
            async move {
                if request
                    .headers()
                    .get("metadata-flavor")
                    .map(|v| v.as_bytes())
                    != Some(b"Google")
                {
                    return response(
                        StatusCode::FORBIDDEN,
                        "text/plain",
                        full("missing Metadata-Flavor"),
                    );
                }
                let path = request.uri().path();
                if path == "/computeMetadata/v1/project/project-id" {
                    return response(StatusCode::OK, "application/text", full(project));
                }
                // An ID token, as plain text: Google-signed on Cloud Run, here signed by no one.
                if path == "/computeMetadata/v1/instance/service-accounts/default/identity" {
                    let query = request.uri().query().unwrap_or_default();
                    let Some(audience) = query_value(query, "audience") else {
                        return response(
                            StatusCode::BAD_REQUEST,
                            "text/plain",
                            full("non-empty audience parameter required"),
                        );
                    };
                    identities.lock().unwrap().push(audience.clone());
                    fetched.notify_waiters();
                    if *mode.lock().unwrap() == MetadataMode::Forbidden
                        || refused.load(Ordering::SeqCst)
                    {
                        return response(StatusCode::FORBIDDEN, "text/plain", full("forbidden"));
                    }
                    let token = cloud_run::id_token_for(&audience, "metadata", lifetime);
                    let serial = cloud_run::claims(&token).and_then(|c| c["jti"].as_u64());
                    issued.lock().unwrap().extend(serial);
                    return response(StatusCode::OK, "text/plain", full(token));
                }
                if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    fetched.notify_waiters();
                    let _ = open.wait_for(|open| *open).await;
                    let mode = *mode.lock().unwrap();
                    let token = |token: String| {
                        response(
                            StatusCode::OK,
                            "application/json",
                            full(format!(
                                r#"{{"access_token":"{token}","expires_in":3599,"token_type":"Bearer"}}"#
                            )),
                        )
                    };
                    return match mode {
                        MetadataMode::Ok => token(GOOGLE_TOKEN.into()),
                        MetadataMode::Numbered => token(format!("{GOOGLE_TOKEN}.{n}")),
                        MetadataMode::Forbidden => {
                            response(StatusCode::FORBIDDEN, "text/plain", full("forbidden"))
                        }
                        MetadataMode::Fail => response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "text/plain",
                            full("broken"),
                        ),
                    };
                }
                response(StatusCode::NOT_FOUND, "text/plain", full("not found"))
            }
        });
        fake
    }

    /// Token requests wait until [`FakeMetadata::release`].
    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// Waits until at least `n` token requests have arrived.
    pub async fn wait_for_token_requests(&self, n: usize) {
        until(
            "token requests at the fake metadata server",
            &self.token_fetched,
            || (self.token_requests() >= n).then_some(()),
        )
        .await
    }

    /// Waits until at least `n` ID tokens have been asked for, and returns their audiences.
    pub async fn wait_for_identity_requests(&self, n: usize) -> Vec<String> {
        until(
            "ID-token requests at the fake metadata server",
            &self.token_fetched,
            || {
                let asked = self.identity_requests.lock().unwrap().clone();
                (asked.len() >= n).then_some(asked)
            },
        )
        .await
    }

    pub fn set_project(&self, project: &str) {
        *self.project.lock().unwrap() = project.to_owned();
    }

    pub fn set_mode(&self, mode: MetadataMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn token_requests(&self) -> usize {
        self.token_requests.load(Ordering::SeqCst)
    }
}

/// `name`'s value in a URL query, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name && !value.is_empty()).then(|| percent_decode(value))
    })
}

/// A URL query's or a form's value, decoded (`+` is a space in both).
pub fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Serves HTTP/1.1 on `listener` with `handler` until the test ends.
pub(super) fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody<Bytes, Infallible>>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |r| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(r).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
