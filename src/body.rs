//! The one response body type the proxy serves, whether it made the bytes or Vertex did.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Vertex's body, handed on frame by frame: boxing it does not buffer.
pub fn stream(incoming: hyper::body::Incoming) -> ProxyBody {
    incoming.map_err(BoxError::from).boxed()
}
