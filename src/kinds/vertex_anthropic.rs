//! Claude on Vertex: the Anthropic Messages API through `rawPredict`. Its URLs, the changes
//! its body needs (the model moves to the URL, `anthropic_version` comes in), the betas
//! Vertex accepts, and the one change to its answers: Vertex's own `vertex_event` events go.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::{Arc, LazyLock, Mutex};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;

mod vertex_events;

use super::{Call, Prepared, Target, UpstreamKind};
use crate::api::Operation;
use crate::body::BoxEdit;
use crate::config::Config;
use crate::error::{ProxyError, UpstreamError};
use crate::models::Route;
use crate::rewrite::{self, ModelField};

#[derive(Clone)]
pub struct VertexAnthropic {
    /// `ANTHROPIC_BETAS`.
    betas: Arc<[String]>,
}

impl VertexAnthropic {
    pub fn new(config: &Config) -> VertexAnthropic {
        VertexAnthropic {
            betas: config.anthropic_betas.as_slice().into(),
        }
    }
}

impl UpstreamKind for VertexAnthropic {
    const IS: &'static str = "a Claude model";
    const BELONGS_AT: Operation = Operation::Messages;
    const USAGE_AT_START: bool = true;

    fn serves(operation: Operation) -> bool {
        matches!(operation, Operation::Messages | Operation::CountTokens)
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ProxyError> {
        let (body, stream) = body(call.body, call.model, call.route, call.operation)?;
        Ok(Prepared {
            body,
            target: Target::VertexPath(target(call.route, call.operation, stream)),
            signatures: Default::default(),
        })
    }

    fn add_headers(&self, call: &Call, headers: &mut HeaderMap) {
        if let Some(betas) = betas(call.headers, &self.betas, call.operation) {
            headers.insert("anthropic-beta", betas);
        }
    }

    /// Vertex counts Claude's tokens in some locations only, and says just "not found".
    fn upstream_error(&self, call: &Call, error: &mut UpstreamError) {
        if call.operation == Operation::CountTokens && error.status == 404 {
            error.message = format!(
                "Vertex does not serve token counting for this model in {} (count-tokens:rawPredict answered 404: {})",
                call.route.location(),
                error.message
            );
            error.anthropic = None;
        }
    }

    /// Vertex's own events go from its streams.
    fn relay_edit(&self, _call: &Call, headers: &HeaderMap) -> Option<BoxEdit> {
        if !crate::upstream::is_sse(headers) {
            return None;
        }
        Some(Box::new(vertex_events::DropVertexEvents::default()))
    }
}

/// The version Vertex's Claude endpoint takes in the body, where a client gave none.
pub const VERSION: &str = "vertex-2023-10-16";

/// Refused on `count-tokens` though accepted on messages.
const NOT_FOR_COUNTING: [&str; 1] = ["web-search-2025-03-05"];

/// The path after `…/locations/{location}/` for `operation` on `route`'s model. `stream` is
/// the body's own `"stream": true`.
fn target(route: &Route, operation: Operation, stream: bool) -> String {
    let name = route
        .model
        .strip_prefix("anthropic/")
        .unwrap_or(&route.model);
    match (operation, stream) {
        (Operation::CountTokens, _) => "publishers/anthropic/models/count-tokens:rawPredict".into(),
        (_, true) => format!("publishers/anthropic/models/{name}:streamRawPredict"),
        (_, false) => format!("publishers/anthropic/models/{name}:rawPredict"),
    }
}

/// What the proxy reads of a Messages body besides its model: each member as it came, so
/// that `null` counts as given (an `Option` would read it as absent, and a second member
/// would be added beside it) and nothing is built from the value.
#[derive(Deserialize, Default)]
struct Top<'a> {
    #[serde(default, borrow)]
    anthropic_version: Member<'a>,
    #[serde(default, borrow)]
    stream: Member<'a>,
}

#[derive(Default)]
struct Member<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Member<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(value: D) -> Result<Self, D::Error> {
        <&RawValue>::deserialize(value).map(|raw| Member(Some(raw)))
    }
}

/// The body Vertex gets, as pieces sharing the client's buffer, and whether it streams. For
/// messages the `model` member goes (Vertex reads it from the URL); for counting its value
/// becomes Vertex's name for the model. `"anthropic_version": "vertex-2023-10-16"` comes in
/// unless the client gave a version of its own (a `null` one is replaced). Every other byte
/// is the client's.
fn body(
    body: &Bytes,
    model: &ModelField,
    route: &Route,
    operation: Operation,
) -> Result<(Vec<Bytes>, bool), ProxyError> {
    // The body was validated by `find_model`; what is left to refuse is a member given twice
    // (which one Vertex would read is its own business) and keys serde cannot read.
    let top: Top = serde_json::from_slice(body)
        .map_err(|e| ProxyError::bad_request("invalid_body", e.to_string()))?;
    let stream = top.stream.0.is_some_and(|raw| raw.get() == "true");
    let version = Bytes::from(format!(r#""anthropic_version":"{VERSION}""#));
    let mut edits: Vec<(Range<usize>, Bytes)> = Vec::new();
    let given = match top.anthropic_version.0 {
        Some(raw) if raw.get() == "null" => {
            let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
            edits.push((start..start + 4, rewrite::json_string(VERSION)));
            true
        }
        given => given.is_some(),
    };
    // A version among the alias's defaults comes in with them.
    let version_given = given || route.defaults.contains_key("anthropic_version");
    match (operation, version_given) {
        (Operation::CountTokens, version_given) => {
            let name = route
                .model
                .strip_prefix("anthropic/")
                .unwrap_or(&route.model);
            edits.push((model.span.clone(), rewrite::json_string(name)));
            if !version_given {
                let at = rewrite::member_start(body, &model.span);
                let mut version = BytesMut::from(&version[..]);
                version.extend_from_slice(b",");
                edits.push((at..at, version.freeze()));
            }
        }
        (_, true) => edits.push((rewrite::member_with_comma(body, &model.span), Bytes::new())),
        // The version takes the model's place: no comma moves.
        (_, false) => {
            let member = rewrite::member_start(body, &model.span)..model.span.end;
            edits.push((member, version));
        }
    };
    Ok((rewrite::splice(body, edits), stream))
}

/// The `anthropic-beta` header Vertex gets: the client's values (from every such header,
/// comma-separated) that `allowed` holds. Each value dropped is logged, once per process.
fn betas(client: &HeaderMap, allowed: &[String], operation: Operation) -> Option<HeaderValue> {
    let mut kept: Vec<&str> = Vec::new();
    for value in client.get_all("anthropic-beta") {
        let Ok(value) = value.to_str() else { continue };
        for beta in value.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            let counting = operation == Operation::CountTokens && NOT_FOR_COUNTING.contains(&beta);
            if allowed.iter().any(|a| a == beta) && !counting {
                if !kept.contains(&beta) {
                    kept.push(beta);
                }
            } else {
                dropped(beta);
            }
        }
    }
    (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join(",")).ok())
        .flatten()
}

/// Logs a dropped beta the first time it is seen; a bounded set, since clients choose them.
fn dropped(beta: &str) {
    static SEEN: LazyLock<Mutex<BTreeSet<String>>> = LazyLock::new(Mutex::default);
    let beta: String = beta.chars().take(80).collect();
    let mut seen = crate::lock(&SEEN);
    if seen.len() < 256 && seen.insert(beta.clone()) {
        crate::log::warning(&format!(
            "anthropic-beta {beta:?} is not in ANTHROPIC_BETAS: dropped (Vertex refuses betas it does not know); logged once"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::find_model;

    fn route() -> Route {
        Route::vertex(
            "anthropic/claude-sonnet-4-5@20250929".into(),
            "us-east5".into(),
        )
    }

    fn rewritten(body: &str, operation: Operation) -> (String, bool) {
        let field = find_model(body.as_bytes()).unwrap();
        let (pieces, stream) =
            super::body(&Bytes::from(body.to_owned()), &field, &route(), operation).unwrap();
        let out = String::from_utf8(pieces.concat()).unwrap();
        serde_json::from_str::<serde_json::Value>(&out).expect("still JSON");
        (out, stream)
    }

    #[test]
    fn the_model_leaves_and_the_version_comes_in_its_place() {
        let (out, stream) = rewritten(
            r#"{"model": "sonnet", "max_tokens": 5, "stream": true, "messages": []}"#,
            Operation::Messages,
        );
        assert_eq!(
            out,
            r#"{"anthropic_version":"vertex-2023-10-16", "max_tokens": 5, "stream": true, "messages": []}"#
        );
        assert!(stream);
        // A client's own version stays, and the model goes with its comma.
        let (out, stream) = rewritten(
            r#"{"max_tokens":5,"model":"sonnet","anthropic_version":"2026-10-21"}"#,
            Operation::Messages,
        );
        assert_eq!(out, r#"{"max_tokens":5,"anthropic_version":"2026-10-21"}"#);
        assert!(!stream);
        // Counting keeps the model, as Vertex names it.
        let (out, _) = rewritten(
            r#"{"model":"sonnet","messages":[]}"#,
            Operation::CountTokens,
        );
        assert_eq!(
            out,
            r#"{"anthropic_version":"vertex-2023-10-16","model":"claude-sonnet-4-5@20250929","messages":[]}"#
        );
    }

    #[test]
    fn urls_by_operation_and_stream() {
        let route = route();
        assert_eq!(
            target(&route, Operation::Messages, true),
            "publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict"
        );
        assert_eq!(
            target(&route, Operation::Messages, false),
            "publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
        );
        assert_eq!(
            target(&route, Operation::CountTokens, true),
            "publishers/anthropic/models/count-tokens:rawPredict"
        );
    }

    #[test]
    fn only_allowed_betas_go_on() {
        let allowed: Vec<String> = crate::config::DEFAULT_ANTHROPIC_BETAS
            .split(',')
            .map(String::from)
            .collect();
        let mut client = HeaderMap::new();
        client.append(
            "anthropic-beta",
            HeaderValue::from_static(
                "fine-grained-tool-streaming-2025-05-14,interleaved-thinking-2025-05-14",
            ),
        );
        client.append(
            "anthropic-beta",
            HeaderValue::from_static(" web-search-2025-03-05 "),
        );
        assert_eq!(
            betas(&client, &allowed, Operation::Messages).unwrap(),
            "interleaved-thinking-2025-05-14,web-search-2025-03-05"
        );
        assert_eq!(
            betas(&client, &allowed, Operation::CountTokens).unwrap(),
            "interleaved-thinking-2025-05-14"
        );
        assert!(betas(&HeaderMap::new(), &allowed, Operation::Messages).is_none());
    }
}
