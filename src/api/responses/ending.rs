//! How a response ends: its usage in the Responses API's names, and an upstream error in the
//! codes Codex acts on.

use super::chunk::ChatUsage;
use super::json::{key, string, uint};

/// A response's usage, in the Responses API's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    pub reasoning: u64,
    pub total: u64,
}

impl Usage {
    /// Chat usage, read.
    pub fn of(usage: &ChatUsage) -> Usage {
        let input = usage.prompt_tokens.or(0);
        let output = usage.completion_tokens.or(0);
        let detail = |d: &Option<super::chunk::Details>, f: fn(&super::chunk::Details) -> u64| {
            d.as_ref().map_or(0, f)
        };
        Usage {
            input,
            cached: detail(&usage.prompt_tokens_details, |d| d.cached_tokens.or(0)),
            output,
            reasoning: detail(&usage.completion_tokens_details, |d| {
                d.reasoning_tokens.or(0)
            }),
            total: (usage.total_tokens.0).unwrap_or_else(|| input.saturating_add(output)),
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"input_tokens\":");
        uint(out, self.input);
        out.extend_from_slice(b",\"input_tokens_details\":{\"cached_tokens\":");
        uint(out, self.cached);
        out.extend_from_slice(b"},\"output_tokens\":");
        uint(out, self.output);
        out.extend_from_slice(b",\"output_tokens_details\":{\"reasoning_tokens\":");
        uint(out, self.reasoning);
        out.extend_from_slice(b"},\"total_tokens\":");
        uint(out, self.total);
        out.push(b'}');
    }
}

/// The `error` of a failed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn server_error(message: impl Into<String>) -> Failure {
        Failure {
            code: "server_error",
            message: message.into(),
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"code\":\"");
        out.extend_from_slice(self.code.as_bytes());
        out.push(b'"');
        key(out, "message");
        string(out, &self.message);
        out.push(b'}');
    }
}

/// An upstream error as the `error` of a failed response, in the codes Codex acts on:
/// `rate_limit_exceeded` ("try again in N s" sets its wait), `context_length_exceeded`,
/// `insufficient_quota`, else `server_error` or `invalid_prompt`.
pub(crate) fn failure(
    status: u16,
    google: Option<&str>,
    message: &str,
    after: Option<u64>,
) -> Failure {
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
    Failure { code, message }
}
