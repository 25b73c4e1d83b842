//! How a response ends: its usage in the Responses API's names, and an upstream error in the
//! codes Codex acts on.

use serde_json::{Value, json};

/// Chat usage in the Responses API's names.
pub(crate) fn usage_of(usage: &Value) -> Value {
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let input = count(&usage["prompt_tokens"]);
    let output = count(&usage["completion_tokens"]);
    let total = usage["total_tokens"].as_u64().unwrap_or(input + output);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": count(&usage["prompt_tokens_details"]["cached_tokens"])},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": count(&usage["completion_tokens_details"]["reasoning_tokens"])},
        "total_tokens": total,
    })
}

/// An upstream error as the `error` of a failed response, in the codes Codex acts on:
/// `rate_limit_exceeded` ("try again in N s" sets its wait), `context_length_exceeded`,
/// `insufficient_quota`, else `server_error` or `invalid_prompt`.
pub(crate) fn failure(
    status: u16,
    google: Option<&str>,
    message: &str,
    after: Option<u64>,
) -> Value {
    let lower = message.to_ascii_lowercase();
    let code = match (status, google) {
        (429, _) | (_, Some("RESOURCE_EXHAUSTED")) => "rate_limit_exceeded",
        (400 | 413, _)
            if lower.contains("token")
                && (lower.contains("exceed") || lower.contains("too long")) =>
        {
            "context_length_exceeded"
        }
        (402 | 403, _) if lower.contains("quota") || lower.contains("billing") => {
            "insufficient_quota"
        }
        (400..500, _) => "invalid_prompt",
        _ => "server_error",
    };
    let message = match code {
        "rate_limit_exceeded" => {
            format!("{message} Please try again in {}s.", after.unwrap_or(5))
        }
        _ => message.to_owned(),
    };
    json!({"code": code, "message": message})
}
