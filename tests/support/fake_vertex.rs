//! The one fake upstream: Vertex as the tests need it, recording what it received.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

use super::*;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// The request target as it arrived: origin form over HTTP/1.1, the path over HTTP/2.
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Which of the fake's connections it came on, counting from 1.
    pub connection: usize,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the fake received JSON")
    }
}

/// How the fake answers one request.
pub enum Reply {
    Json(StatusCode, String),
    /// A JSON answer with `connection: close`, after which the fake closes the connection.
    JsonThenClose(StatusCode, String),
    /// Streams what the test sends, as it sends it; ends when the sender is dropped.
    Channel(StatusCode, &'static str, Channel<Bytes>),
    /// `chunks`, one every `every`, then `end`.
    Paced {
        content_type: &'static str,
        chunks: Vec<Bytes>,
        every: Duration,
        end: End,
    },
    /// Never answers: the response head does not come.
    Stall,
    /// This response, as it is (the demo stand-in's answers, say).
    Respond(Response<vertex_proxy::body::ProxyBody>),
    /// Waits this long, then answers as the inner reply says.
    Late(Duration, Box<Reply>),
    /// Closes the connection without an answer.
    Hangup,
}

/// How a paced body ends.
pub enum End {
    Complete,
    /// The connection is cut mid-body: the client sees an incomplete response.
    Cut,
    /// Silence for this long, then the cut.
    StallThenCut(Duration),
}

type Behaviour = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

pub struct FakeVertex {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
    arrived: Arc<Notify>,
    behaviour: Arc<Mutex<Behaviour>>,
    work: Arc<Work>,
}

/// The fake's own view of what it is doing, for tests of cancellation and leaks.
#[derive(Default)]
struct Work {
    connections: AtomicUsize,
    connected: Notify,
    /// Requests arrived and not yet answered in full, nor given up.
    in_flight: AtomicUsize,
    /// Told whenever an answer ends or is given up.
    ended: Notify,
    /// Arrival indices of the requests whose response the other side dropped before its end.
    cancelled: Mutex<Vec<usize>>,
}

/// An OpenAI-style completion for `model`, as Vertex would send it.
pub fn completion(model: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER_SENTINEL}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    })
    .to_string()
}

/// Answers every request with a completion naming the model it received, refusing as
/// Vertex does what Gemini 3 refuses.
fn completions(r: &Recorded) -> Reply {
    if let Some(refusal) = gemini3_refusal(r) {
        return refusal;
    }
    let model = r.json()["model"].as_str().unwrap_or_default().to_owned();
    Reply::Json(StatusCode::OK, completion(&model))
}

/// Vertex's refusal of a Gemini 3 request, by the stand-in's rules (`demo::gemini3`): a
/// preview model asked for outside `global`, or a current turn whose first tool call lost the
/// signature Vertex issued with it (the sentinel passes). Gemini 2.5 does not check.
pub fn gemini3_refusal(r: &Recorded) -> Option<Reply> {
    let (status, google, message) = vertex_proxy::demo::gemini3::refusal(&r.path, &r.json())?;
    let envelope =
        serde_json::json!([{"error": {"code": status, "message": message, "status": google}}]);
    Some(Reply::Json(
        StatusCode::from_u16(status).unwrap(),
        envelope.to_string(),
    ))
}

/// The stand-in's answer to a request (echo, a signed call to the first tool, SSE when asked),
/// refusing what Vertex refuses.
pub fn stand_in(r: &Recorded) -> Reply {
    if let Some(refusal) = tool_message_refusal(r) {
        return refusal;
    }
    Reply::Respond(vertex_proxy::demo::vertex_answer(
        &r.path,
        &r.headers,
        &r.json(),
    ))
}

/// Vertex's refusal of a chat completion whose tool results are out of place, as a strict
/// OpenAI-compatible endpoint refuses them: a `tool` message carries text (a string, or `text`
/// parts: no images), and follows the assistant's `tool_calls` or another tool message, so
/// that a step's results are contiguous.
pub fn tool_message_refusal(r: &Recorded) -> Option<Reply> {
    if !r.path.ends_with("/chat/completions") {
        return None;
    }
    let body = r.json();
    let messages = body["messages"].as_array()?;
    for (n, message) in messages.iter().enumerate() {
        if message["role"] != "tool" {
            continue;
        }
        let content = &message["content"];
        let text = content.is_string()
            || (content.as_array()).is_some_and(|parts| parts.iter().all(|p| p["type"] == "text"));
        let before = n.checked_sub(1).map(|b| &messages[b]);
        let placed = before.is_some_and(|b| {
            b["role"] == "tool" || (b["role"] == "assistant" && b["tool_calls"].is_array())
        });
        let message = match (text, placed) {
            (false, _) => format!("messages[{n}]: a tool message's content must be text."),
            (_, false) => format!(
                "messages[{n}]: a tool message must follow the assistant message with its tool_calls, or another tool message."
            ),
            _ => continue,
        };
        let envelope = serde_json::json!([{"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}]);
        return Some(Reply::Json(StatusCode::BAD_REQUEST, envelope.to_string()));
    }
    None
}

/// Google's error envelope, wrapped in an array as Vertex's OpenAI endpoint sends it, with
/// `Retry-After` when given.
pub fn google_error(status: u16, google: &str, retry_after: Option<&str>) -> Reply {
    let message = format!("{google}: the fake says so. Please try again later.");
    let envelope =
        serde_json::json!([{"error": {"code": status, "message": message, "status": google}}]);
    let mut response = response(
        StatusCode::from_u16(status).unwrap(),
        "application/json",
        full(envelope.to_string()),
    );
    if let Some(after) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", after.parse().unwrap());
    }
    Reply::Respond(response)
}

/// Vertex's 404 for a model it does not serve, quoting the request's resource name, project
/// id and all, as Google's messages do.
pub fn model_not_found(r: &Recorded) -> Reply {
    let resource = r.path.trim_start_matches("/v1/");
    let resource = resource.split(':').next().unwrap_or(resource);
    let message = format!(
        "Publisher Model `{resource}` was not found or your project does not have access to it. Project {PROJECT} may need to enable it."
    );
    let envelope =
        serde_json::json!([{"error": {"code": 404, "message": message, "status": "NOT_FOUND"}}]);
    Reply::Json(StatusCode::NOT_FOUND, envelope.to_string())
}

/// A 200 stream whose first event is Google's error, as Gemini sends a 429 it decided on
/// after the head; the stream then ends.
pub fn error_in_stream(status: u16, google: &str) -> Reply {
    let event = format!(
        "data: {}\n\n",
        serde_json::json!({"error": {"code": status, "message": "Resource exhausted. Please try again later.", "status": google}})
    );
    Reply::Respond(response(StatusCode::OK, "text/event-stream", full(event)))
}

impl FakeVertex {
    /// Answers every request with a completion naming the model it received.
    pub async fn start() -> FakeVertex {
        FakeVertex::start_with(completions).await
    }

    /// Plain HTTP/1.1 and h2c, answering as `behaviour` says.
    pub async fn start_with(
        behaviour: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> FakeVertex {
        FakeVertex::listen(behaviour, None, None).await
    }

    /// Over TLS with the test certificate for `localhost` (`tests/tls`), offering HTTP/2 and
    /// HTTP/1.1 by ALPN, as Google's front ends do.
    pub async fn start_tls_with(
        behaviour: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> FakeVertex {
        FakeVertex::listen(behaviour, Some(tls_acceptor("leaf")), None).await
    }

    /// [`FakeVertex::start_tls_with`], advertising `SETTINGS_MAX_CONCURRENT_STREAMS` of
    /// `streams` (Google's front ends commonly say 100).
    pub async fn start_tls_limited(
        streams: u32,
        behaviour: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> FakeVertex {
        FakeVertex::listen(behaviour, Some(tls_acceptor("leaf")), Some(streams)).await
    }

    async fn listen(
        behaviour: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        tls: Option<tokio_rustls::TlsAcceptor>,
        streams: Option<u32>,
    ) -> FakeVertex {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeVertex {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            arrived: Arc::default(),
            behaviour: Arc::new(Mutex::new(Arc::new(behaviour))),
            work: Arc::default(),
        };
        let (received, arrived, behaviour, work) = (
            fake.received.clone(),
            fake.arrived.clone(),
            fake.behaviour.clone(),
            fake.work.clone(),
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let connection = work.connections.fetch_add(1, Ordering::SeqCst) + 1;
                work.connected.notify_waiters();
                let (received, arrived, behaviour, work) = (
                    received.clone(),
                    arrived.clone(),
                    behaviour.clone(),
                    work.clone(),
                );
                let service = service_fn(move |request: Request<Incoming>| {
                    let (received, arrived, behaviour, work) = (
                        received.clone(),
                        arrived.clone(),
                        behaviour.clone(),
                        work.clone(),
                    );
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let recorded = Recorded {
                            method: parts.method,
                            path: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            version: parts.version,
                            headers: parts.headers,
                            body,
                            connection,
                        };
                        let behaviour = behaviour.lock().unwrap().clone();
                        let reply = behaviour(&recorded);
                        // As Google's front ends do: gzip whenever the client accepts it.
                        let gzip = recorded
                            .headers
                            .get_all(http::header::ACCEPT_ENCODING)
                            .iter()
                            .any(|v| v.to_str().is_ok_and(|v| v.contains("gzip")));
                        let index = {
                            let mut received = received.lock().unwrap();
                            received.push(recorded);
                            received.len() - 1
                        };
                        arrived.notify_waiters();
                        answer(reply, gzip, Job::start(work, index)).await
                    }
                });
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.http2().max_concurrent_streams(streams);
                    let _ = match tls {
                        Some(tls) => match tls.accept(tcp).await {
                            Ok(stream) => {
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            Err(_) => return,
                        },
                        None => builder.serve_connection(TokioIo::new(tcp), service).await,
                    };
                });
            }
        });
        fake
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.work.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections have been accepted.
    pub async fn wait_for_connections(&self, n: usize) {
        until(
            "connections at the fake Vertex",
            &self.work.connected,
            || (self.connections() >= n).then_some(()),
        )
        .await
    }

    /// Requests arrived whose answer has not yet ended or been given up.
    pub fn in_flight(&self) -> usize {
        self.work.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until every answer begun has ended or been given up.
    pub async fn wait_until_idle(&self) {
        self.until_answers_end("the fake's answers to end", || {
            (self.in_flight() == 0).then_some(())
        })
        .await
    }

    /// The arrival indices of the requests whose response was dropped before its end: the
    /// upstream requests the proxy cancelled.
    pub fn cancelled(&self) -> Vec<usize> {
        self.work.cancelled.lock().unwrap().clone()
    }

    /// Waits until at least `n` answers have been given up, and returns [`Self::cancelled`].
    pub async fn wait_for_cancelled(&self, n: usize) -> Vec<usize> {
        self.until_answers_end("upstream requests to be cancelled", || {
            let cancelled = self.cancelled();
            (cancelled.len() >= n).then_some(cancelled)
        })
        .await
    }

    /// Waits until `check` has a value, looking again whenever an answer ends or is given up.
    pub async fn until_answers_end<T>(&self, what: &str, check: impl Fn() -> Option<T>) -> T {
        until(what, &self.work.ended, check).await
    }

    /// A fake that answers its one request with an SSE stream the test feeds, chunk by chunk;
    /// the stream ends when the sender is dropped.
    pub async fn streaming() -> (FakeVertex, Sender<Bytes>) {
        let (tx, body) = Channel::new(8);
        let body = Mutex::new(Some(body));
        let fake = FakeVertex::start_with(move |_| {
            let body = body
                .lock()
                .unwrap()
                .take()
                .expect("the streaming fake serves one request");
            Reply::Channel(StatusCode::OK, "text/event-stream", body)
        })
        .await;
        (fake, tx)
    }

    /// A fake that answers every request with an SSE stream of its own, and hands the test the
    /// sender of each, in arrival order.
    pub async fn streams() -> (FakeVertex, mpsc::UnboundedReceiver<Sender<Bytes>>) {
        let (senders_tx, senders_rx) = mpsc::unbounded_channel();
        let fake = FakeVertex::start_with(move |_| {
            let (tx, body) = Channel::new(8);
            let _ = senders_tx.send(tx);
            Reply::Channel(StatusCode::OK, "text/event-stream", body)
        })
        .await;
        (fake, senders_rx)
    }

    pub fn set_behaviour(&self, behaviour: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.behaviour.lock().unwrap() = Arc::new(behaviour);
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        until("requests at the fake Vertex", &self.arrived, || {
            (self.count() >= n).then(|| self.received())
        })
        .await
    }
}

/// One request's answer in progress: counted in flight until it ends or is dropped.
struct Job {
    work: Arc<Work>,
    index: usize,
    done: bool,
}

impl Job {
    fn start(work: Arc<Work>, index: usize) -> Job {
        work.in_flight.fetch_add(1, Ordering::SeqCst);
        Job {
            work,
            index,
            done: false,
        }
    }
}

impl Drop for Job {
    /// Records the answer's end, and only then tells the waiters.
    fn drop(&mut self) {
        if !self.done {
            self.work.cancelled.lock().unwrap().push(self.index);
        }
        self.work.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.work.ended.notify_waiters();
    }
}

type FakeBody = BoxBody<Bytes, std::io::Error>;

async fn answer(
    mut reply: Reply,
    gzip: bool,
    mut job: Job,
) -> Result<Response<FakeBody>, std::io::Error> {
    while let Reply::Late(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    let (status, content_type, body): (_, _, FakeBody) = match reply {
        Reply::Json(status, text) if gzip => {
            job.done = true;
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
            std::io::Write::write_all(&mut encoder, text.as_bytes())?;
            let mut response = response(status, "application/json", full(encoder.finish()?));
            let gzip = http::HeaderValue::from_static("gzip");
            response
                .headers_mut()
                .insert(http::header::CONTENT_ENCODING, gzip);
            return Ok(response);
        }
        Reply::Json(status, text) => {
            job.done = true;
            (status, "application/json", full(text))
        }
        Reply::JsonThenClose(status, text) => {
            job.done = true;
            let mut response = response(status, "application/json", full(text));
            let close = http::HeaderValue::from_static("close");
            response
                .headers_mut()
                .insert(http::header::CONNECTION, close);
            return Ok(response);
        }
        Reply::Channel(status, content_type, body) => {
            let body = Tracked {
                inner: body.map_err(|never| match never {}).boxed(),
                job,
            };
            (status, content_type, body.boxed())
        }
        Reply::Paced {
            content_type,
            chunks,
            every,
            end,
        } => {
            let (mut tx, body) = Channel::new(1);
            tokio::spawn(async move {
                for chunk in chunks {
                    if tx.send_data(chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
                let cut = std::io::Error::other("the fake cut the stream");
                match end {
                    End::Complete => {}
                    End::Cut => tx.abort(cut),
                    End::StallThenCut(silence) => {
                        tokio::time::sleep(silence).await;
                        tx.abort(cut);
                    }
                }
            });
            let body = Tracked {
                inner: body.boxed(),
                job,
            };
            (StatusCode::OK, content_type, body.boxed())
        }
        Reply::Respond(response) => {
            return Ok(response.map(|body| {
                let inner = body.map_err(std::io::Error::other).boxed();
                Tracked { inner, job }.boxed()
            }));
        }
        Reply::Stall => std::future::pending().await,
        Reply::Late(..) => unreachable!("waited for above"),
        Reply::Hangup => {
            job.done = true;
            return Err(std::io::Error::other("the fake hangs up"));
        }
    };
    Ok(response(status, content_type, body))
}

/// A body that marks its job done when it ends, by its own end or the fake's cut.
struct Tracked {
    inner: FakeBody,
    job: Job,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // A body of known length is not polled past its last bytes: its end is that frame.
        let ended = matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))));
        if ended || self.inner.is_end_stream() {
            self.job.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    /// A whole answer's length, so that it goes out with `content-length`, as Google's
    /// front ends send a body they have whole: a proxy that changes the bytes must not pass
    /// it on.
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A TLS server for the certificate `tests/tls/{leaf}.pem`.
pub(super) fn tls_acceptor(leaf: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    vertex_proxy::install_crypto_provider();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls");
    let cert = CertificateDer::from_pem_file(format!("{dir}/{leaf}.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/{leaf}.key")).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The CA that signed the TLS fake's certificate, for `UPSTREAM_CA_FILE`.
pub const TEST_CA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/ca.pem");

pub fn full<E>(text: impl Into<Bytes>) -> BoxBody<Bytes, E> {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn response<E>(
    status: StatusCode,
    content_type: &str,
    body: BoxBody<Bytes, E>,
) -> Response<BoxBody<Bytes, E>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    response
}
