//! OpenAI's API: chat completions and embeddings. Both name their model in the body; errors
//! are `{"error": {"message", "type", "param", "code"}}`, and SSE `data:` events in a stream.

use bytes::Bytes;

use crate::error::{Dialect, ProxyError};

pub const DIALECT: Dialect = Dialect {
    body: error_body,
    event: b"data: ",
};

/// The error as OpenAI's SDKs read it.
fn error_body(error: &ProxyError) -> Bytes {
    serde_json::json!({
        "error": {
            "message": error.message(),
            "type": error_type(error),
            "param": null,
            "code": error.code(),
        }
    })
    .to_string()
    .into()
}

/// OpenAI's error `type`: the SDKs branch on the status, people read this.
fn error_type(error: &ProxyError) -> &'static str {
    match error {
        ProxyError::Upstream(e) => match e.status {
            429 => "rate_limit_error",
            400..500 => "invalid_request_error",
            _ => "api_error",
        },
        ProxyError::Forbidden(_) => "permission_error",
        ProxyError::BadGateway { .. }
        | ProxyError::UpstreamRefused { .. }
        | ProxyError::GatewayTimeout(_)
        | ProxyError::Busy(_) => "api_error",
        ProxyError::BadRequest { .. }
        | ProxyError::Unauthorized(_)
        | ProxyError::NotFound(_)
        | ProxyError::MethodNotAllowed { .. }
        | ProxyError::RequestTimeout(_)
        | ProxyError::PayloadTooLarge { .. } => "invalid_request_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::ProxyBody;
    use crate::error::{Origin, UpstreamError};
    use http::{HeaderValue, Response, StatusCode, header};
    use http_body_util::BodyExt;

    async fn body_json(response: Response<ProxyBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_error_has_openai_shape_and_its_status() {
        let cases = [
            (ProxyError::bad_request("invalid_json", "x"), 400),
            (ProxyError::Unauthorized("no key"), 401),
            (ProxyError::Forbidden("no".into()), 403),
            (ProxyError::NotFound("gone".into()), 404),
            (ProxyError::MethodNotAllowed { allow: "GET" }, 405),
            (ProxyError::PayloadTooLarge { limit: 10 }, 413),
            (ProxyError::RequestTimeout("slow".into()), 408),
            (ProxyError::bad_gateway("upstream_unreachable", "down"), 502),
            (ProxyError::GatewayTimeout("slow".into()), 504),
            (ProxyError::Busy("full".into()), 503),
            (ProxyError::Upstream(Box::new(busy(false))), 429),
            (
                ProxyError::UpstreamRefused {
                    status: 403,
                    cause: "PERMISSION_DENIED no".into(),
                    from: Origin::Vertex,
                    sent: "a Google access token in Authorization".into(),
                },
                502,
            ),
        ];
        for (error, status) in cases {
            let message = error.message();
            let response = error.into_response(DIALECT);
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let json = body_json(response).await;
            let error = &json["error"];
            assert_eq!(error["message"], message.as_str());
            assert!(error["type"].is_string() && error["code"].is_string());
            assert!(error.get("param").is_some());
        }
    }

    fn busy(in_stream: bool) -> UpstreamError {
        UpstreamError {
            from: Origin::Vertex,
            status: 429,
            message: "Resource exhausted.".into(),
            code: Some("RESOURCE_EXHAUSTED".into()),
            retry_after: Some(HeaderValue::from_static("5")),
            in_stream,
            anthropic: None,
        }
    }

    #[tokio::test]
    async fn an_upstream_error_keeps_its_status_and_in_a_stream_is_one_event() {
        let response = ProxyError::Upstream(Box::new(busy(false))).into_response(DIALECT);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let json = body_json(response).await;
        assert_eq!(json["error"]["code"], "RESOURCE_EXHAUSTED");
        assert_eq!(json["error"]["type"], "rate_limit_error");
        let response = ProxyError::Upstream(Box::new(busy(true))).into_response(DIALECT);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        let event = text
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(event).unwrap();
        assert_eq!(json["error"]["message"], "Resource exhausted.");
    }

    #[tokio::test]
    async fn method_not_allowed_names_the_allowed_methods() {
        let response = ProxyError::MethodNotAllowed { allow: "POST" }.into_response(DIALECT);
        assert_eq!(response.headers()[header::ALLOW], "POST");
        let json = body_json(response).await;
        assert!(json["error"]["message"].as_str().unwrap().contains("POST"));
    }
}
