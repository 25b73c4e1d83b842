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
//! | POST     | `/v1/responses`        | yes | translated to chat completions, and back          |
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

use crate::api::{self, Operation, Translated, gemini};
use crate::body::{self, ProxyBody};
use crate::error::{ProxyError, json_response};
use crate::keys::KeyEntry;
use crate::kinds::Call;
use crate::log::{self, LogGuard, RequestLog};
use crate::models::Route;
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
    /// The key's models, in OpenAI's shape or, for Gemini's clients, Gemini's.
    Models {
        gemini: bool,
    },
    Model {
        name: &'a str,
        gemini: bool,
    },
    /// Upstream; Gemini's API names the model in the path.
    Forward(Operation, Option<&'a str>),
}

const GET: &str = "GET, HEAD";
const POST: &str = "POST";

fn endpoint<'a>(method: &Method, path: &'a str) -> Result<Endpoint<'a>, ProxyError> {
    if let Some((model, call)) = gemini::parse_path(path) {
        let forward = Keyed::Forward(Operation::Gemini(call), Some(model));
        return allowed(method, Endpoint::Keyed(forward), POST);
    }
    // One of Gemini's model paths with a method the proxy does not serve: not a model to GET.
    if let Some((_, name)) = gemini::split_path(path) {
        return Err(ProxyError::NotFound(format!(
            "no such method: {:?}; Gemini's API here serves generateContent, streamGenerateContent, countTokens, embedContent and batchEmbedContents",
            name.chars().take(100).collect::<String>()
        )));
    }
    let gemini_models = ["/v1beta/models", "/v1alpha/models"]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix));
    match gemini_models {
        Some("") => return allowed(method, Endpoint::Keyed(Keyed::Models { gemini: true }), GET),
        Some(rest) => {
            if let Some(name) = rest.strip_prefix('/').filter(|n| !n.is_empty()) {
                let model = Keyed::Model { name, gemini: true };
                return allowed(method, Endpoint::Keyed(model), GET);
            }
        }
        None => {}
    }
    let bare = match path.strip_prefix("/v1") {
        // `/v1/` alone is not the splash page.
        Some(rest) if rest.starts_with('/') && rest.len() > 1 => rest,
        _ => path,
    };
    let (endpoint, allow) = match bare {
        "/" => (Endpoint::Public(Public::Splash), GET),
        "/docs" => (Endpoint::Public(Public::Docs), GET),
        "/healthz" | "/health" => (Endpoint::Public(Public::Health), GET),
        "/models" => (Endpoint::Keyed(Keyed::Models { gemini: false }), GET),
        "/chat/completions" => (upstream(Operation::ChatCompletions), POST),
        "/embeddings" => (upstream(Operation::Embeddings), POST),
        "/messages" => (upstream(Operation::Messages), POST),
        "/messages/count_tokens" => (upstream(Operation::CountTokens), POST),
        "/responses" => (upstream(Operation::Responses), POST),
        _ => match bare.strip_prefix("/models/") {
            Some(name) if !name.is_empty() => {
                let model = Keyed::Model {
                    name,
                    gemini: false,
                };
                (Endpoint::Keyed(model), GET)
            }
            _ => {
                return Err(ProxyError::NotFound(format!(
                    "no such endpoint: {path}; see /v1/chat/completions, /v1/responses, /v1/embeddings, /v1/messages, /v1/models, /v1beta/models/MODEL:generateContent"
                )));
            }
        },
    };
    allowed(method, endpoint, allow)
}

fn upstream<'a>(operation: Operation) -> Endpoint<'a> {
    Endpoint::Keyed(Keyed::Forward(operation, None))
}

/// `endpoint`, if `method` is one that `allow` lists.
fn allowed<'a>(
    method: &Method,
    endpoint: Endpoint<'a>,
    allow: &'static str,
) -> Result<Endpoint<'a>, ProxyError> {
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
/// logged once, when the response body ends or is dropped; `held` is dropped with it.
pub async fn handle<H: Send + Sync + Unpin + 'static>(
    state: Arc<State>,
    request: Request<Incoming>,
    held: H,
) -> Response<ProxyBody> {
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
    response.map(|body| log::logged(body, guard, held))
}

async fn dispatch(
    state: &State,
    request: Request<Incoming>,
    log: &mut RequestLog,
    dialect: &mut crate::error::Dialect,
) -> Result<Response<ProxyBody>, ProxyError> {
    let config = &state.config;
    let (request, body) = request.into_parts();
    // The shape of the errors routing itself may give (404, 405) is the path's API's.
    let path = request.uri.path();
    let bare = path.strip_prefix("/v1").unwrap_or(path);
    if bare == "/messages" || bare.starts_with("/messages/") {
        *dialect = api::anthropic::DIALECT;
    } else if gemini::is_gemini_path(&request.method, path) {
        *dialect = gemini::DIALECT;
    }
    let keyed = match endpoint(&request.method, request.uri.path())? {
        Endpoint::Public(Public::Health) => return Ok(health(state)),
        Endpoint::Public(Public::Splash) => return Ok(pages::splash(config, &request.headers)),
        Endpoint::Public(Public::Docs) => {
            let authority = request.uri.authority().map(|a| a.as_str());
            return Ok(pages::docs(config, &request.headers, authority));
        }
        Endpoint::Keyed(keyed) => keyed,
    };
    // Google's clients list models at OpenAI's path too: their headers tell them apart.
    let keyed = match keyed {
        Keyed::Models { .. } if is_gemini_client(&request.headers) => {
            Keyed::Models { gemini: true }
        }
        Keyed::Model { name, .. } if is_gemini_client(&request.headers) => {
            Keyed::Model { name, gemini: true }
        }
        keyed => keyed,
    };
    *dialect = match keyed {
        Keyed::Forward(operation, _) => operation.dialect(),
        Keyed::Models { gemini: true } | Keyed::Model { gemini: true, .. } => api::gemini::DIALECT,
        _ => *dialect,
    };
    // 1. Authenticate. No upstream I/O of any kind happens before this succeeds.
    let keys = state.keys.current();
    // Only Google's clients send a key in the query, and only to Gemini's API: elsewhere it
    // would just put a key in the URLs that Cloud Run's request log keeps.
    let gemini = matches!(
        keyed,
        Keyed::Forward(Operation::Gemini(_), _)
            | Keyed::Models { gemini: true }
            | Keyed::Model { gemini: true, .. }
    );
    let query_key = gemini
        .then(|| api::gemini::query_key(request.uri.query()))
        .flatten();
    let key = keys.authenticate(&request.headers, query_key)?;
    log.authenticated(&key.id);
    match keyed {
        Keyed::Models { gemini } => Ok(json_response(
            StatusCode::OK,
            &models_list(state, key, gemini),
        )),
        Keyed::Model { name, gemini } => model_object(state, key, name, gemini)
            .map(|model| json_response(StatusCode::OK, &model))
            .ok_or_else(|| ProxyError::NotFound(format!("model {name:?} not found"))),
        Keyed::Forward(operation, in_path) => {
            let request = (&request, body);
            forward(state, key, (operation, in_path), request, log, *dialect).await
        }
    }
}

/// Whether the request comes from one of Google's own clients (Gemini CLI, google-genai).
fn is_gemini_client(headers: &http::HeaderMap) -> bool {
    headers.contains_key("x-goog-api-client") || headers.contains_key("x-goog-api-key")
}

/// Steps 2 to 6 of a request that goes upstream: read, resolve, hand to the route's kind.
async fn forward(
    state: &State,
    key: &KeyEntry,
    (operation, in_path): (Operation, Option<&str>),
    (parts, body): (&http::request::Parts, Incoming),
    log: &mut RequestLog,
    dialect: crate::error::Dialect,
) -> Result<Response<ProxyBody>, ProxyError> {
    let config = &state.config;
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
    // An API the upstreams do not speak is translated to one they do, and back.
    log.api(operation.logged_as());
    let asked = operation;
    let Translated {
        operation,
        body,
        translation,
    } = operation.translate(body)?;
    // 3. Resolve the route of the model the request names.
    let aliases = &config.aliases;
    let model = operation.model(&body, in_path, |name| aliases.resolve(name).is_some())?;
    // Gemini's API reaches Google's models only: an unknown model's error lists those.
    let reaches = |route: &Route| match operation {
        Operation::Gemini(_) => gemini::methods(route).is_some(),
        _ => true,
    };
    let route = aliases.route_for(&model.name, |m| key.may_use(m), reaches)?;
    let call = Call {
        operation,
        asked,
        route: &route,
        model: &model,
        body: &body,
        headers: &parts.headers,
        query: parts.uri.query(),
        price: config.price_of(&model.name, &route.model),
    };
    // 4 to 6. Prepare, send and relay, by the route's kind.
    let answer = state.kinds.forward(&state.upstream, call, held, log).await;
    let failed = answer.is_err();
    // SECURITY: the log keeps the whole text; the client's copy loses the project id and a
    // private service's host, which are the deployment's business.
    let project = state.kinds.project();
    let service = (route.upstream.as_ref()).and_then(|service| service.origin.authority());
    let service = service.map(|a| a.as_str());
    let answer = answer.map_err(|error| {
        log.failed(error.log_text());
        error.for_client(project, service)
    });
    match Translated::answer(translation, answer, project, service).await {
        // Logged whole above: the client's copy goes out as it is.
        Err(error) if failed => Ok(error.into_response(dialect)),
        answered => answered,
    }
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

fn models_list(state: &State, key: &KeyEntry, gemini: bool) -> serde_json::Value {
    let usable = (state.config.aliases.iter()).filter(|(alias, _)| key.may_use(alias));
    if gemini {
        let models: Vec<_> = usable
            .filter_map(|(alias, route)| api::gemini::model_object(alias, route))
            .collect();
        return json!({"models": models});
    }
    let data: Vec<_> = usable
        .map(|(alias, route)| route.model_object(alias, state.started_at))
        .collect();
    json!({"object": "list", "data": data})
}

fn model_object(
    state: &State,
    key: &KeyEntry,
    name: &str,
    gemini: bool,
) -> Option<serde_json::Value> {
    // Google's clients name a model `models/{alias}`.
    let name = match gemini {
        true => name.strip_prefix("models/").unwrap_or(name),
        false => name,
    };
    if !key.may_use(name) {
        return None;
    }
    let route = state.config.aliases.resolve(name)?;
    match gemini {
        true => api::gemini::model_object(name, &route),
        false => Some(route.model_object(name, state.started_at)),
    }
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
            Ok(Endpoint::Keyed(Keyed::Models { gemini: false }))
        );
        assert_eq!(
            endpoint(&get, "/models"),
            Ok(Endpoint::Keyed(Keyed::Models { gemini: false }))
        );
        assert_eq!(
            endpoint(&get, "/v1/models/flash"),
            Ok(Endpoint::Keyed(Keyed::Model {
                name: "flash",
                gemini: false
            }))
        );
        assert_eq!(
            endpoint(&get, "/v1/models/meta/llama"),
            Ok(Endpoint::Keyed(Keyed::Model {
                name: "meta/llama",
                gemini: false
            }))
        );
        assert_eq!(
            endpoint(&post, "/v1/chat/completions"),
            Ok(Endpoint::Keyed(Keyed::Forward(
                Operation::ChatCompletions,
                None
            )))
        );
        assert_eq!(
            endpoint(&post, "/embeddings"),
            Ok(Endpoint::Keyed(Keyed::Forward(Operation::Embeddings, None)))
        );
        assert_eq!(
            endpoint(&post, "/v1/messages"),
            Ok(Endpoint::Keyed(Keyed::Forward(Operation::Messages, None)))
        );
        assert_eq!(
            endpoint(&post, "/messages/count_tokens"),
            Ok(Endpoint::Keyed(Keyed::Forward(
                Operation::CountTokens,
                None
            )))
        );
    }

    #[test]
    fn gemini_paths_name_their_model_and_list_in_geminis_shape() {
        use crate::api::gemini::Method as Call;
        assert_eq!(
            endpoint(
                &Method::POST,
                "/v1beta/models/gemini-3.8-flash:streamGenerateContent"
            ),
            Ok(Endpoint::Keyed(Keyed::Forward(
                Operation::Gemini(Call::StreamGenerateContent),
                Some("gemini-3.8-flash")
            )))
        );
        assert_eq!(
            endpoint(
                &Method::POST,
                "/v1/projects/p/locations/l/publishers/google/models/flash:countTokens"
            ),
            Ok(Endpoint::Keyed(Keyed::Forward(
                Operation::Gemini(Call::CountTokens),
                Some("flash")
            )))
        );
        assert_eq!(
            endpoint(&Method::GET, "/v1beta/models"),
            Ok(Endpoint::Keyed(Keyed::Models { gemini: true }))
        );
        assert_eq!(
            endpoint(&Method::GET, "/v1beta/models/models/flash"),
            Ok(Endpoint::Keyed(Keyed::Model {
                name: "models/flash",
                gemini: true
            }))
        );
        assert_eq!(
            endpoint(&Method::GET, "/v1beta/models/flash:generateContent"),
            Err(ProxyError::MethodNotAllowed { allow: POST })
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
