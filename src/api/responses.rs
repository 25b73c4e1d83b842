//! OpenAI's Responses API (`/v1/responses`: Codex, `client.responses`, `@ai-sdk/openai`),
//! translated to Chat Completions and back: the one place the proxy rewrites bodies rather
//! than splicing them. Stateless: nothing of a response is kept, so the client sends the
//! whole input every time.
//!
//! The way in is [`request`]; the route's kind then sees an ordinary chat completion (and its
//! own relay edit, Gemini 3's signature splice, runs first on the answer); the way out is
//! [`events`], for a whole answer here and for a stream as it comes in [`stream`].

mod chunk;
mod ending;
mod events;
mod input;
mod items;
mod json;
mod messages;
mod refuse;
mod request;
mod stream;
mod surrogates;
#[cfg(test)]
mod tests;
mod tools;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::BodyExt;

use crate::body::{self, ProxyBody};
use crate::error::ProxyError;
use crate::upstream::is_sse;
use events::Builder;
use items::Context;

/// The largest whole (unstreamed) chat answer read to translate, and the most text a
/// streamed one may hold for its response object.
pub(crate) const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// What the way out needs of a translated request.
pub struct Translation {
    stream: bool,
    cx: Context,
}

/// A Responses request as the Chat Completions body the route's kind sends, and what its
/// answer's translation needs.
pub fn translate(body: &Bytes) -> Result<(Bytes, Translation), ProxyError> {
    let translated = request::translate(body)?;
    if !translated.dropped.is_empty() {
        crate::log::info(&format!(
            "responses: hosted tools Vertex cannot run were left out: {}",
            translated.dropped.join(", ")
        ));
    }
    let cx = Context {
        id: response_id(),
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: translated.model,
        tools: translated.tools,
        echo: translated.echo,
    };
    let translation = Translation {
        stream: translated.stream,
        cx,
    };
    Ok((translated.body.into(), translation))
}

/// A fresh response id: nothing is kept under it, it only has to differ.
fn response_id() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!(
        "{now}/{}/{}",
        COUNT.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    );
    format!(
        "resp_{}",
        hex::encode(&crate::keys::sha256(seed.as_bytes())[..12])
    )
}

impl Translation {
    /// The kind's answer, in the Responses API: a stream translated as it comes, a whole
    /// answer read (bounded) and translated at once, an error before the stream as it is
    /// (OpenAI's shape), and an error as a stream's first event as `response.failed`.
    /// `project` and `service` are hidden from the upstream's error events, as
    /// [`ProxyError::for_client`] hides them from its errors.
    pub async fn answer(
        self,
        answer: Result<Response<ProxyBody>, ProxyError>,
        project: &str,
        service: Option<&str>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut builder = Builder::new(self.cx);
        builder.hiding(project, service);
        let response = match answer {
            Ok(response) => response,
            Err(ProxyError::Upstream(e)) if e.in_stream && self.stream => {
                let after =
                    (e.retry_after.as_ref()).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let code = e.code.as_deref();
                builder.start();
                builder.fail(ending::failure(e.status, code, &e.message, after));
                builder.finish(true);
                return Ok(reply(body::full(builder.take()), true));
            }
            Err(error) => return Err(error),
        };
        let (parts, upstream) = response.into_parts();
        if self.stream && is_sse(&parts.headers) {
            let body = stream::translated(upstream, stream::Sse::new(builder));
            return Ok(with_parts(reply(body, true), parts));
        }
        let bytes = read_whole(upstream).await?;
        if !self.stream {
            builder.quiet();
        }
        builder.start();
        if !builder.data(&bytes) {
            let message = "the upstream's answer is not a chat completion";
            return Err(ProxyError::bad_gateway("upstream_answer", message));
        }
        builder.finish(true);
        let response = reply(body::full(builder.take()), self.stream);
        Ok(with_parts(response, parts))
    }
}

/// A whole answer's bytes, up to [`MAX_ANSWER`].
async fn read_whole(mut body: ProxyBody) -> Result<Vec<u8>, ProxyError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            let message = format!("the upstream's answer could not be read: {e}");
            ProxyError::bad_gateway("upstream_broken", message)
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_ANSWER {
                let message = "the upstream's answer is larger than the proxy translates";
                return Err(ProxyError::bad_gateway("upstream_answer", message));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

fn reply(body: ProxyBody, sse: bool) -> Response<ProxyBody> {
    let mut response = Response::new(body);
    let kind = match sse {
        true => "text/event-stream",
        false => "application/json",
    };
    (response.headers_mut()).insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

/// `response` with the upstream's status and headers but for those of its body.
fn with_parts(
    mut response: Response<ProxyBody>,
    parts: http::response::Parts,
) -> Response<ProxyBody> {
    *response.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}
