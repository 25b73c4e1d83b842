//! Private Cloud Run services and the ID tokens that open them: the front end's check of the
//! token (its `aud`, its expiry, the header it came in), and Google's OAuth token endpoint,
//! which exchanges a service account's signed assertion for an ID token, reached as
//! google-cloud-auth reaches it, through `HTTPS_PROXY`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::fake_vertex::{Reply, full, response};
use super::metadata::percent_decode;
use super::*;

pub const SERVICE_ACCOUNT_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/tls/service-account.json"
);
pub const SERVICE_ACCOUNT_EMAIL: &str = "vertex-proxy@test-proj.iam.gserviceaccount.com";
pub const GOOGLE_CA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/google-ca.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An ID token for `audience`, shaped as Google's (a JWT with `aud`, `exp`, `iss`), with a
/// signature no one checks, valid for an hour; `issued_by` says which fake made it.
pub fn id_token(audience: &str, issued_by: &str) -> String {
    id_token_for(audience, issued_by, 3600)
}

/// How many ID tokens the fakes have issued: each has its number in `jti`.
static ISSUED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`id_token`], valid for `lifetime` seconds.
pub fn id_token_for(audience: &str, issued_by: &str, lifetime: u64) -> String {
    let serial = ISSUED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"fake","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "aud": audience,
        "azp": SERVICE_ACCOUNT_EMAIL,
        "email": SERVICE_ACCOUNT_EMAIL,
        "exp": now() + lifetime,
        "jti": serial,
        "iat": now(),
        "iss": "https://accounts.google.com",
        "sub": "123456789",
        "fake_issuer": issued_by,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{claims}.c2lnbmF0dXJl")
}

/// The claims of a JWT, unchecked.
pub fn claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// What Cloud Run's front end lets through to a private service: a request with `Bearer` and
/// an unexpired Google ID token for `audience` in `X-Serverless-Authorization`, which it reads
/// first, or else in `Authorization` (REFERENCE.md). Anything else gets its 401, an HTML page
/// with no JSON in it, and never reaches the service.
pub fn cloud_run(
    audience: &str,
    service: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let audience = audience.to_owned();
    move |r: &Recorded| {
        let token = (r.headers.get("x-serverless-authorization"))
            .or_else(|| r.headers.get(http::header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let valid = token.and_then(claims).is_some_and(|claims| {
            claims["aud"] == audience.as_str()
                && claims["iss"] == "https://accounts.google.com"
                && claims["exp"].as_u64().is_some_and(|exp| exp > now())
        });
        if valid {
            service(r)
        } else {
            Reply::Respond(response(
                StatusCode::UNAUTHORIZED,
                "text/html; charset=UTF-8",
                full(
                    "<html><head><title>401 Unauthorized</title></head><body><h1>Error: Unauthorized</h1><h2>Your client does not have permission to the requested URL.</h2></body></html>",
                ),
            ))
        }
    }
}

/// A service that checks a key of its own (vLLM's `--api-key`) in `Authorization`, which
/// Cloud Run hands it untouched when the ID token came in `X-Serverless-Authorization`; any
/// other request gets vLLM's 401, `{"error": "Unauthorized"}`.
pub fn with_api_key(
    key: &'static str,
    service: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r: &Recorded| {
        let expected = format!("Bearer {key}");
        match r.headers.get(http::header::AUTHORIZATION) {
            Some(sent) if sent == expected.as_str() => service(r),
            _ => Reply::Json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"Unauthorized"}"#.into(),
            ),
        }
    }
}

/// A vLLM-like service: chat completions and embeddings on `/v1`, answering in OpenAI's
/// shapes and refusing, in vLLM's error shape, a model it does not serve.
pub fn vllm(model: &'static str) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r: &Recorded| {
        let body = r.json();
        if body["model"] != model {
            let message = format!("The model `{}` does not exist.", body["model"]);
            let error = serde_json::json!({"error": {"message": message, "type": "NotFoundError", "param": null, "code": 404}});
            return Reply::Json(StatusCode::NOT_FOUND, error.to_string());
        }
        match r.path.as_str() {
            "/v1/chat/completions" => Reply::Json(StatusCode::OK, completion(model)),
            "/v1/embeddings" => Reply::Json(
                StatusCode::OK,
                serde_json::json!({"object": "list", "model": model, "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}], "usage": {"prompt_tokens": 2, "total_tokens": 2}}).to_string(),
            ),
            _ => Reply::Json(
                StatusCode::NOT_FOUND,
                r#"{"detail":"Not Found"}"#.into(),
            ),
        }
    }
}

/// An exchange the fake token endpoint answered: the assertion's claims.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub claims: serde_json::Value,
}

/// Google's OAuth token endpoint, `https://oauth2.googleapis.com/token`, behind a CONNECT
/// proxy on loopback (give the proxy `HTTPS_PROXY` and `SSL_CERT_FILE`, [`FakeOAuth::env`]).
/// It answers a service account's JWT-bearer assertion with an ID token for its
/// `target_audience`, after checking the assertion's signature with the account's public key.
pub struct FakeOAuth {
    pub addr: std::net::SocketAddr,
    pub exchanges: Arc<Mutex<Vec<Exchange>>>,
    exchanged: Arc<Notify>,
}

impl FakeOAuth {
    pub async fn start() -> FakeOAuth {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeOAuth {
            addr: listener.local_addr().unwrap(),
            exchanges: Arc::default(),
            exchanged: Arc::default(),
        };
        let tls = tls_acceptor("oauth2");
        let (exchanges, exchanged) = (fake.exchanges.clone(), fake.exchanged.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (tls, exchanges, exchanged) =
                    (tls.clone(), exchanges.clone(), exchanged.clone());
                tokio::spawn(async move {
                    // CONNECT oauth2.googleapis.com:443 HTTP/1.1, then the tunnel.
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if tcp.read_exact(&mut byte).await.is_err() || head.len() > 8192 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    if !head.starts_with(b"CONNECT oauth2.googleapis.com:443 ") {
                        let _ = tcp.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
                        return;
                    }
                    if tcp
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (exchanges, exchanged) = (exchanges.clone(), exchanged.clone());
                        async move {
                            let reply = token_endpoint(request, &exchanges).await;
                            exchanged.notify_waiters();
                            Ok::<_, std::convert::Infallible>(reply)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }

    /// The environment that sends google-cloud-auth here, with the service-account file.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("HTTPS_PROXY".into(), format!("http://{}", self.addr)),
            ("SSL_CERT_FILE".into(), GOOGLE_CA_FILE.into()),
            (
                "GOOGLE_APPLICATION_CREDENTIALS".into(),
                SERVICE_ACCOUNT_FILE.into(),
            ),
        ]
    }

    /// Waits until at least `n` exchanges have been answered.
    pub async fn wait_for_exchanges(&self, n: usize) -> Vec<Exchange> {
        until(
            "ID-token exchanges at the fake token endpoint",
            &self.exchanged,
            || {
                let seen = self.exchanges.lock().unwrap().clone();
                (seen.len() >= n).then_some(seen)
            },
        )
        .await
    }
}

/// `POST /token` with `grant_type` = JWT bearer and a signed `assertion`, as Google checks it.
async fn token_endpoint(
    request: Request<Incoming>,
    exchanges: &Mutex<Vec<Exchange>>,
) -> http::Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>> {
    let refuse = |why: &str| {
        let body = serde_json::json!({"error": "invalid_grant", "error_description": why});
        response(
            StatusCode::BAD_REQUEST,
            "application/json",
            full(body.to_string()),
        )
    };
    if request.method() != http::Method::POST || request.uri().path() != "/token" {
        return refuse("not POST /token");
    }
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let form: HashMap<String, String> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return refuse("unsupported grant_type");
    }
    let Some(assertion) = form.get("assertion") else {
        return refuse("no assertion");
    };
    let Some((signed, signature)) = assertion.rsplit_once('.') else {
        return refuse("the assertion is not a JWT");
    };
    let public_key = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tls/service-account.pub.der"
    ))
    .unwrap();
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    );
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
    if key.verify(signed.as_bytes(), &signature).is_err() {
        return refuse("Invalid JWT Signature.");
    }
    let Some(claims) = super::cloud_run::claims(assertion) else {
        return refuse("the assertion's claims are not JSON");
    };
    let good = claims["iss"] == SERVICE_ACCOUNT_EMAIL
        && claims["aud"] == "https://oauth2.googleapis.com/token"
        && claims["exp"].as_u64().is_some_and(|exp| exp > now());
    let Some(target) = claims["target_audience"].as_str().filter(|_| good) else {
        return refuse("Invalid JWT: iss, aud, exp or target_audience");
    };
    let token = id_token(target, "oauth2");
    exchanges.lock().unwrap().push(Exchange {
        claims: claims.clone(),
    });
    let body = serde_json::json!({ "id_token": token });
    response(StatusCode::OK, "application/json", full(body.to_string()))
}
