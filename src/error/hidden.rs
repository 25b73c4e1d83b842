//! What a key holder may not read in an error: the Vertex project's id, which Google's
//! messages quote, and a private service's host, which the proxy's own messages name for the
//! log.

use bytes::Bytes;

use super::ProxyError;

impl ProxyError {
    /// The error as a key holder may read it: without the Vertex project's id (`PROJECT` in
    /// its place; Google's messages quote `projects/…/locations/…`) or a private service's
    /// host (`service`: its authority, `host:port`). The log keeps the whole text.
    pub fn for_client(mut self, project: &str, service: Option<&str>) -> ProxyError {
        let hide = |text: &str| hidden(text, project, service);
        match &mut self {
            ProxyError::Upstream(e) => {
                e.message = hide(&e.message);
                if let Some(anthropic) = &e.anthropic
                    && let Ok(text) = std::str::from_utf8(anthropic)
                {
                    e.anthropic = Some(Bytes::from(hide(text)));
                }
            }
            ProxyError::BadGateway { message, .. } | ProxyError::GatewayTimeout(message) => {
                *message = hide(message);
            }
            _ => {}
        }
        self
    }
}

/// `text` with every `projects/ID` segment, and the project id itself wherever it stands as
/// a word, as `PROJECT`; and a service's authority and host, where given, gone from our own
/// messages ("the service (HOST)") and elsewhere as "the service".
pub(crate) fn hidden(text: &str, project: &str, service: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("projects/") {
        let (before, after) = rest.split_at(at + "projects/".len());
        out.push_str(before);
        let id = after.find(|c: char| !is_word(c)).unwrap_or(after.len());
        out.push_str(if id > 0 { "PROJECT" } else { "" });
        rest = &after[id..];
    }
    out.push_str(rest);
    let mut out = replace_word(&out, project, "PROJECT");
    if let Some(authority) = service {
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, port)| {
                match port.bytes().all(|b| b.is_ascii_digit()) {
                    true => host,
                    false => authority,
                }
            });
        for name in [authority, host] {
            out = out.replace(&format!(" ({name})"), "");
            out = replace_word(&out, name, "the service");
        }
    }
    out
}

/// Characters of a project id or a host name: a match inside a longer word is not one.
fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// `text` with each occurrence of `word` that stands alone replaced by `with`. A word may
/// end a sentence, or be followed by a port: a `.` or `:` after it does not join it to more.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    if word.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(word) {
        let end = at + word.len();
        let alone = !text[..at].ends_with(is_word)
            && !text[end..].starts_with(|c: char| is_word(c) && c != '.' && c != ':');
        if alone && at >= last {
            out.push_str(&text[last..at]);
            out.push_str(with);
            last = end;
        }
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Origin, UpstreamError};

    #[test]
    fn what_a_key_holder_reads_has_no_project_and_no_service_host() {
        let google = "Permission denied on projects/my-proj-1/locations/global and projects/123456789; \
                      project my-proj-1. (not my-proj-10, my-proj-1x or xmy-proj-1)";
        assert_eq!(
            hidden(google, "my-proj-1", None),
            "Permission denied on projects/PROJECT/locations/global and projects/PROJECT; \
             project PROJECT. (not my-proj-10, my-proj-1x or xmy-proj-1)"
        );
        let ours = "could not connect to the service (10.0.0.7): refused by 10.0.0.7:8443";
        assert_eq!(
            hidden(ours, "p", Some("10.0.0.7:8443")),
            "could not connect to the service: refused by the service"
        );
        let error = ProxyError::Upstream(Box::new(UpstreamError {
            from: Origin::Vertex,
            status: 404,
            message: "no model in projects/p-1/locations/x".into(),
            code: None,
            retry_after: None,
            in_stream: false,
            anthropic: Some(Bytes::from_static(
                br#"{"type":"error","error":{"type":"not_found_error","message":"projects/p-1 says no"}}"#,
            )),
        }));
        let ProxyError::Upstream(shown) = error.for_client("p-1", None) else {
            unreachable!()
        };
        assert_eq!(shown.message, "no model in projects/PROJECT/locations/x");
        assert_eq!(
            shown.anthropic.unwrap(),
            r#"{"type":"error","error":{"type":"not_found_error","message":"projects/PROJECT says no"}}"#
        );
    }
}
