//! Google's embedding models through Vertex's `:predict`: OpenAI's embeddings request in, and
//! OpenAI's embeddings answer out. The one translation the proxy makes, because `:predict`
//! speaks another shape; the client's texts still go by splices (each call's body is pieces
//! of its buffer), and Vertex's numbers come back as they were sent
//! ([`fan_out`], [`answer`]).

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use hyper::body::{Body, Frame};
use serde::Deserialize;
use serde::de::{Deserializer, Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

mod answer;
mod calls;
mod fan_out;

use super::{Call, Target, UpstreamKind, Way};
use crate::api::Operation;
use crate::body::{BoxError, Held, ProxyBody};
use crate::error::ProxyError;
use crate::log::{Answered, Calls, RequestLog};
use calls::Allowance;
use fan_out::{FanOut, Plan};

/// Inputs one request may carry.
pub const MAX_INPUTS: usize = 250;

/// `:predict` calls in flight, or done and not yet handed on, at once for one request.
pub const FAN_OUT: usize = 8;

#[derive(Clone)]
pub struct VertexPredict;

impl UpstreamKind for VertexPredict {
    const IS: &'static str = "an embedding model";
    const BELONGS_AT: Operation = Operation::Embeddings;

    fn serves(operation: Operation) -> bool {
        operation == Operation::Embeddings
    }

    /// Steps 4 to 6 at once: the OpenAI request becomes `:predict` calls (one per input for
    /// `gemini-embedding-001`), each sent as the transport sends any, retries included, and
    /// their answers become one OpenAI answer, in input order, named by the client's alias,
    /// which goes out as its parts are ready. It starts once the first [`FAN_OUT`] parts
    /// are (all of them, when fewer): a call that fails before then is the client's answer;
    /// after, the answer is cut. Partial results never pass for a success.
    async fn forward(
        &self,
        way: Way<'_>,
        call: Call<'_>,
        held: Held,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let route = call.route;
        let request = parse(call.body)?;
        let credential = way.upstream.credential(&route.auth).await?;
        let calls = Arc::new(Calls::default());
        log.fans_out(calls.clone());
        let (target, vertex) = (Target::VertexPath(target(&route.model)), way.vertex.clone());
        let batches = batches(&route.model, request.texts.len());
        let plan = Plan {
            request,
            client: call.headers.clone(),
            credential,
            auth: route.auth.clone(),
            upstream: way.upstream.clone(),
            locate: Box::new(move |location: &str| target.uri(&vertex, location)),
            locations: route.locations.clone(),
            allowance: Allowance::new(way.upstream.retry_policy(), calls),
            alias: call.model.name.clone(),
            claim: held.another(),
        };
        let mut fan_out = FanOut::new(plan, batches, held);
        let mut first = Vec::new();
        while !fan_out.head_ready() {
            match fan_out.next().await {
                Some(Ok(bytes)) => first.push(bytes),
                Some(Err(error)) => {
                    if let ProxyError::Upstream(e) = &error {
                        log.upstream_failed(e.status);
                    }
                    return Err(error);
                }
                None => break,
            }
        }
        log.upstream_answered(Answered {
            status: 200,
            compressed: false,
            queued: false,
            usage_at_start: false,
            sse: false,
        });
        let mut response = Response::new(relay(first, fan_out));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}

/// The answer's body: `first`, then the fan-out's parts as they come, relayed by a task
/// that ends, the fan-out and its calls with it, when the client does.
fn relay(first: Vec<Bytes>, mut fan_out: FanOut) -> ProxyBody {
    // One part waits in the channel at most: a client that stops reading stops the
    // fan-out once its connection's buffers are full.
    let (mut sender, frames) = Channel::<Bytes, BoxError>::new(1);
    let (watch, left) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let sending = async move {
            for bytes in first {
                if sender.send_data(bytes).await.is_err() {
                    return;
                }
            }
            while let Some(next) = fan_out.next().await {
                match next {
                    Ok(bytes) => {
                        if sender.send_data(bytes).await.is_err() {
                            return;
                        }
                    }
                    // Too late for an error in the API's shape: the answer is cut.
                    Err(error) => return sender.abort(error.log_text().into()),
                }
            }
        };
        // The client left (its body was dropped) while nothing was being sent, which would
        // have told: the fan-out goes with `sending`, and with it the calls in flight,
        // their retries and waits included.
        tokio::select! {
            () = sending => {}
            _ = left => {}
        }
    });
    Watched {
        frames,
        _watch: watch,
    }
    .boxed()
}

/// The answer's body, whose drop tells the fan-out that the client has gone.
struct Watched {
    frames: Channel<Bytes, BoxError>,
    /// Never sent on: dropped with the body, it wakes the relay's `left`.
    _watch: oneshot::Sender<()>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.frames).poll_frame(cx)
    }
}

/// The path after `…/locations/{location}/` for `model`.
pub fn target(model: &str) -> String {
    let name = model.strip_prefix("google/").unwrap_or(model);
    format!("publishers/google/models/{name}:predict")
}

/// What the proxy reads of an OpenAI embeddings request: where each text is in the
/// client's body, as the JSON string it sent.
#[derive(Debug)]
pub struct Request {
    body: Bytes,
    pub texts: Vec<Range<usize>>,
    task_type: Option<Range<usize>>,
    dimensions: Option<u64>,
    pub base64: bool,
}

#[derive(Deserialize)]
#[serde(expecting = "an embeddings request object")]
struct Wire<'a> {
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "dimensions")]
    dimensions: Option<u64>,
    #[serde(default, rename = "encoding_format", deserialize_with = "base64")]
    base64: bool,
    #[serde(borrow)]
    task_type: Option<&'a RawValue>,
}

const BAD_ENCODING: &str = "\"encoding_format\" must be \"float\" or \"base64\"";

// A field of the wrong type is refused by name: serde's own message would quote the
// client's value, however long.
fn dimensions<'de, D: Deserializer<'de>>(field: D) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(field)
        .map_err(|_| D::Error::custom("\"dimensions\" must be a non-negative integer"))
}

/// Whether `encoding_format` asks for base64, read without keeping the client's string.
fn base64<'de, D: Deserializer<'de>>(field: D) -> Result<bool, D::Error> {
    struct Format;
    impl Visitor<'_> for Format {
        type Value = bool;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(BAD_ENCODING)
        }

        fn visit_str<E: serde::de::Error>(self, format: &str) -> Result<bool, E> {
            match format {
                "float" => Ok(false),
                "base64" => Ok(true),
                _ => Err(E::custom(BAD_ENCODING)),
            }
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    field
        .deserialize_any(Format)
        .map_err(|_| D::Error::custom(BAD_ENCODING))
}

/// An `input` array's texts, read one at a time and refused at the first that is not a
/// string, or at the first past [`MAX_INPUTS`]: what is held never grows with the body,
/// which the memory budget counts alone. The refusal goes in `.0`, serde's error being
/// only a string.
struct Texts<'r>(&'r mut Option<ProxyError>);

impl<'de> Visitor<'de> for Texts<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut texts = Vec::new();
        while let Some(text) = seq.next_element::<&'de RawValue>()? {
            let refusal = if !is_string(text) {
                let tokens =
                    text.get().starts_with('[') || text.get().starts_with(char::is_numeric);
                invalid(match tokens {
                    true => {
                        "\"input\" must be a string or an array of strings: Google's embedding models take text, not token arrays"
                    }
                    false => "\"input\" must be a string or an array of strings",
                })
            } else if texts.len() == MAX_INPUTS {
                invalid(format!(
                    "\"input\" has more than {MAX_INPUTS} texts; Google's embedding models take at most {MAX_INPUTS} a request"
                ))
            } else {
                texts.push(text);
                continue;
            };
            *self.0 = Some(refusal);
            return Err(A::Error::custom("refused"));
        }
        Ok(texts)
    }
}

fn is_string(raw: &RawValue) -> bool {
    raw.get().starts_with('"')
}

fn invalid(message: impl Into<String>) -> ProxyError {
    ProxyError::bad_request("invalid_input", message)
}

/// Reads the request; the body was validated as JSON by `find_model`. Nothing of it is
/// copied: each text is found where it is.
pub fn parse(body: &Bytes) -> Result<Request, ProxyError> {
    let needs_input =
        || invalid("an embeddings request needs \"input\": a string or an array of strings");
    let text = std::str::from_utf8(body).map_err(|_| needs_input())?;
    // What was wrong, as serde says it: a duplicate field, or a field of the wrong type in
    // our words (above); nothing of the client's text.
    let wire: Wire = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let input = wire.input.ok_or_else(needs_input)?;
    // Where a value the parser borrowed from the body lies in it (always inside: a value
    // from anywhere else is refused rather than trusted).
    let at = |raw: &RawValue| {
        let start = (raw.get().as_ptr() as usize).checked_sub(text.as_ptr() as usize);
        match start.map(|start| start..start + raw.get().len()) {
            Some(range) if range.end <= text.len() => Ok(range),
            _ => Err(needs_input()),
        }
    };
    let texts: Vec<&RawValue> = match input.get().as_bytes().first() {
        Some(b'"') => vec![input],
        Some(b'[') => {
            let mut refused = None;
            let read = serde_json::Deserializer::from_str(input.get())
                .deserialize_seq(Texts(&mut refused));
            match (read, refused) {
                (_, Some(refusal)) => return Err(refusal),
                (Ok(texts), None) => texts,
                (Err(_), None) => return Err(needs_input()),
            }
        }
        _ => return Err(invalid("\"input\" must be a string or an array of strings")),
    };
    if texts.is_empty() {
        return Err(invalid("\"input\" is empty"));
    }
    let task_type = match wire.task_type {
        Some(task) if is_string(task) => Some(at(task)?),
        Some(task) if task.get() == "null" => None,
        Some(_) => return Err(invalid("\"task_type\" must be a string")),
        None => None,
    };
    Ok(Request {
        texts: texts.into_iter().map(at).collect::<Result<_, _>>()?,
        body: body.clone(),
        task_type,
        dimensions: wire.dimensions,
        base64: wire.base64,
    })
}

impl Request {
    /// The `:predict` body for `texts`, as pieces: the client's own JSON strings between
    /// ours, `{"instances":[{"content":TEXT,"task_type":TASK},…],"parameters":{…}}`.
    pub fn call_body(&self, texts: Range<usize>) -> Vec<Bytes> {
        let mut pieces = vec![Bytes::from_static(br#"{"instances":["#)];
        for (i, text) in self.texts[texts].iter().enumerate() {
            let open: &'static [u8] = match i {
                0 => br#"{"content":"#,
                _ => br#",{"content":"#,
            };
            pieces.push(Bytes::from_static(open));
            pieces.push(self.body.slice(text.clone()));
            if let Some(task) = &self.task_type {
                pieces.push(Bytes::from_static(br#","task_type":"#));
                pieces.push(self.body.slice(task.clone()));
            }
            pieces.push(Bytes::from_static(b"}"));
        }
        let end = match self.dimensions {
            Some(dimensions) => {
                format!(r#"],"parameters":{{"outputDimensionality":{dimensions}}}}}"#)
            }
            None => "]}".to_owned(),
        };
        pieces.push(Bytes::from(end));
        pieces
    }
}

/// How the inputs are split into `:predict` calls: `gemini-embedding-001` takes one
/// instance a call, the others all of them at once.
pub fn batches(model: &str, inputs: usize) -> Vec<Range<usize>> {
    if model == "google/gemini-embedding-001" {
        (0..inputs).map(|i| i..i + 1).collect()
    } else {
        std::iter::once(0..inputs).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(request: &Request, texts: Range<usize>) -> String {
        String::from_utf8(request.call_body(texts).concat()).unwrap()
    }

    #[test]
    fn requests_are_read_and_refused_with_reasons() {
        let body = Bytes::from_static(br#"{"model":"e","input":["a","b\u00e9"],"dimensions":768,"task_type":"RETRIEVAL_QUERY","encoding_format":"base64"}"#);
        let request = parse(&body).unwrap();
        assert_eq!(request.texts.len(), 2);
        assert!(request.base64);
        // The client's own bytes, escapes and all.
        assert_eq!(
            body_of(&request, 1..2),
            r#"{"instances":[{"content":"b\u00e9","task_type":"RETRIEVAL_QUERY"}],"parameters":{"outputDimensionality":768}}"#
        );
        let plain = parse(&Bytes::from_static(br#"{"model":"e","input":"one"}"#)).unwrap();
        assert_eq!(
            body_of(&plain, 0..1),
            r#"{"instances":[{"content":"one"}]}"#
        );
        for (body, says) in [
            (&br#"{"model":"e","input":[[1,2,3]]}"#[..], "token arrays"),
            (br#"{"model":"e","input":[]}"#, "empty"),
            (br#"{"model":"e"}"#, "needs \"input\""),
            (br#"{"model":"e","input":7}"#, "a string or an array"),
            (br#"{"model":"e","input":"a","task_type":1}"#, "task_type"),
            (
                br#"{"model":"e","input":"a","encoding_format":"int8"}"#,
                "encoding_format",
            ),
            // What was wrong, said, not taken for a missing input.
            (
                br#"{"model":"e","input":"a","encoding_format":5}"#,
                "\"encoding_format\" must be \"float\" or \"base64\"",
            ),
            (
                br#"{"model":"e","input":"a","dimensions":-1}"#,
                "\"dimensions\" must be a non-negative integer",
            ),
            (
                br#"{"model":"e","input":"a","dimensions":"768"}"#,
                "\"dimensions\" must be a non-negative integer",
            ),
            (
                br#"{"model":"e","input":"a","input":"b"}"#,
                "duplicate field `input`",
            ),
        ] {
            let error = parse(&Bytes::from_static(body)).unwrap_err();
            assert!(error.message().contains(says), "{}", error.message());
        }
        // The client's value is not quoted back, however long.
        let long = format!(
            r#"{{"model":"e","input":"a","dimensions":"{}"}}"#,
            "7".repeat(10_000)
        );
        assert!(parse(&Bytes::from(long)).unwrap_err().message().len() < 100);
        // Read up to the first text past the limit, and no further: what comes after it is
        // never looked at.
        let past = format!(
            r#"{{"model":"e","input":[{},[1,2]]}}"#,
            vec!["\"x\""; 251].join(",")
        );
        let error = parse(&Bytes::from(past)).unwrap_err();
        assert!(
            error.message().contains("more than 250 texts"),
            "{}",
            error.message()
        );
        let exactly = format!(
            r#"{{"model":"e","input":[{}]}}"#,
            vec!["\"x\""; 250].join(",")
        );
        assert_eq!(parse(&Bytes::from(exactly)).unwrap().texts.len(), 250);
        let many = format!(
            r#"{{"model":"e","input":[{}]}}"#,
            vec!["\"x\""; 251].join(",")
        );
        assert!(
            parse(&Bytes::from(many))
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
}
