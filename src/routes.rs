//! The path table: each request to its handler. Every endpoint answers with and without the
//! `/v1` prefix:
//!
//! | method   | path                   | key | does                                              |
//! |----------|------------------------|-----|---------------------------------------------------|
//! | GET/HEAD | `/`                    | no  | a splash page                                     |
//! | GET/HEAD | `/docs`                | no  | this deployment's runbook (HTML or plain text)    |
//! | GET/HEAD | `/health`, `/healthz`  | no  | liveness and the alias names; never waits on I/O  |
//! | GET/HEAD | `/v1/models`           | yes | the models this key may use                       |
//! | GET/HEAD | `/v1/models/{model}`   | yes | one of them, or 404                               |
//! | POST     | `/v1/chat/completions` | yes | forwarded to Vertex `…/openapi/chat/completions`  |
//! | POST     | `/v1/embeddings`       | yes | forwarded to Vertex `…/openapi/embeddings`        |
//! | POST     | `/v1/messages`         | yes | Claude: Vertex `…/anthropic/models/M:rawPredict`  |
//! | POST     | `/v1/messages/count_tokens` | yes | Claude: `…/models/count-tokens:rawPredict`   |
//!
//! Anything else is 404, or 405 on a known path with the wrong method.
//!
//! A forwarded request is read, resolved and handed to its kind: the steps are in the
//! crate's documentation.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;

use crate::api::{self, Operation};
use crate::body::{self, ProxyBody};
use crate::error::{ProxyError, json_response};
use crate::keys::KeyEntry;
use crate::kinds::Call;
use crate::log::{self, LogGuard, RequestLog};
use crate::pages;
use crate::state::State;

#[derive(Debug, PartialEq, Eq)]
enum Endpoint<'a> {
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

fn endpoint<'a>(method: &Method, path: &'a str) -> Result<Endpoint<'a>, ProxyError> {
    let bare = match path.strip_prefix("/v1") {
        // `/v1/` alone is not the splash page.
        Some(rest) if rest.starts_with('/') && rest.len() > 1 => rest,
        _ => path,
    };
    let (endpoint, allow) = match bare {
        "/" => (Endpoint::Public(Public::Splash), GET),
        "/docs" => (Endpoint::Public(Public::Docs), GET),
        "/healthz" | "/health" => (Endpoint::Public(Public::Health), GET),
        "/models" => (Endpoint::Keyed(Keyed::Models), GET),
        "/chat/completions" => (
            Endpoint::Keyed(Keyed::Forward(Operation::ChatCompletions)),
            POST,
        ),
        "/embeddings" => (Endpoint::Keyed(Keyed::Forward(Operation::Embeddings)), POST),
        "/messages" => (Endpoint::Keyed(Keyed::Forward(Operation::Messages)), POST),
        "/messages/count_tokens" => (
            Endpoint::Keyed(Keyed::Forward(Operation::CountTokens)),
            POST,
        ),
        _ => match bare.strip_prefix("/models/") {
            Some(model) if !model.is_empty() => (Endpoint::Keyed(Keyed::Model(model)), GET),
            _ => {
                return Err(ProxyError::NotFound(format!(
                    "no such endpoint: {path}; see /v1/chat/completions, /v1/embeddings, /v1/messages, /v1/models"
                )));
            }
        },
    };
    let allowed = match allow {
        POST => method == Method::POST,
        _ => method == Method::GET || method == Method::HEAD,
    };
    if allowed {
        Ok(endpoint)
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
    let log = guard.get();
    log.set_trace(request.headers(), state.kinds.project());
    // Claude's clients read Anthropic's error shape: the route sets it, before any other
    // error can happen.
    let mut dialect = api::openai::DIALECT;
    let response = match dispatch(&state, request, log, &mut dialect).await {
        Ok(response) => response,
        Err(error) => {
            log.failed(error.log_text());
            error.into_response(dialect)
        }
    };
    log.responded(response.status().as_u16());
    // 7. Log, when the client has the whole response or has left.
    response.map(|body| log::logged(body, guard))
}

async fn dispatch(
    state: &State,
    request: Request<Incoming>,
    log: &mut RequestLog,
    dialect: &mut crate::error::Dialect,
) -> Result<Response<ProxyBody>, ProxyError> {
    let config = &state.config;
    let keyed = match endpoint(request.method(), request.uri().path())? {
        Endpoint::Public(Public::Health) => return Ok(health(state)),
        Endpoint::Public(Public::Splash) => return Ok(pages::splash(config, request.headers())),
        Endpoint::Public(Public::Docs) => {
            let authority = request.uri().authority().map(|a| a.as_str());
            return Ok(pages::docs(config, request.headers(), authority));
        }
        Endpoint::Keyed(keyed) => keyed,
    };
    if let Keyed::Forward(operation) = keyed {
        *dialect = operation.dialect();
    }
    // 1. Authenticate. No upstream I/O of any kind happens before this succeeds.
    let keys = state.keys.current();
    let key = keys.authenticate(request.headers())?;
    log.authenticated(&key.id);
    match keyed {
        Keyed::Models => Ok(json_response(StatusCode::OK, &models_list(state, key))),
        Keyed::Model(name) => model_object(state, key, name)
            .map(|model| json_response(StatusCode::OK, &model))
            .ok_or_else(|| ProxyError::NotFound(format!("model {name:?} not found"))),
        Keyed::Forward(operation) => forward(state, key, operation, request, log, *dialect).await,
    }
}

/// Steps 2 to 6 of a request that goes upstream: read, resolve, hand to the route's kind.
async fn forward(
    state: &State,
    key: &KeyEntry,
    operation: Operation,
    request: Request<Incoming>,
    log: &mut RequestLog,
    dialect: crate::error::Dialect,
) -> Result<Response<ProxyBody>, ProxyError> {
    let config = &state.config;
    let (parts, body) = request.into_parts();
    // 2. Read the body, bounded: the model must be found before anything is sent. Its bytes
    // count against the process's budget, and the key's share of it, as they arrive and
    // until the answer's head has come (a retry would send them again).
    let limits = body::BodyLimits {
        max_bytes: config.max_body_bytes,
        timeout: config.timeouts.body_read,
        min_rate: config.min_body_bytes_per_sec,
    };
    let held = state.budget.hold(&key.id);
    let (body, held) = body::read_bounded(&parts.headers, body, limits, held).await?;
    // 3. Resolve the route of the model the request names.
    let model = operation.model(&body)?;
    let route = config.aliases.route_for(&model.name, |m| key.may_use(m))?;
    let call = Call {
        operation,
        route: &route,
        model: &model,
        body: &body,
        headers: &parts.headers,
        key_id: &key.id,
        price: config.price_of(&model.name, &route.model),
    };
    // 4 to 6. Prepare, send and relay, by the route's kind.
    let forwarded = state.kinds.forward(&state.upstream, call, held, log).await;
    forwarded.or_else(|error| {
        // SECURITY: the log keeps the whole text; the client's copy loses the project id
        // and a private service's host, which are the deployment's business.
        log.failed(error.log_text());
        let service = (route.upstream.as_ref()).and_then(|service| service.origin.authority());
        let shown = error.for_client(state.kinds.project(), service.map(|a| a.as_str()));
        Ok(shown.into_response(dialect))
    })
}

fn health(state: &State) -> Response<ProxyBody> {
    let config = &state.config;
    let models: Vec<&str> = config.aliases.names().collect();
    // Still 200 when the token fails: the process is alive, and restarting it is not the cure.
    let token = if state.upstream.token_failing() {
        "failing"
    } else {
        "ok"
    };
    json_response(
        StatusCode::OK,
        &json!({"ok": true, "mode": config.mode.as_str(), "models": models, "token": token}),
    )
}

fn models_list(state: &State, key: &KeyEntry) -> serde_json::Value {
    let data: Vec<_> = state
        .config
        .aliases
        .iter()
        .filter(|(alias, _)| key.may_use(alias))
        .map(|(alias, route)| route.model_object(alias, state.started_at))
        .collect();
    json!({"object": "list", "data": data})
}

fn model_object(state: &State, key: &KeyEntry, name: &str) -> Option<serde_json::Value> {
    if !key.may_use(name) {
        return None;
    }
    let route = state.config.aliases.resolve(name)?;
    Some(route.model_object(name, state.started_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_with_and_without_v1() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            endpoint(&get, "/healthz"),
            Ok(Endpoint::Public(Public::Health))
        );
        assert_eq!(endpoint(&get, "/docs"), Ok(Endpoint::Public(Public::Docs)));
        assert_eq!(endpoint(&get, "/"), Ok(Endpoint::Public(Public::Splash)));
        assert_eq!(
            endpoint(&get, "/v1/models"),
            Ok(Endpoint::Keyed(Keyed::Models))
        );
        assert_eq!(
            endpoint(&get, "/models"),
            Ok(Endpoint::Keyed(Keyed::Models))
        );
        assert_eq!(
            endpoint(&get, "/v1/models/flash"),
            Ok(Endpoint::Keyed(Keyed::Model("flash")))
        );
        assert_eq!(
            endpoint(&get, "/v1/models/meta/llama"),
            Ok(Endpoint::Keyed(Keyed::Model("meta/llama")))
        );
        assert_eq!(
            endpoint(&post, "/v1/chat/completions"),
            Ok(Endpoint::Keyed(Keyed::Forward(Operation::ChatCompletions)))
        );
        assert_eq!(
            endpoint(&post, "/embeddings"),
            Ok(Endpoint::Keyed(Keyed::Forward(Operation::Embeddings)))
        );
        assert_eq!(
            endpoint(&post, "/v1/messages"),
            Ok(Endpoint::Keyed(Keyed::Forward(Operation::Messages)))
        );
        assert_eq!(
            endpoint(&post, "/messages/count_tokens"),
            Ok(Endpoint::Keyed(Keyed::Forward(Operation::CountTokens)))
        );
    }

    #[test]
    fn wrong_methods_and_unknown_paths() {
        assert_eq!(
            endpoint(&Method::GET, "/v1/chat/completions"),
            Err(ProxyError::MethodNotAllowed { allow: POST })
        );
        assert_eq!(
            endpoint(&Method::DELETE, "/v1/models"),
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
                endpoint(&Method::GET, path).unwrap_err().status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }
}
