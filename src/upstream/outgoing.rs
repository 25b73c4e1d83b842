//! A request kept whole to go upstream, again if need be, and the headers each attempt gets.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};

use super::headers::request_headers;
use crate::body::Pieces;
use crate::models::Auth;

/// A request ready to go upstream, kept whole so that it can be sent again. Its headers are
/// made for each attempt from what they come from (the client's, the credential, the kind's
/// own) and moved into it: most requests make one attempt, and a copy kept for another cost
/// about 1 k instructions and two allocations a request.
pub struct Outgoing<'a> {
    /// The client's headers, of which the allowlisted ones go upstream.
    client: Cow<'a, HeaderMap>,
    /// The kind's own headers (Claude's `anthropic-beta`), added last.
    extra: HeaderMap,
    /// The credential's headers, placed; replaced when the upstream refuses them.
    pub(super) credential: Arc<HeaderMap>,
    /// The body's pieces, which share the client's buffer.
    body: Vec<Bytes>,
    /// Where the credential comes from, for one fetched anew.
    pub(super) auth: Auth,
}

impl<'a> Outgoing<'a> {
    pub fn new(
        (client, extra): (Cow<'a, HeaderMap>, HeaderMap),
        credential: Arc<HeaderMap>,
        body: Vec<Bytes>,
        auth: Auth,
    ) -> Outgoing<'a> {
        Outgoing {
            client,
            extra,
            credential,
            body,
            auth,
        }
    }

    /// One attempt's request.
    pub(super) fn request(&self, uri: &Uri) -> Request<Pieces> {
        let mut headers = request_headers(&self.client, &*self.credential);
        for (name, value) in &self.extra {
            headers.insert(name.clone(), value.clone());
        }
        let mut request = Request::new(Pieces::new(self.body.iter().cloned()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers;
        request
    }
}
