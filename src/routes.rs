//! Requests to responses: the pipeline. Every endpoint answers with and without the `/v1`
//! prefix:
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
//! A forwarded request goes through these steps, each in the module that owns it:
//! 1. authenticate the key ([`crate::keys`]);
//! 2. read the body, bounded ([`crate::body`]);
//! 3. resolve the route of its model ([`crate::rewrite`] finds it, [`crate::models`] routes it);
//! 4. prepare the upstream request, by the route's kind ([`crate::upstream`]);
//! 5. send it, to the route's locations in turn, until an answer is worth relaying (retries
//!    stop at the first byte of content);
//! 6. relay the response, by kind;
//! 7. log it, when the response ends ([`crate::body::logged`], [`crate::log`]).

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;

use crate::body::{self, ProxyBody};
use crate::error::{Dialect, ProxyError, json_response};
use crate::keys::KeyEntry;
use crate::log::{self, LogGuard, RequestLog};
use crate::models::Kind;
use crate::state::State;
use crate::upstream::{Operation, Queued};
use crate::{pages, rewrite};

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
    log.set_trace(request.headers(), state.upstream.project());
    // Claude's clients read Anthropic's error shape: the route sets it, before any other
    // error can happen.
    let mut dialect = Dialect::OpenAi;
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
    dialect: &mut Dialect,
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
        Keyed::Forward(operation) => forward(state, key, operation, request, log).await,
    }
}

/// Steps 2 to 6 of a request that goes upstream.
async fn forward(
    state: &State,
    key: &KeyEntry,
    operation: Operation,
    request: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (config, upstream) = (&state.config, &state.upstream);
    let (parts, body) = request.into_parts();
    // 2. Read the body, bounded: the model must be found before anything is sent. Its bytes
    // count against the process's budget until the answer's head has come (a retry would
    // send them again).
    let (limit, timeout) = (config.max_body_bytes, config.timeouts.body_read);
    let (body, held) =
        body::read_bounded(&parts.headers, body, limit, timeout, &state.budget).await?;
    // 3. Resolve the route.
    let model = rewrite::find_model(&body)?;
    let route = config.aliases.route_for(&model.name, |m| key.may_use(m))?;
    if !operation.serves(route.kind) {
        return Err(wrong_endpoint(&model.name, route.kind, operation));
    }
    let price = config.price_of(&model.name, &route.model);
    log.routed(&model.name, &route.model, route.location(), price);
    // Google's embedding models take another API: steps 4 to 6 are one translation.
    if route.kind == Kind::VertexEmbeddings {
        let response = upstream
            .embed(&route, &model.name, &parts.headers, &body)
            .await;
        if let Err(ProxyError::Upstream(e)) = &response {
            log.upstream_failed(e.status);
        }
        let response = response?;
        drop(held);
        log.upstream_answered(200, false, false);
        return Ok(response);
    }
    // 4. Prepare the upstream request, by kind.
    let request = upstream
        .prepare(&route, operation, &parts.headers, (&body, &model), &key.id)
        .await?;
    log.signatures(request.signatures);
    // 5. Send it, and again while it fails before the client has a byte.
    let mut answer = upstream.send(&route, request, log.attempts()).await;
    if let Err(ProxyError::Upstream(e)) = &mut answer {
        log.upstream_failed(e.status);
        // Vertex counts Claude's tokens in some locations only, and says just "not found".
        if operation == Operation::CountTokens && e.status == 404 {
            e.message = format!(
                "Vertex does not serve token counting for this model in {} (count-tokens:rawPredict answered 404: {})",
                route.location(),
                e.message
            );
            e.anthropic = None;
        }
    }
    let answer = answer?;
    drop(held);
    let response = &answer.response;
    log.upstream_answered(
        response.status().as_u16(),
        response.headers().contains_key(header::CONTENT_ENCODING),
        response.extensions().get::<Queued>().is_some(),
    );
    // 6. Relay the response, by kind.
    Ok(upstream.relay(&route, answer, &key.id))
}

/// A model sent to an endpoint that cannot serve it: a Claude model to an OpenAI endpoint,
/// another to the Messages API, an embedding model to chat.
fn wrong_endpoint(model: &str, kind: Kind, asked: Operation) -> ProxyError {
    let (what, right) = match kind {
        Kind::VertexAnthropic => ("a Claude model", Operation::Messages.endpoint()),
        Kind::VertexEmbeddings => ("an embedding model", Operation::Embeddings.endpoint()),
        Kind::VertexOpenAi | Kind::Service => {
            ("not a Claude model", Operation::ChatCompletions.endpoint())
        }
    };
    let model: String = model.chars().take(100).collect();
    ProxyError::bad_request(
        "wrong_endpoint",
        format!(
            "model {model:?} is {what}: send it to {right}, not {}",
            asked.endpoint()
        ),
    )
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
