//! The proxy's own errors, and the one mapping from them to HTTP responses, in the shape of
//! the API the client called (OpenAI's, or Anthropic's on Claude's paths).
//!
//! Upstream (Vertex) successes never pass through here: they are streamed back unchanged.
//! Its errors do ([`UpstreamError`]): Google's envelope becomes OpenAI's shape, with the same
//! status, so that the SDKs can read them. So do failures to reach the upstream.
//! Every message is written for the client to read, so none may contain a key, a key hash,
//! a token or request body content.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, ProxyBody, ReadError};

/// Everything the proxy itself can refuse a request for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// 400: the request body or its `model` is unusable; the message says why.
    BadRequest { message: String, code: &'static str },
    /// 401: no key, an unknown key, or a disabled key.
    Unauthorized(&'static str),
    /// 403: the key is valid but may not use this model.
    Forbidden(String),
    /// 404: no such path, or no such model in `/v1/models/{alias}`.
    NotFound(String),
    /// 405: the path exists, the method does not; carries the `Allow` value.
    MethodNotAllowed { allow: &'static str },
    /// 408: the client took longer than `BODY_READ_TIMEOUT_SECS` to send its body.
    RequestTimeout(String),
    /// 413: the body is larger than `MAX_BODY_BYTES`.
    PayloadTooLarge { limit: usize },
    /// 503: the request cannot be served now, but can be soon (`Retry-After`).
    Busy(String),
    /// 502: Vertex could not be reached, TLS failed, or no Google token could be had.
    BadGateway { message: String, code: &'static str },
    /// 502: the upstream answered 401 or 403 to the proxy's own credentials; `cause` is its
    /// Google error, for the log only.
    UpstreamRefused {
        status: u16,
        cause: String,
        from: Origin,
    },
    /// 504: connecting to the upstream took longer than `UPSTREAM_CONNECT_TIMEOUT_SECS`, or
    /// its response head longer than `UPSTREAM_IDLE_TIMEOUT_SECS`.
    GatewayTimeout(String),
    /// The upstream's own error, with its status: the last one, when retries are over.
    Upstream(Box<UpstreamError>),
}

/// Which API's error shape a client gets: the route it called decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error": {"message", "type", "param", "code"}}`, and SSE `data:` events.
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`, and SSE `event: error`.
    Anthropic,
}

/// Which kind of upstream a message speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Vertex,
    /// A private service, at an alias's `upstream`.
    Service,
}

impl Origin {
    /// The upstream as a message names it, mid-sentence.
    pub fn noun(self) -> &'static str {
        match self {
            Origin::Vertex => "Vertex",
            Origin::Service => "the service",
        }
    }

    /// The same, to begin a sentence.
    pub fn subject(self) -> &'static str {
        match self {
            Origin::Vertex => "Vertex",
            Origin::Service => "The service",
        }
    }
}

/// An error the upstream answered, read from Google's envelope, Anthropic's shape or
/// OpenAI's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    /// Who answered it.
    pub from: Origin,
    /// The HTTP status; for an error inside a stream, the envelope's `code`.
    pub status: u16,
    /// Google's message, for the client; never logged, since it may quote the request.
    pub message: String,
    /// Google's status, `RESOURCE_EXHAUSTED`, or `None` when the body was not its envelope.
    pub code: Option<String>,
    /// The upstream's `Retry-After`, passed on.
    pub retry_after: Option<HeaderValue>,
    /// It came as the first event of a 200 stream: the client gets it as one SSE event too.
    pub in_stream: bool,
    /// Claude's own error, `{"type": "error", ...}`, as Vertex sent it: passed on unchanged.
    pub anthropic: Option<bytes::Bytes>,
}

impl ProxyError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ProxyError::BadRequest {
            message: message.into(),
            code,
        }
    }

    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        ProxyError::BadGateway {
            message: message.into(),
            code,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadGateway { .. } | ProxyError::UpstreamRefused { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(e) if e.in_stream => StatusCode::OK,
            ProxyError::Upstream(e) => {
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// OpenAI's `(type, code)` pair; the SDKs branch on the status, people read these.
    fn kind(&self) -> (&'static str, &str) {
        match self {
            ProxyError::Upstream(e) => {
                let kind = match e.status {
                    429 => "rate_limit_error",
                    400..500 => "invalid_request_error",
                    _ => "api_error",
                };
                (kind, e.code.as_deref().unwrap_or("upstream_error"))
            }
            ProxyError::BadRequest { code, .. } => ("invalid_request_error", code),
            ProxyError::Unauthorized(_) => ("invalid_request_error", "invalid_api_key"),
            ProxyError::Forbidden(_) => ("permission_error", "model_not_allowed"),
            ProxyError::NotFound(_) => ("invalid_request_error", "not_found"),
            ProxyError::MethodNotAllowed { .. } => ("invalid_request_error", "method_not_allowed"),
            ProxyError::RequestTimeout(_) => ("invalid_request_error", "request_timeout"),
            ProxyError::PayloadTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            ProxyError::BadGateway { code, .. } => ("api_error", code),
            ProxyError::UpstreamRefused { .. } => ("api_error", "upstream_refused_credentials"),
            ProxyError::GatewayTimeout(_) => ("api_error", "upstream_timeout"),
            ProxyError::Busy(_) => ("api_error", "proxy_busy"),
        }
    }

    pub fn message(&self) -> String {
        match self {
            ProxyError::BadRequest { message, .. }
            | ProxyError::Forbidden(message)
            | ProxyError::NotFound(message)
            | ProxyError::BadGateway { message, .. }
            | ProxyError::RequestTimeout(message)
            | ProxyError::GatewayTimeout(message)
            | ProxyError::Busy(message) => message.clone(),
            ProxyError::Upstream(e) => e.message.clone(),
            ProxyError::Unauthorized(message) => (*message).to_owned(),
            ProxyError::MethodNotAllowed { allow } => {
                format!("method not allowed on this path; allowed: {allow}")
            }
            ProxyError::UpstreamRefused {
                status,
                from: Origin::Vertex,
                ..
            } => format!(
                "Vertex refused the proxy's own credentials (HTTP {status}): your API key was accepted, \
                 and the deployment's service account needs fixing; the proxy's log has the cause"
            ),
            ProxyError::UpstreamRefused {
                status,
                from: Origin::Service,
                ..
            } => format!(
                "the service refused the proxy's ID token (HTTP {status}): your API key was accepted, \
                 and the deployment's service account needs roles/run.invoker on the service \
                 (deploy.sh --invoker-of); the proxy's log has the cause"
            ),
            ProxyError::PayloadTooLarge { limit } => {
                format!("request body is larger than the limit of {limit} bytes (MAX_BODY_BYTES)")
            }
        }
    }

    /// What the request log records. Client-facing messages may quote the request (an
    /// unknown model name), and request content is never logged, so only our own 5xx
    /// messages, which quote nothing, are logged whole.
    pub fn log_text(&self) -> String {
        match self {
            ProxyError::BadGateway { .. } | ProxyError::GatewayTimeout(_) | ProxyError::Busy(_) => {
                self.message()
            }
            // Google's own words: what the operator needs, and nothing of the request.
            ProxyError::UpstreamRefused {
                status,
                cause,
                from,
            } => {
                let cause: String = cause.chars().take(500).collect();
                let from = from.subject();
                format!("{from} refused the proxy's credentials (HTTP {status}): {cause}")
            }
            ProxyError::Upstream(e) => {
                let place = if e.in_stream { " in its stream" } else { "" };
                let code = self.kind().1;
                format!("{} answered {} {code}{place}", e.from.subject(), e.status)
            }
            _ => self.kind().1.to_owned(),
        }
    }

    /// Anthropic's error type for this error, by its status.
    fn anthropic_kind(&self) -> &'static str {
        match self.status().as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            400..500 => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// The error as the dialect's SDKs expect it, as bytes.
    fn body(&self, dialect: Dialect) -> bytes::Bytes {
        match (dialect, self) {
            (Dialect::OpenAi, _) => self.payload().to_string().into(),
            (Dialect::Anthropic, ProxyError::Upstream(e)) if e.anthropic.is_some() => {
                e.anthropic.clone().unwrap_or_default()
            }
            (Dialect::Anthropic, _) => serde_json::json!({
                "type": "error",
                "error": {"type": self.anthropic_kind(), "message": self.message()},
            })
            .to_string()
            .into(),
        }
    }

    /// The error as OpenAI's SDKs expect it.
    fn payload(&self) -> serde_json::Value {
        let (kind, code) = self.kind();
        serde_json::json!({
            "error": {
                "message": self.message(),
                "type": kind,
                "param": null,
                "code": code,
            }
        })
    }

    /// The one place a proxy error becomes HTTP, in the shape of the API the client called.
    pub fn into_response(self, dialect: Dialect) -> Response<ProxyBody> {
        let body = self.body(dialect);
        if matches!(&self, ProxyError::Upstream(e) if e.in_stream) {
            // The stream's head said 200 and the client asked for a stream: the error is its
            // one event, and no `[DONE]` follows.
            let mut event = match dialect {
                Dialect::OpenAi => b"data: ".to_vec(),
                Dialect::Anthropic => b"event: error\ndata: ".to_vec(),
            };
            event.extend_from_slice(&body);
            event.extend_from_slice(b"\n\n");
            let mut response = Response::new(body::full(event));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            return response;
        }
        let mut response = Response::new(body::full(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self {
            ProxyError::Upstream(e) => {
                if let Some(after) = e.retry_after {
                    headers.insert(header::RETRY_AFTER, after);
                }
            }
            ProxyError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ProxyError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ProxyError::Busy(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<ReadError> for ProxyError {
    fn from(error: ReadError) -> ProxyError {
        match error {
            ReadError::TooLarge { limit } => ProxyError::PayloadTooLarge { limit },
            ReadError::OverBudget { budget } => ProxyError::Busy(format!(
                "the proxy is holding as many request bodies as its memory allows \
                 ({budget} bytes, MAX_BUFFERED_BYTES); retry in a moment"
            )),
            ReadError::TooSlow { timeout } => ProxyError::RequestTimeout(format!(
                "the request body did not arrive within {}s (BODY_READ_TIMEOUT_SECS)",
                timeout.as_secs()
            )),
            ReadError::Broken => {
                ProxyError::bad_request("invalid_body", "the request body could not be read")
            }
        }
    }
}

/// A complete JSON response; used for our own answers, never for upstream ones.
pub fn json_response(status: StatusCode, payload: &serde_json::Value) -> Response<ProxyBody> {
    let mut bytes = serde_json::to_vec(payload).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(body::full(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<ProxyBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_error_has_openai_shape_and_its_status() {
        let cases = [
            (ProxyError::bad_request("invalid_json", "x"), 400),
            (ProxyError::Unauthorized("no key"), 401),
            (ProxyError::Forbidden("no".into()), 403),
            (ProxyError::NotFound("gone".into()), 404),
            (ProxyError::MethodNotAllowed { allow: "GET" }, 405),
            (ProxyError::PayloadTooLarge { limit: 10 }, 413),
            (ProxyError::RequestTimeout("slow".into()), 408),
            (ProxyError::bad_gateway("upstream_unreachable", "down"), 502),
            (ProxyError::GatewayTimeout("slow".into()), 504),
            (ProxyError::Busy("full".into()), 503),
            (ProxyError::Upstream(Box::new(busy(false))), 429),
            (
                ProxyError::UpstreamRefused {
                    status: 403,
                    cause: "PERMISSION_DENIED no".into(),
                    from: Origin::Vertex,
                },
                502,
            ),
        ];
        for (error, status) in cases {
            let message = error.message();
            let response = error.into_response(Dialect::OpenAi);
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let json = body_json(response).await;
            let error = &json["error"];
            assert_eq!(error["message"], message.as_str());
            assert!(error["type"].is_string() && error["code"].is_string());
            assert!(error.get("param").is_some());
        }
    }

    fn busy(in_stream: bool) -> UpstreamError {
        UpstreamError {
            from: Origin::Vertex,
            status: 429,
            message: "Resource exhausted.".into(),
            code: Some("RESOURCE_EXHAUSTED".into()),
            retry_after: Some(HeaderValue::from_static("5")),
            in_stream,
            anthropic: None,
        }
    }

    #[tokio::test]
    async fn an_upstream_error_keeps_its_status_and_in_a_stream_is_one_event() {
        let response = ProxyError::Upstream(Box::new(busy(false))).into_response(Dialect::OpenAi);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let json = body_json(response).await;
        assert_eq!(json["error"]["code"], "RESOURCE_EXHAUSTED");
        assert_eq!(json["error"]["type"], "rate_limit_error");
        let response = ProxyError::Upstream(Box::new(busy(true))).into_response(Dialect::OpenAi);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        let event = text
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(event).unwrap();
        assert_eq!(json["error"]["message"], "Resource exhausted.");
    }

    #[tokio::test]
    async fn method_not_allowed_names_the_allowed_methods() {
        let response =
            ProxyError::MethodNotAllowed { allow: "POST" }.into_response(Dialect::OpenAi);
        assert_eq!(response.headers()[header::ALLOW], "POST");
        let json = body_json(response).await;
        assert!(json["error"]["message"].as_str().unwrap().contains("POST"));
    }
}
