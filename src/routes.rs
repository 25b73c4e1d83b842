//! Requests to responses. Every endpoint answers with and without the `/v1` prefix:
//!
//! | method   | path                   | key | does                                              |
//! |----------|------------------------|-----|---------------------------------------------------|
//! | GET/HEAD | `/`                    | no  | a splash page                                     |
//! | GET/HEAD | `/docs`                | no  | this deployment's runbook (HTML or plain text)    |
//! | GET/HEAD | `/healthz`, `/health`  | no  | liveness and the alias names; never waits on I/O  |
//! | GET/HEAD | `/v1/models`           | yes | the models this key may use                       |
//! | GET/HEAD | `/v1/models/{model}`   | yes | one of them, or 404                               |
//! | POST     | `/v1/chat/completions` | yes | forwarded to Vertex `…/openapi/chat/completions`  |
//! | POST     | `/v1/embeddings`       | yes | forwarded to Vertex `…/openapi/embeddings`        |
//!
//! Anything else is 404, or 405 on a known path with the wrong method.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

use crate::body::{self, Pieces, ProxyBody};
use crate::config::Config;
use crate::error::{ProxyError, json_response};
use crate::keys::{KeyEntry, LiveKeys};
use crate::log::{LogGuard, LoggedBody, RequestLog};
use crate::models::{self, Target};
use crate::pages;
use crate::token::TokenSource;
use crate::upstream::{self, Endpoints, HttpClient, Operation};

/// Everything a request needs, shared by the connections of one worker thread (each worker
/// has its own upstream `client`).
#[derive(Clone)]
pub struct State {
    pub config: Config,
    /// The key set in force, swapped when `API_KEYS_FILE` changes.
    pub keys: Arc<LiveKeys>,
    pub endpoints: Endpoints,
    pub client: HttpClient,
    pub tokens: TokenSource,
    /// Reported as `created` in model objects.
    pub started_at: u64,
}

impl State {
    pub fn new(
        config: Config,
        endpoints: Endpoints,
        tokens: TokenSource,
        client: HttpClient,
    ) -> State {
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        State {
            keys: Arc::new(LiveKeys::new(config.keys.clone())),
            config,
            endpoints,
            client,
            tokens,
            started_at,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// No key needed, nothing upstream.
    Public(Public),
    /// Authenticated first.
    Keyed(Keyed<'a>),
}

#[derive(Debug, PartialEq, Eq)]
enum Public {
    Splash,
    Docs,
    Health,
}

#[derive(Debug, PartialEq, Eq)]
enum Keyed<'a> {
    Models,
    Model(&'a str),
    Forward(Operation),
}

const GET: &str = "GET, HEAD";
const POST: &str = "POST";

fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, ProxyError> {
    let bare = match path.strip_prefix("/v1") {
        // `/v1/` alone is not the splash page.
        Some(rest) if rest.starts_with('/') && rest.len() > 1 => rest,
        _ => path,
    };
    let (route, allow) = match bare {
        "/" => (Route::Public(Public::Splash), GET),
        "/docs" => (Route::Public(Public::Docs), GET),
        "/healthz" | "/health" => (Route::Public(Public::Health), GET),
        "/models" => (Route::Keyed(Keyed::Models), GET),
        "/chat/completions" => (
            Route::Keyed(Keyed::Forward(Operation::ChatCompletions)),
            POST,
        ),
        "/embeddings" => (Route::Keyed(Keyed::Forward(Operation::Embeddings)), POST),
        _ => match bare.strip_prefix("/models/") {
            Some(model) if !model.is_empty() => (Route::Keyed(Keyed::Model(model)), GET),
            _ => {
                return Err(ProxyError::NotFound(format!(
                    "no such endpoint: {path}; see /v1/chat/completions, /v1/embeddings, /v1/models"
                )));
            }
        },
    };
    let allowed = match allow {
        POST => method == Method::POST,
        _ => method == Method::GET || method == Method::HEAD,
    };
    if allowed {
        Ok(route)
    } else {
        Err(ProxyError::MethodNotAllowed { allow })
    }
}

/// Handles one request. Never fails: errors become responses here, and the request is
/// logged once, when the response body ends or is dropped.
pub async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<ProxyBody> {
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let mut guard = LogGuard::new(RequestLog::new(
        request.method(),
        request.uri().path(),
        user_agent,
        request.version(),
    ));
    guard
        .get()
        .set_trace(request.headers(), state.endpoints.project());
    let response = match dispatch(&state, request, &mut guard).await {
        Ok(response) => response,
        Err(error) => {
            let log = guard.get();
            log.error = Some(error.log_text());
            error.into_response()
        }
    };
    guard.get().status = Some(response.status().as_u16());
    response.map(|body| LoggedBody::new(body, guard).boxed())
}

async fn dispatch(
    state: &State,
    request: Request<Incoming>,
    guard: &mut LogGuard,
) -> Result<Response<ProxyBody>, ProxyError> {
    let config = &state.config;
    let keyed = match route(request.method(), request.uri().path())? {
        Route::Public(Public::Health) => return Ok(health(config)),
        Route::Public(Public::Splash) => return Ok(pages::splash(config, request.headers())),
        Route::Public(Public::Docs) => {
            let authority = request.uri().authority().map(|a| a.as_str());
            return Ok(pages::docs(config, request.headers(), authority));
        }
        Route::Keyed(keyed) => keyed,
    };
    // No upstream I/O of any kind happens before this line succeeds.
    let keys = state.keys.current();
    let key = keys.authenticate(request.headers())?;
    guard.get().key_id = Some(key.id.clone());
    match keyed {
        Keyed::Models => Ok(json_response(StatusCode::OK, &models_list(state, key))),
        Keyed::Model(name) => model_object(state, key, name)
            .map(|model| json_response(StatusCode::OK, &model))
            .ok_or_else(|| ProxyError::NotFound(format!("model {name:?} not found"))),
        Keyed::Forward(operation) => forward(state, key, operation, request, guard).await,
    }
}

fn health(config: &Config) -> Response<ProxyBody> {
    let models: Vec<&str> = config.aliases.names().collect();
    json_response(
        StatusCode::OK,
        &json!({"ok": true, "mode": config.mode.as_str(), "models": models}),
    )
}

fn model_json(state: &State, id: &str, target: &Target) -> serde_json::Value {
    let owned_by = target.model.split('/').next().unwrap_or("google");
    json!({
        "id": id,
        "object": "model",
        "created": state.started_at,
        "owned_by": owned_by,
        "vertex_id": target.model,
        "location": state.config.location_of(target),
    })
}

fn models_list(state: &State, key: &KeyEntry) -> serde_json::Value {
    let data: Vec<_> = state
        .config
        .aliases
        .iter()
        .filter(|(alias, _)| key.may_use(alias))
        .map(|(alias, target)| model_json(state, alias, target))
        .collect();
    json!({"object": "list", "data": data})
}

fn model_object(state: &State, key: &KeyEntry, name: &str) -> Option<serde_json::Value> {
    if !key.may_use(name) {
        return None;
    }
    let target = resolve(&state.config, name)?;
    Some(model_json(state, name, &target))
}

/// An alias, or a raw `publisher/model` id when `ALLOW_RAW_MODEL_IDS` is on.
fn resolve(config: &Config, name: &str) -> Option<Target> {
    if let Some(target) = config.aliases.get(name) {
        return Some(target.clone());
    }
    (config.allow_raw_model_ids && models::is_raw_model_id(name)).then(|| Target {
        model: name.to_owned(),
        location: None,
    })
}

async fn forward(
    state: &State,
    key: &KeyEntry,
    operation: Operation,
    request: Request<Incoming>,
    guard: &mut LogGuard,
) -> Result<Response<ProxyBody>, ProxyError> {
    let config = &state.config;
    let limit = config.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ProxyError::PayloadTooLarge { limit });
    }
    let (parts, body) = request.into_parts();
    // Read into memory only with a bound: the model must be found before anything is sent.
    let timeout = config.body_read_timeout;
    let body = tokio::time::timeout(timeout, read_body(body, limit, declared))
        .await
        .map_err(|_| {
            ProxyError::RequestTimeout(format!(
                "the request body did not arrive within {}s (BODY_READ_TIMEOUT_SECS)",
                timeout.as_secs()
            ))
        })??;

    let field = models::find_model(&body)?;
    let target = resolve(config, &field.name).ok_or_else(|| {
        let usable: Vec<&str> = config.aliases.names().filter(|a| key.may_use(a)).collect();
        ProxyError::bad_request(
            "model_not_found",
            format!(
                "unknown model {:?}; this key may use: {}",
                shorten(&field.name),
                usable.join(", ")
            ),
        )
    })?;
    if !key.may_use(&field.name) {
        return Err(ProxyError::Forbidden(format!(
            "this API key may not use model {:?}",
            shorten(&field.name)
        )));
    }
    let location = config.location_of(&target).to_owned();
    let log = guard.get();
    log.alias = Some(field.name.clone());
    log.model = Some(target.model.clone());
    log.location = Some(location.clone());
    log.price = config
        .prices
        .get(&field.name)
        .or_else(|| config.prices.get(&target.model))
        .copied();

    let upstream_body = Pieces::new(models::splice_model(&body, &field.span, &target.model));
    let credential = state.tokens.headers(config.token_timeout).await?;
    let uri = state.endpoints.uri(&location, operation)?;
    let mut upstream_request = Request::new(upstream_body);
    *upstream_request.method_mut() = Method::POST;
    *upstream_request.uri_mut() = uri;
    let mut headers = upstream::request_headers(&parts.headers, credential);
    // The body was checked to be a JSON object; say so whatever the client sent (curl -d
    // sends a form type).
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    *upstream_request.headers_mut() = headers;

    let idle = config.upstream_idle_timeout;
    let response = tokio::time::timeout(
        idle,
        upstream::send(&state.client, upstream_request, config.connect_timeout),
    )
    .await
    .map_err(|_| {
        ProxyError::GatewayTimeout(format!(
            "Vertex did not answer within {}s (UPSTREAM_IDLE_TIMEOUT_SECS)",
            idle.as_secs()
        ))
    })??;
    guard.get().upstream_answered(
        response.status().as_u16(),
        response.headers().contains_key(header::CONTENT_ENCODING),
    );
    let (parts, incoming) = response.into_parts();
    let mut response = Response::new(body::stream(incoming, idle));
    *response.status_mut() = parts.status;
    *response.headers_mut() = upstream::response_headers(&parts.headers);
    Ok(response)
}

/// A client's model name as quoted back in an error: bounded, since it can be any size.
fn shorten(name: &str) -> String {
    match name.char_indices().nth(100) {
        Some((at, _)) => format!("{}…", &name[..at]),
        None => name.to_owned(),
    }
}

/// Reads the whole body into one buffer, sized from `Content-Length` when there is one, and
/// never past `limit`: the model must be found before anything goes upstream.
async fn read_body(
    mut body: Incoming,
    limit: usize,
    declared: Option<u64>,
) -> Result<Bytes, ProxyError> {
    let capacity = declared.map_or(0, |len| len.min(limit as u64) as usize);
    let mut buffer = BytesMut::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            ProxyError::bad_request("invalid_body", "the request body could not be read")
        })?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(ProxyError::PayloadTooLarge { limit });
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_model_names_are_bounded() {
        assert_eq!(shorten("flash"), "flash");
        let long = "é".repeat(500);
        assert_eq!(shorten(&long).chars().count(), 101);
    }

    #[test]
    fn routes_with_and_without_v1() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(route(&get, "/healthz"), Ok(Route::Public(Public::Health)));
        assert_eq!(route(&get, "/docs"), Ok(Route::Public(Public::Docs)));
        assert_eq!(route(&get, "/"), Ok(Route::Public(Public::Splash)));
        assert_eq!(route(&get, "/v1/models"), Ok(Route::Keyed(Keyed::Models)));
        assert_eq!(route(&get, "/models"), Ok(Route::Keyed(Keyed::Models)));
        assert_eq!(
            route(&get, "/v1/models/flash"),
            Ok(Route::Keyed(Keyed::Model("flash")))
        );
        assert_eq!(
            route(&get, "/v1/models/meta/llama"),
            Ok(Route::Keyed(Keyed::Model("meta/llama")))
        );
        assert_eq!(
            route(&post, "/v1/chat/completions"),
            Ok(Route::Keyed(Keyed::Forward(Operation::ChatCompletions)))
        );
        assert_eq!(
            route(&post, "/embeddings"),
            Ok(Route::Keyed(Keyed::Forward(Operation::Embeddings)))
        );
    }

    #[test]
    fn wrong_methods_and_unknown_paths() {
        assert_eq!(
            route(&Method::GET, "/v1/chat/completions"),
            Err(ProxyError::MethodNotAllowed { allow: POST })
        );
        assert_eq!(
            route(&Method::DELETE, "/v1/models"),
            Err(ProxyError::MethodNotAllowed { allow: GET })
        );
        for path in [
            "/index.html",
            "/v1",
            "/v1/",
            "/v1x/models",
            "//v1/chat/completions",
            "/v1/models/",
            "/v1/v1/models",
        ] {
            assert_eq!(
                route(&Method::GET, path).unwrap_err().status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }
}
