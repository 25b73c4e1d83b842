//! The bridge's refusals of a request it cannot translate: 400s in OpenAI's shape.

use crate::error::ProxyError;

pub(crate) fn bad(message: impl Into<String>) -> ProxyError {
    ProxyError::bad_request("invalid_request_error", message)
}

pub(crate) fn stateless(message: impl Into<String>) -> ProxyError {
    ProxyError::bad_request("stateless", message)
}

pub(crate) fn stateful(field: &str) -> ProxyError {
    stateless(format!(
        "this proxy is stateless and keeps no responses or conversations: `{field}` cannot be used; send the full input with every request (and `store: false`)"
    ))
}
