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

/// Anthropic's error type for `error`, by its status: for Vertex's error, the status Vertex
/// gave, which for an error inside a stream is the envelope's code (the stream's own is 200).
fn error_type(error: &ProxyError) -> &'static str {
    let status = match error {
        ProxyError::Upstream(e) => e.status,
        _ => error.status().as_u16(),
    };
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..500 => "invalid_request_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Origin, UpstreamError};

    /// An error inside a stream has the stream's 200 as its status; its type is the one its
    /// own code gives, as the same error at the head gets.
    #[test]
    fn an_error_in_a_stream_has_the_type_of_its_own_code() {
        for in_stream in [false, true] {
            let error = |status| {
                ProxyError::Upstream(Box::new(UpstreamError {
                    from: Origin::Vertex,
                    status,
                    message: "Quota exceeded".into(),
                    code: Some("RESOURCE_EXHAUSTED".into()),
                    retry_after: None,
                    in_stream,
                    anthropic: None,
                }))
            };
            assert_eq!(error_type(&error(429)), "rate_limit_error", "{in_stream}");
            assert_eq!(
                error_type(&error(400)),
                "invalid_request_error",
                "{in_stream}"
            );
            assert_eq!(error_type(&error(500)), "api_error", "{in_stream}");
        }
    }
}
