//! Anthropic's Messages API (Claude Code, the Anthropic SDKs): messages and token counting.
//! Both name their model in the body; errors are `{"type": "error", "error": {"type",
//! "message"}}`, and `event: error` in a stream.

use bytes::Bytes;

use crate::error::{Dialect, ProxyError};

pub const DIALECT: Dialect = Dialect {
    body: error_body,
    event: b"event: error\ndata: ",
};

/// The error as Anthropic's SDKs read it: Claude's own, as Vertex sent it, passes unchanged.
fn error_body(error: &ProxyError) -> Bytes {
    if let ProxyError::Upstream(e) = error
        && let Some(claude) = &e.anthropic
    {
        return claude.clone();
    }
    serde_json::json!({
        "type": "error",
        "error": {"type": error_type(error), "message": error.message()},
    })
    .to_string()
    .into()
}

/// Anthropic's error type for `error`, by its status.
fn error_type(error: &ProxyError) -> &'static str {
    match error.status().as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..500 => "invalid_request_error",
        _ => "api_error",
    }
}
