//! Gemini's own API (Gemini CLI, the google-genai SDKs and what is built on them): the model is
//! named in the path, `models/{model}:{method}`, and errors are Google's,
//! `{"error": {"code", "message", "status"}}`. Vertex serves the same methods with the same
//! bodies, so nothing of the request or the answer is translated.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::{Dialect, ProxyError};
use crate::models::{Kind, Route};

pub const DIALECT: Dialect = Dialect {
    body: error_body,
    event: b"data: ",
};

/// The methods served, as Gemini's paths name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    GenerateContent,
    StreamGenerateContent,
    CountTokens,
    EmbedContent,
    BatchEmbedContents,
}

impl Method {
    pub fn parse(name: &str) -> Option<Method> {
        Some(match name {
            "generateContent" => Method::GenerateContent,
            "streamGenerateContent" => Method::StreamGenerateContent,
            "countTokens" => Method::CountTokens,
            "embedContent" => Method::EmbedContent,
            "batchEmbedContents" => Method::BatchEmbedContents,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::GenerateContent => "generateContent",
            Method::StreamGenerateContent => "streamGenerateContent",
            Method::CountTokens => "countTokens",
            Method::EmbedContent => "embedContent",
            Method::BatchEmbedContents => "batchEmbedContents",
        }
    }

    /// Whether it asks for embeddings rather than content.
    pub fn embeds(self) -> bool {
        matches!(self, Method::EmbedContent | Method::BatchEmbedContents)
    }
}

/// A path of Gemini's API: `…/models/{model}:{method}`, in any of the forms the clients send
/// (`/v1beta/models/…`, `/v1/projects/P/locations/L/publishers/google/models/…`, …). The
/// client's project and location, when it names them, are not used: the alias decides.
pub fn parse_path(path: &str) -> Option<(&str, Method)> {
    let (model, method) = split_path(path)?;
    Some((model, Method::parse(method)?))
}

/// [`parse_path`]'s model and method, the method as the path names it, served or not.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = ["/v1beta/", "/v1alpha/", "/v1/", "/v1beta1/"]
        .iter()
        .find_map(|version| path.strip_prefix(version))?;
    let rest = match rest.strip_prefix("projects/") {
        // `projects/P/locations/L/publishers/google/models/M:method`
        Some(scoped) => {
            let mut parts = scoped.splitn(4, '/');
            let (_, locations, _, rest) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            (locations == "locations").then_some(rest)?
        }
        None => rest,
    };
    let rest = rest.strip_prefix("publishers/google/").unwrap_or(rest);
    let named = rest.strip_prefix("models/")?;
    let (model, method) = named.rsplit_once(':')?;
    if model.is_empty() || model.contains('/') && !model.starts_with("google/") {
        return None;
    }
    Some((model, method))
}

/// Whether a request is to Gemini's API by its path's shape, whether or not it names a
/// method the proxy serves: its errors, 404 and 405 included, are then in Google's shape.
/// Under `/v1/`, which OpenAI's API shares, only a POST to `…/models/{m}:{method}` is.
pub fn is_gemini_path(method: &http::Method, path: &str) -> bool {
    let versioned = ["/v1beta/", "/v1alpha/", "/v1beta1/"];
    versioned.iter().any(|v| path.starts_with(v))
        || ["/v1beta", "/v1alpha"].contains(&path)
        || (method == http::Method::POST
            && path.starts_with("/v1/")
            && has_method(path)
            && path.contains("/models/"))
}

/// Whether the path's last segment names a method (`models/flash:generateContent`). Bytes
/// and memchr: every request asks, and `str`'s reverse split cost 1 k instructions.
fn has_method(path: &str) -> bool {
    let path = path.as_bytes();
    let last = memchr::memrchr(b'/', path).map_or(path, |at| &path[at + 1..]);
    memchr::memchr(b':', last).is_some()
}

/// The name a path gives, as the alias table reads it: a raw Gemini id (`gemini-2.5-pro`)
/// is Google's (`google/gemini-2.5-pro`) when only that resolves; a name that resolves
/// neither way stays as the client sent it, for the error to quote.
pub fn model_name(path_model: &str, resolves: impl Fn(&str) -> bool) -> String {
    let google = format!("google/{path_model}");
    match !resolves(path_model) && !path_model.contains('/') && resolves(&google) {
        true => google,
        false => path_model.to_owned(),
    }
}

/// The query Vertex gets, with its `?`: `alt` alone, as the client gave it. Google's front
/// end reads system parameters from the query (`$key`, `access_token`, `userProject`,
/// `fields`, in `$` and percent-encoded forms too), which would act on the proxy's credential
/// and billing or hide `usageMetadata`; so nothing else of the client's goes on, and an `alt`
/// other than SSE or JSON, whose answer could not be read or relayed as it is, is refused.
pub fn upstream_query(query: Option<&str>) -> Result<&'static str, ProxyError> {
    let mut kept = "";
    for value in (query.unwrap_or_default().split('&')).filter_map(|p| p.strip_prefix("alt=")) {
        let alt = match value {
            "sse" => "?alt=sse",
            "json" => "?alt=json",
            _ => "",
        };
        if alt.is_empty() || !(kept.is_empty() || kept == alt) {
            return Err(ProxyError::bad_request(
                "invalid_query",
                "alt must be sse or json, given once: the proxy relays answers as SSE or JSON",
            ));
        }
        kept = alt;
    }
    Ok(kept)
}

/// The key in a `key=` query parameter, which Google's clients may send instead of a header.
pub fn query_key(query: Option<&str>) -> Option<&str> {
    (query?.split('&')).find_map(|pair| pair.strip_prefix("key="))
}

/// The methods a route serves, as `supportedGenerationMethods` lists them; `None` for a model
/// Gemini's API does not reach (Claude, a private service, another publisher's).
pub fn methods(route: &Route) -> Option<&'static [&'static str]> {
    match route.kind {
        Kind::VertexOpenAi if route.model.starts_with("google/") => {
            Some(&["generateContent", "streamGenerateContent", "countTokens"])
        }
        Kind::VertexEmbeddings => Some(&["embedContent", "batchEmbedContents"]),
        _ => None,
    }
}

/// A model as `models.list` and `models.get` show it.
pub fn model_object(alias: &str, route: &Route) -> Option<Value> {
    let methods = methods(route)?;
    Some(json!({
        "name": format!("models/{alias}"),
        "baseModelId": route.model.strip_prefix("google/").unwrap_or(&route.model),
        "displayName": alias,
        "description": format!("{} on Vertex AI", route.model),
        "supportedGenerationMethods": methods,
    }))
}

/// Google's status name for an HTTP status.
fn google_status(status: u16) -> &'static str {
    match status {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 | 405 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// The error as google-genai reads it: Vertex's own status name when it gave one.
fn error_body(error: &ProxyError) -> Bytes {
    let status = match error {
        ProxyError::Upstream(e) if e.in_stream => e.status,
        _ => error.status().as_u16(),
    };
    let name = match error {
        ProxyError::Upstream(e) => e.code.as_deref().filter(|c| is_status_name(c)),
        _ => None,
    };
    json!({"error": {
        "code": status,
        "message": error.message(),
        "status": name.unwrap_or(google_status(status)),
    }})
    .to_string()
    .into()
}

/// Google's status names are upper snake case (`RESOURCE_EXHAUSTED`); Claude's and OpenAI's
/// error types are not.
fn is_status_name(code: &str) -> bool {
    !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_form_names_its_model_and_method() {
        for (path, model, method) in [
            (
                "/v1beta/models/gemini-3.8-flash:streamGenerateContent",
                "gemini-3.8-flash",
                Method::StreamGenerateContent,
            ),
            (
                "/v1/models/flash:generateContent",
                "flash",
                Method::GenerateContent,
            ),
            (
                "/v1alpha/models/flash:countTokens",
                "flash",
                Method::CountTokens,
            ),
            (
                "/v1beta1/projects/p/locations/us-central1/publishers/google/models/flash:generateContent",
                "flash",
                Method::GenerateContent,
            ),
            (
                "/v1/projects/p/locations/global/publishers/google/models/embed:embedContent",
                "embed",
                Method::EmbedContent,
            ),
            (
                "/v1beta1/publishers/google/models/flash:batchEmbedContents",
                "flash",
                Method::BatchEmbedContents,
            ),
        ] {
            assert_eq!(parse_path(path), Some((model, method)), "{path}");
        }
        for path in [
            "/v1beta/models/flash",
            "/v1beta/models/:generateContent",
            "/v1beta/models/flash:delete",
            "/v2/models/flash:generateContent",
            "/v1/projects/p/zones/z/publishers/google/models/flash:generateContent",
            "/v1/chat/completions",
        ] {
            assert_eq!(parse_path(path), None, "{path}");
        }
    }

    #[test]
    fn the_key_never_goes_upstream() {
        assert_eq!(
            upstream_query(Some("alt=sse&key=sk_1")).unwrap(),
            "?alt=sse"
        );
        assert_eq!(
            upstream_query(Some("key=sk_1&$key=x&%6Bey=x&fields=a")).unwrap(),
            ""
        );
        assert_eq!(
            upstream_query(Some("alt=json&alt=json")).unwrap(),
            "?alt=json"
        );
        assert_eq!(upstream_query(None).unwrap(), "");
        for refused in ["alt=proto", "alt=", "alt=sse&alt=json"] {
            assert!(upstream_query(Some(refused)).is_err(), "{refused}");
        }
        assert_eq!(query_key(Some("alt=sse&key=sk_1")), Some("sk_1"));
        assert_eq!(query_key(Some("alt=sse")), None);
        let raw = |name: &str| name == "flash" || name.starts_with("google/");
        assert_eq!(model_name("gemini-2.5-pro", raw), "google/gemini-2.5-pro");
        assert_eq!(model_name("flash", raw), "flash");
        // Neither an alias nor a raw id: the error quotes what the client sent.
        assert_eq!(model_name("nope", |name| name == "flash"), "nope");
    }
}
