//! The proxy's own errors, and the one mapping from them to HTTP responses: status and
//! headers here, the body in the dialect of the API the client called (each API's file in
//! `api/` writes its own).
//!
//! The upstream's errors pass through here too ([`UpstreamError`]), with their status, so
//! that the SDKs can read them; so do failures to reach the upstream. Its successes stream
//! back without passing through here. Every message is written for the client to read, so
//! none may contain a key, a key hash, a token or request body content.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, ProxyBody, ReadError};

mod hidden;

pub(crate) use hidden::hidden;

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
    /// Google error, for the log only; `sent` says what the proxy sent (never a token).
    UpstreamRefused {
        status: u16,
        cause: String,
        from: Origin,
        sent: String,
    },
    /// 504: connecting to the upstream took longer than `UPSTREAM_CONNECT_TIMEOUT_SECS`, or
    /// its response head longer than `UPSTREAM_IDLE_TIMEOUT_SECS`.
    GatewayTimeout(String),
    /// The upstream's own error, with its status: the last one, when retries are over.
    Upstream(Box<UpstreamError>),
}

/// How a client API writes an error: each API's file in `api/` defines its own.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// The error's JSON body.
    pub body: fn(&ProxyError) -> Bytes,
    /// What comes before the body when the error is the one event of a stream.
    pub event: &'static [u8],
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
    /// The upstream's name for the error: Google's status (`RESOURCE_EXHAUSTED`), Claude's or
    /// OpenAI's error type; `None` when the body held none of them.
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

    /// The error's code: the proxy's own name for it (`invalid_api_key`), or the upstream's
    /// (Google's status, Claude's or OpenAI's error type). The log and every dialect use it.
    pub fn code(&self) -> &str {
        match self {
            ProxyError::Upstream(e) => e.code.as_deref().unwrap_or("upstream_error"),
            ProxyError::BadRequest { code, .. } | ProxyError::BadGateway { code, .. } => code,
            ProxyError::Unauthorized(_) => "invalid_api_key",
            ProxyError::Forbidden(_) => "model_not_allowed",
            ProxyError::NotFound(_) => "not_found",
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::RequestTimeout(_) => "request_timeout",
            ProxyError::PayloadTooLarge { .. } => "request_too_large",
            ProxyError::UpstreamRefused { .. } => "upstream_refused_credentials",
            ProxyError::GatewayTimeout(_) => "upstream_timeout",
            ProxyError::Busy(_) => "proxy_busy",
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
                sent,
                ..
            } => {
                // Cloud Run checks the ID token, and the service may check a key of its own:
                // either can refuse, and the answer does not say which.
                let own_key = match sent.contains("own key") {
                    true => {
                        "the service does not take the key the alias's \"service_key_env\" names"
                    }
                    false => {
                        "the service checks a key of its own (vLLM's --api-key): give the alias \
                              \"service_key_env\", naming the variable that holds it, and \
                              \"auth_header\": \"x-serverless-authorization\""
                    }
                };
                format!(
                    "the service refused the proxy's request (HTTP {status}): your API key was \
                     accepted, and the deployment needs fixing. The proxy sent {sent}. Either the \
                     deployment's service account lacks roles/run.invoker on the service \
                     (deploy.sh --invoker-of), or {own_key}; the proxy's log has the cause"
                )
            }
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
                sent,
            } => {
                let cause: String = cause.chars().take(500).collect();
                let from = from.subject();
                format!("{from} refused the proxy's credentials (HTTP {status}, {sent}): {cause}")
            }
            ProxyError::Upstream(e) => {
                let place = if e.in_stream { " in its stream" } else { "" };
                let code = self.code();
                format!("{} answered {} {code}{place}", e.from.subject(), e.status)
            }
            _ => self.code().to_owned(),
        }
    }

    /// The one place a proxy error becomes HTTP, in the shape of the API the client called.
    pub fn into_response(self, dialect: Dialect) -> Response<ProxyBody> {
        let body = (dialect.body)(&self);
        if matches!(&self, ProxyError::Upstream(e) if e.in_stream) {
            // The stream's head said 200 and the client asked for a stream: the error is its
            // one event, and no `[DONE]` follows.
            let mut event = dialect.event.to_vec();
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
            ReadError::OverShare { share } => ProxyError::Busy(format!(
                "this key's requests are holding as many request bytes as one key may \
                 ({share} bytes, MAX_BUFFERED_BYTES_PER_KEY); retry in a moment"
            )),
            ReadError::Trickle { min_rate } => ProxyError::RequestTimeout(format!(
                "the request body arrived too slowly: less than MIN_BODY_BYTES_PER_SEC \
                 ({min_rate}) bytes a second since its first byte"
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
