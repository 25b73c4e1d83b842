//! Google's embedding models through Vertex's `:predict`: OpenAI's embeddings request in, and
//! OpenAI's embeddings answer out. The one translation of a client's JSON the proxy makes
//! (the request is rewritten, not spliced), because `:predict` speaks another shape.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};

mod calls;

use super::{Call, Target, UpstreamKind, Way};
use crate::api::Operation;
use crate::body::{Held, ProxyBody};
use crate::error::{Origin, ProxyError, json_response};
use crate::log::{Answered, Calls, RequestLog};
use crate::upstream::Outgoing;
use calls::{Allowance, CallRecord, shutting_down};

/// Inputs one request may carry.
pub const MAX_INPUTS: usize = 250;

/// `:predict` calls in flight at once for one embeddings request.
pub const FAN_OUT: usize = 8;

/// The most of a `:predict` answer read: 250 embeddings of 3072 numbers, as JSON, with room.
const PREDICT_BODY: usize = 32 * 1024 * 1024;

#[derive(Clone)]
pub struct VertexPredict;

impl UpstreamKind for VertexPredict {
    const IS: &'static str = "an embedding model";
    const BELONGS_AT: Operation = Operation::Embeddings;

    fn serves(operation: Operation) -> bool {
        operation == Operation::Embeddings
    }

    /// Steps 4 to 6 at once: the OpenAI request becomes `:predict` calls (one per input for
    /// `gemini-embedding-001`, at most [`FAN_OUT`] at a time), each sent as the transport
    /// sends any, retries included; their answers become one OpenAI answer, in input order,
    /// named by the client's alias. A call that fails fails the request: partial results
    /// never pass for a success.
    async fn forward(
        &self,
        way: Way<'_>,
        call: Call<'_>,
        held: Held,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let calls = Arc::new(Calls::default());
        log.fans_out(calls.clone());
        let answer = embed(way, &call, calls).await;
        match &answer {
            Err(ProxyError::Upstream(e)) => log.upstream_failed(e.status),
            Err(_) => {}
            Ok(_) => {
                drop(held);
                log.upstream_answered(Answered {
                    status: 200,
                    compressed: false,
                    queued: false,
                    usage_at_start: false,
                });
            }
        }
        answer
    }
}

async fn embed(
    way: Way<'_>,
    call: &Call<'_>,
    calls_made: Arc<Calls>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let route = call.route;
    let request = parse(call.body)?;
    let headers = way.upstream.headers(call.headers, &route.auth).await?;
    let target = Arc::new(Target::VertexPath(target(&route.model)));
    let batches = batches(&route.model, request.inputs.len());
    let permits = Arc::new(tokio::sync::Semaphore::new(FAN_OUT));
    let shared = Arc::new(Allowance::new(way.upstream.retry_policy(), calls_made));
    let locations: Arc<[String]> = route.locations.as_slice().into();
    // Dropped with the request (the client left, or a call failed): the calls still
    // running are aborted with it.
    let mut calls = tokio::task::JoinSet::new();
    let count = batches.len();
    for (n, range) in batches.into_iter().enumerate() {
        let body = vec![predict_body(&request, range.clone())];
        let outgoing = Outgoing::new(headers.clone(), body, route.auth.clone());
        let (upstream, vertex) = (way.upstream.clone(), way.vertex.clone());
        let (target, locations, permits) = (target.clone(), locations.clone(), permits.clone());
        let shared = shared.clone();
        calls.spawn(async move {
            // On shutdown no call starts: the request answers within the grace period. Nor
            // does one while another call is being refused 429, until it has its answer.
            let started = async {
                let permit = permits.acquire_owned().await;
                shared.unthrottled().await;
                permit
            };
            let _permit = tokio::select! {
                biased;
                () = upstream.stopping().wait() => {
                    shared.calls.ended_by_shutdown.store(true, Ordering::Relaxed);
                    return Err(shutting_down());
                }
                permit = started => permit,
            };
            // Another call has failed, and with it the request.
            if shared.failed.load(Ordering::Acquire) {
                return Err(ProxyError::bad_gateway(
                    "upstream_error",
                    "another call failed",
                ));
            }
            let locate = |location: &str| target.uri(&vertex, location);
            shared.calls.made.fetch_add(1, Ordering::Relaxed);
            let mut record = CallRecord {
                shared: &shared,
                attempts: Vec::new(),
                throttling: false,
            };
            let sent = upstream.send(outgoing, (&locations, locate), Origin::Vertex, &mut record);
            let answer = sent.await;
            if answer.is_err() {
                shared.failed.store(true, Ordering::Release);
            }
            if record.throttling {
                shared.resume();
            }
            let answer = answer?;
            let body = http_body_util::Limited::new(answer.response.into_body(), PREDICT_BODY);
            let read = tokio::time::timeout(upstream.idle_timeout(), body.collect());
            let bytes = match read.await {
                Ok(Ok(collected)) => collected.to_bytes(),
                _ => {
                    let message = "Vertex's :predict answer could not be read whole";
                    return Err(ProxyError::bad_gateway("upstream_error", message));
                }
            };
            Ok((n, parse_answer(&bytes, range.len())?))
        });
    }
    let mut parts: Vec<Vec<Embedding>> = vec![Vec::new(); count];
    while let Some(joined) = calls.join_next().await {
        let lost = || ProxyError::bad_gateway("upstream_error", "an embeddings call was lost");
        let (n, embeddings) = joined.map_err(|_| lost())??;
        parts[n] = embeddings;
    }
    let all: Vec<Embedding> = parts.into_iter().flatten().collect();
    let answer = openai_answer(&call.model.name, &all, request.base64);
    Ok(json_response(StatusCode::OK, &answer))
}

/// The path after `…/locations/{location}/` for `model`.
pub fn target(model: &str) -> String {
    let name = model.strip_prefix("google/").unwrap_or(model);
    format!("publishers/google/models/{name}:predict")
}

/// What the proxy reads of an OpenAI embeddings request.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub inputs: Vec<String>,
    dimensions: Option<u64>,
    pub base64: bool,
    task_type: Option<String>,
}

#[derive(Deserialize)]
struct Wire {
    input: Value,
    dimensions: Option<u64>,
    encoding_format: Option<String>,
    task_type: Option<String>,
}

fn invalid(message: impl Into<String>) -> ProxyError {
    ProxyError::bad_request("invalid_input", message)
}

/// Reads the request; the body was validated as JSON by `find_model`.
pub fn parse(body: &[u8]) -> Result<Request, ProxyError> {
    let wire: Wire = serde_json::from_slice(body).map_err(|_| {
        invalid("an embeddings request needs \"input\": a string or an array of strings")
    })?;
    let inputs = match wire.input {
        Value::String(text) => vec![text],
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                _ => Err(invalid(
                    "\"input\" must be a string or an array of strings: Google's embedding models take text, not token arrays",
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("\"input\" must be a string or an array of strings")),
    };
    if inputs.is_empty() {
        return Err(invalid("\"input\" is empty"));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(invalid(format!(
            "\"input\" has {} texts; Google's embedding models take at most {MAX_INPUTS} a request",
            inputs.len()
        )));
    }
    let base64 = match wire.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(invalid(
                "\"encoding_format\" must be \"float\" or \"base64\"",
            ));
        }
    };
    Ok(Request {
        inputs,
        dimensions: wire.dimensions,
        base64,
        task_type: wire.task_type,
    })
}

/// How the inputs are split into `:predict` calls: `gemini-embedding-001` takes one
/// instance a call, the others all of them at once.
pub fn batches(model: &str, inputs: usize) -> Vec<std::ops::Range<usize>> {
    if model == "google/gemini-embedding-001" {
        (0..inputs).map(|i| i..i + 1).collect()
    } else {
        std::iter::once(0..inputs).collect()
    }
}

/// The `:predict` body for the inputs in `range`.
pub fn predict_body(request: &Request, range: std::ops::Range<usize>) -> Bytes {
    let instances: Vec<Value> = request.inputs[range]
        .iter()
        .map(|text| match &request.task_type {
            Some(task) => json!({"content": text, "task_type": task}),
            None => json!({"content": text}),
        })
        .collect();
    let mut body = json!({"instances": instances});
    if let Some(dimensions) = request.dimensions {
        body["parameters"] = json!({"outputDimensionality": dimensions});
    }
    Bytes::from(body.to_string())
}

/// One embedding and its token count, from a `:predict` answer.
pub type Embedding = (Vec<f32>, u64);

/// The embeddings in a `:predict` answer, expecting `count` of them.
pub fn parse_answer(body: &[u8], count: usize) -> Result<Vec<Embedding>, ProxyError> {
    #[derive(Deserialize)]
    struct Answer {
        predictions: Vec<Prediction>,
    }
    #[derive(Deserialize)]
    struct Prediction {
        embeddings: Embeddings,
    }
    #[derive(Deserialize)]
    struct Embeddings {
        values: Vec<f32>,
        #[serde(default)]
        statistics: Option<Statistics>,
    }
    #[derive(Deserialize)]
    struct Statistics {
        #[serde(default)]
        token_count: f64,
    }
    let unreadable = || {
        ProxyError::bad_gateway(
            "upstream_error",
            "Vertex's :predict answer could not be read as embeddings",
        )
    };
    let answer: Answer = serde_json::from_slice(body).map_err(|_| unreadable())?;
    if answer.predictions.len() != count {
        return Err(unreadable());
    }
    Ok(answer
        .predictions
        .into_iter()
        .map(|p| {
            let tokens = p.embeddings.statistics.map_or(0.0, |s| s.token_count) as u64;
            (p.embeddings.values, tokens)
        })
        .collect())
}

/// OpenAI's embeddings answer: in input order, floats or base64 of little-endian f32.
pub fn openai_answer(alias: &str, embeddings: &[Embedding], base64: bool) -> Value {
    let data: Vec<Value> = embeddings
        .iter()
        .enumerate()
        .map(|(index, (values, _))| {
            let embedding = if base64 {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(values)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = embeddings.iter().map(|(_, t)| t).sum();
    json!({
        "object": "list", "data": data, "model": alias,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_and_refused_with_reasons() {
        let request = parse(br#"{"model":"e","input":["a","b"],"dimensions":768,"task_type":"RETRIEVAL_QUERY","encoding_format":"base64"}"#).unwrap();
        assert_eq!(request.inputs, ["a", "b"]);
        assert!(request.base64);
        assert_eq!(
            predict_body(&request, 1..2),
            r#"{"instances":[{"content":"b","task_type":"RETRIEVAL_QUERY"}],"parameters":{"outputDimensionality":768}}"#
        );
        for (body, says) in [
            (&br#"{"model":"e","input":[[1,2,3]]}"#[..], "token arrays"),
            (br#"{"model":"e","input":[]}"#, "empty"),
            (br#"{"model":"e"}"#, "needs \"input\""),
            (
                br#"{"model":"e","input":"a","encoding_format":"int8"}"#,
                "encoding_format",
            ),
        ] {
            let error = parse(body).unwrap_err();
            assert!(error.message().contains(says), "{}", error.message());
        }
        let many = format!(
            r#"{{"model":"e","input":[{}]}}"#,
            vec!["\"x\""; 251].join(",")
        );
        assert!(
            parse(many.as_bytes())
                .unwrap_err()
                .message()
                .contains("at most 250")
        );
        assert_eq!(
            batches("google/gemini-embedding-001", 3),
            [0..1, 1..2, 2..3]
        );
        let whole = batches("google/text-embedding-005", 3);
        assert_eq!((whole.len(), whole[0].clone()), (1, 0..3));
    }

    #[test]
    fn answers_become_openais_in_floats_or_base64() {
        let predict = br#"{"predictions":[{"embeddings":{"values":[0.5,-1.0],"statistics":{"token_count":3,"truncated":false}}}]}"#;
        let embeddings = parse_answer(predict, 1).unwrap();
        let floats = openai_answer("emb", &embeddings, false);
        assert_eq!(floats["data"][0]["embedding"], json!([0.5, -1.0]));
        assert_eq!(floats["usage"]["total_tokens"], 3);
        assert_eq!(floats["model"], "emb");
        let encoded = openai_answer("emb", &embeddings, true);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            bytes,
            [0.5f32.to_le_bytes(), (-1.0f32).to_le_bytes()].concat()
        );
        assert!(parse_answer(predict, 2).is_err());
    }
}
