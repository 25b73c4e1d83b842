//! The project id from the metadata server, as on Cloud Run: asked once, at startup.

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;

use super::HttpClient;
use super::pool::Failure;
use crate::body::Pieces;
use crate::config::Env;

/// Reads the project id from the metadata server, as on Cloud Run. Honours
/// `GCE_METADATA_HOST` (read through `env`) the way google-cloud-auth does, so tests can fake
/// it.
pub async fn project_from_metadata(client: &HttpClient, env: &dyn Env) -> Result<String, String> {
    let host = env
        .var("GCE_METADATA_HOST")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "metadata.google.internal".into());
    let uri = format!("http://{host}/computeMetadata/v1/project/project-id");
    let request = Request::get(&uri)
        .header("metadata-flavor", "Google")
        .body(Pieces::default())
        .map_err(|_| format!("GCE_METADATA_HOST {host:?} does not make a valid URL"))?;
    let fetch = async {
        let response = client.send(request).await.map_err(|e| match e {
            Failure::Connect(e) => error_chain(e.as_ref()),
            Failure::Unsent(e) | Failure::Sent(e) => error_chain(&e),
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the metadata server answered {status}"));
        }
        // SECURITY: the id becomes part of every upstream path; it is checked as
        // GOOGLE_CLOUD_PROJECT is, and not quoted back, since it could be anything.
        match std::str::from_utf8(&body).map(str::trim) {
            Ok(id) if crate::config::is_project_id(id) => Ok(id.to_owned()),
            _ => Err("the metadata server's answer is not a valid project id".to_owned()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(3), fetch).await {
        Ok(result) => result.map_err(|e| format!("{uri}: {e}")),
        Err(_) => Err(format!("{uri}: no answer within 3s")),
    }
}

/// An error with its causes, for startup messages: "client error (Connect)" alone says little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
