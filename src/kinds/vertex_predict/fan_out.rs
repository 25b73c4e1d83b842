//! The `:predict` calls of one embeddings request, and its answer as they come: at most
//! [`FAN_OUT`] calls in flight or done and not yet sent on, each call's body built when it
//! starts, each answer read (bounded, and counted in the budget) and written as its part of
//! the answer, and the parts handed on in input order. A client that stops reading stops
//! the handing on, and with it the calls.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Uri};
use http_body_util::BodyExt;
use tokio::task::JoinSet;

use super::answer;
use super::calls::{Allowance, CallRecord, shutting_down};
use super::{FAN_OUT, Request};
use crate::body::{Held, UpstreamBody};
use crate::error::{Origin, ProxyError};
use crate::models::Auth;
use crate::upstream::{Outgoing, Upstream};

/// The most one text's embedding may take in a `:predict` answer: 3,072 numbers, as JSON,
/// are about 60 KB.
const PER_TEXT: usize = 256 * 1024;

/// The URL of a call in a location.
pub(super) type Locate = Box<dyn Fn(&str) -> Result<Uri, ProxyError> + Send + Sync>;

/// What every call of the request needs.
pub(super) struct Plan {
    pub request: Request,
    /// The client's headers, of which the allowlisted ones go with each call, and the
    /// credential's.
    pub client: HeaderMap,
    pub credential: Arc<HeaderMap>,
    pub auth: Auth,
    pub upstream: Upstream,
    /// The URL in each location, and the locations in turn.
    pub locate: Locate,
    pub locations: Vec<String>,
    pub allowance: Allowance,
    /// The client's model name, which the answer names.
    pub alias: String,
    /// An empty claim on the request's budget, of which each answer takes another.
    pub claim: Held,
}

/// One call's part of the answer, counted in the budget until it has gone on.
struct Part {
    text: Bytes,
    tokens: u64,
    held: Held,
}

pub(super) struct FanOut {
    plan: Arc<Plan>,
    /// The texts of each call.
    batches: Vec<Range<usize>>,
    calls: JoinSet<Result<(usize, Part), ProxyError>>,
    ready: BTreeMap<usize, Part>,
    started: usize,
    sent: usize,
    tokens: u64,
    done: bool,
    /// The request's body, whose texts the calls send: held to the end.
    _body: Held,
    /// The part handed on last, which may still wait in the connection's channel.
    last: Option<Held>,
}

impl FanOut {
    pub fn new(plan: Plan, batches: Vec<Range<usize>>, body: Held) -> FanOut {
        FanOut {
            plan: Arc::new(plan),
            batches,
            calls: JoinSet::new(),
            ready: BTreeMap::new(),
            started: 0,
            sent: 0,
            tokens: 0,
            done: false,
            _body: body,
            last: None,
        }
    }

    /// Whether the answer may start: its first window of parts (or all, when fewer) has
    /// gone on, so that a failure among the first calls is still the client's answer.
    pub fn head_ready(&self) -> bool {
        self.done || self.sent >= FAN_OUT.min(self.batches.len())
    }

    /// The answer's next bytes, in order; `None` after its end.
    pub async fn next(&mut self) -> Option<Result<Bytes, ProxyError>> {
        if self.done {
            return None;
        }
        let total = self.batches.len();
        if self.sent == total {
            self.done = true;
            let alias = serde_json::to_string(&self.plan.alias).unwrap_or_default();
            let tokens = self.tokens;
            let end = format!(
                r#"],"model":{alias},"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}"#
            );
            return Some(Ok(Bytes::from(end)));
        }
        loop {
            while self.started < total && self.started < self.sent + FAN_OUT {
                // On shutdown no call starts: the request answers within the grace period.
                if self.plan.upstream.stopping().begun() {
                    let calls = &self.plan.allowance.calls;
                    calls.ended_by_shutdown.store(true, Ordering::Relaxed);
                    return Some(self.failed(shutting_down()));
                }
                let (n, plan) = (self.started, self.plan.clone());
                let texts = self.batches[n].clone();
                self.calls.spawn(async move { call(plan, n, texts).await });
                self.started += 1;
            }
            if let Some(part) = self.ready.remove(&self.sent) {
                self.sent += 1;
                self.tokens += part.tokens;
                // Counted until the next part goes on: the connection may still hold it.
                self.last = Some(part.held);
                return Some(Ok(part.text));
            }
            match self.calls.join_next().await {
                Some(Ok(Ok((n, part)))) => {
                    self.ready.insert(n, part);
                }
                Some(Ok(Err(error))) => return Some(self.failed(error)),
                _ => {
                    let lost =
                        ProxyError::bad_gateway("upstream_error", "an embeddings call was lost");
                    return Some(self.failed(lost));
                }
            }
        }
    }

    fn failed(&mut self, error: ProxyError) -> Result<Bytes, ProxyError> {
        self.done = true;
        // The calls still running are aborted, and what they held is given back.
        self.calls.abort_all();
        self.ready.clear();
        Err(error)
    }
}

/// Call `n`, for `texts`: waits its turn, sends, reads the answer and writes its part.
async fn call(plan: Arc<Plan>, n: usize, texts: Range<usize>) -> Result<(usize, Part), ProxyError> {
    let allowance = &plan.allowance;
    let upstream = &plan.upstream;
    // Not while another call is being refused 429, until it has its answer; nor on
    // shutdown.
    tokio::select! {
        biased;
        () = upstream.stopping().wait() => {
            allowance.calls.ended_by_shutdown.store(true, Ordering::Relaxed);
            return Err(shutting_down());
        }
        () = allowance.unthrottled() => {}
    }
    // Another call has failed, and with it the request.
    if allowance.failed.load(Ordering::Acquire) {
        return Err(ProxyError::bad_gateway(
            "upstream_error",
            "another call failed",
        ));
    }
    // Built now, not before: it shares the client's buffer, for the texts.
    let body = plan.request.call_body(texts.clone());
    let headers = (Cow::Borrowed(&plan.client), HeaderMap::new());
    let outgoing = Outgoing::new(headers, plan.credential.clone(), body, plan.auth.clone());
    allowance.calls.made.fetch_add(1, Ordering::Relaxed);
    let mut record = CallRecord {
        shared: allowance,
        attempts: Vec::new(),
        throttling: false,
    };
    let sent = upstream.send(
        outgoing,
        (&plan.locations, &plan.locate),
        Origin::Vertex,
        &mut record,
    );
    let answer = sent.await;
    if answer.is_err() {
        allowance.failed.store(true, Ordering::Release);
    }
    if record.throttling {
        allowance.resume();
    }
    let mut held = plan.claim.another();
    let read = read(answer?.response.into_body(), &plan, texts.len(), &mut held).await?;
    let written = answer::write(&read, (texts.start, texts.len()), plan.request.base64)?;
    // The part, framed: the answer's opening before the first, a comma before the others.
    let mut text = BytesMut::with_capacity(written.text.len() + 32);
    text.extend_from_slice(match n {
        0 => br#"{"object":"list","data":["#.as_slice(),
        _ => b",",
    });
    text.extend_from_slice(&written.text);
    drop(read);
    // The answer's bytes go; the part's stay counted until it has gone on.
    held.resize(text.len()).await?;
    Ok((
        n,
        Part {
            text: text.freeze(),
            tokens: written.tokens,
            held,
        },
    ))
}

/// The answer of a call for `texts` texts, read within its bound, and counted in `held` as
/// it comes.
async fn read(
    mut body: UpstreamBody,
    plan: &Plan,
    texts: usize,
    held: &mut Held,
) -> Result<BytesMut, ProxyError> {
    let bound = PER_TEXT * texts;
    let mut read = BytesMut::new();
    let unreadable = || {
        let message = "Vertex's :predict answer could not be read whole";
        ProxyError::bad_gateway("upstream_error", message)
    };
    loop {
        let frame = tokio::time::timeout(plan.upstream.idle_timeout(), body.frame());
        let Some(frame) = frame.await.map_err(|_| unreadable())? else {
            return Ok(read);
        };
        let Ok(data) = frame.map_err(|_| unreadable())?.into_data() else {
            continue;
        };
        if read.len() + data.len() > bound {
            let message =
                format!("Vertex's :predict answer is larger than {bound} bytes for {texts} texts");
            return Err(ProxyError::bad_gateway("upstream_error", message));
        }
        held.take(data.len()).await?;
        read.extend_from_slice(&data);
    }
}
