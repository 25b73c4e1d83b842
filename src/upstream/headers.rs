//! Which headers cross the proxy, in each direction: allowlists, so that nothing of the
//! client's reaches the upstream unless it is known to be harmless, credentials above all.

use std::borrow::Borrow;

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Request headers a client may send on to Vertex. Everything else stays here: the client's
/// credentials, cookies, hop-by-hop headers and anything we have not thought about.
/// `accept-encoding` is not among them: see [`request_headers`]. (Statics, not constants: a
/// constant array is built and dropped again at each use.)
static FORWARDED_REQUEST_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::USER_AGENT,
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("x-request-id"),
];

/// Response headers Vertex may send back. The SDKs use `retry-after` to pace retries.
static FORWARDED_RESPONSE_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CACHE_CONTROL,
    header::RETRY_AFTER,
    HeaderName::from_static("retry-after-ms"),
    HeaderName::from_static("x-request-id"),
];

/// The request headers that go to Vertex: the allowlisted client headers, then the
/// credential's own (`authorization`, maybe `x-goog-user-project`), then the two the proxy
/// sets itself.
///
/// The credential is borrowed: a worker's copy serves every request for a second.
pub fn request_headers(client: &HeaderMap, credential: impl Borrow<HeaderMap>) -> HeaderMap {
    // Room for the usual few; a map of more than 6 would be one allocation over 1 KiB.
    let mut headers = HeaderMap::with_capacity(6);
    copy_allowed(client, &mut headers, &FORWARDED_REQUEST_HEADERS);
    for (name, value) in credential.borrow() {
        headers.insert(name.clone(), value.clone());
    }
    // The body was checked to be a JSON object (on Gemini's API, to start as one); say so
    // whatever the client sent (curl -d sends a form type).
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Uncompressed, whatever the client accepts, so that usage and cost can be read from the
    // answer's tail as it passes. The answers are small text, the hop to Vertex is Google's
    // own network, and decompressing every stream would cost CPU on each byte.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers
}

/// Vertex's response with only the allowlisted headers kept; status and body untouched.
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(FORWARDED_RESPONSE_HEADERS.len());
    copy_allowed(upstream, &mut headers, &FORWARDED_RESPONSE_HEADERS);
    headers
}

/// Walks the headers present rather than looking up every allowed name: a request has few
/// of them, and comparing well-known names costs less than hashing.
fn copy_allowed(from: &HeaderMap, to: &mut HeaderMap, allowed: &[HeaderName]) {
    for (name, value) in from {
        if allowed.contains(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowlisted_headers_cross_and_the_credential_wins() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
            ("user-agent", "OpenAI/Python 1.0"),
            ("traceparent", "00-abc-def-01"),
            ("x-request-id", "r1"),
            ("authorization", "Bearer client-key"),
            ("x-api-key", "client-key"),
            ("cookie", "session=1"),
            ("connection", "keep-alive"),
            ("x-goog-user-project", "someone-else"),
            ("x-forwarded-for", "1.2.3.4"),
        ] {
            client.append(name, HeaderValue::from_static(value));
        }
        let mut credential = HeaderMap::new();
        credential.insert("authorization", HeaderValue::from_static("Bearer google"));
        let headers = request_headers(&client, credential);
        assert_eq!(headers["authorization"], "Bearer google");
        assert_eq!(headers.get_all("authorization").iter().count(), 1);
        for gone in [
            "x-api-key",
            "cookie",
            "connection",
            "x-goog-user-project",
            "x-forwarded-for",
        ] {
            assert!(headers.get(gone).is_none(), "{gone} was forwarded");
        }
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["accept-encoding"], "identity");
        assert_eq!(headers.len(), 7);
    }
}
