//! The connections upstream: a worker's TLS client, and what a failed connection means.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;

use super::pool::{Failure, Pool};
use crate::config::Config;
use crate::error::{Origin, ProxyError};

pub type HttpClient = Pool;

/// What an upstream client is built from.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// `UPSTREAM_CA_FILE`'s certificates, trusted besides the built-in roots.
    pub extra_roots: Arc<[CertificateDer<'static>]>,
    /// `MAX_UPSTREAM_CONNECTIONS`: HTTP/2 connections per origin and worker.
    pub max_connections: usize,
}

impl ClientSettings {
    pub fn of(config: &Config) -> ClientSettings {
        ClientSettings {
            connect_timeout: config.timeouts.connect,
            extra_roots: config.upstream_roots.as_slice().into(),
            max_connections: config.max_upstream_connections,
        }
    }
}

/// A worker's connections for every upstream call ([`Pool`]): HTTP/2 when ALPN offers it,
/// else HTTP/1.1, trusting the built-in roots and `extra_roots` (`UPSTREAM_CA_FILE`). There is
/// a connect timeout but no total timeout: Cloud Run's request timeout bounds streams.
pub fn client(settings: &ClientSettings) -> HttpClient {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // Validated when the configuration was read.
    let _ = roots.add_parsable_certificates(settings.extra_roots.iter().cloned());
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(settings.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Pool::new(https, settings.max_connections)
}

/// Maps a failure to what the caller should be told. Messages name the host and the kind of
/// failure, never a header.
pub(super) fn classify(
    failure: &Failure,
    (from, host): (Origin, &str),
    connect_timeout: Duration,
) -> ProxyError {
    let name = from.noun();
    let error: &(dyn std::error::Error + 'static) = match failure {
        Failure::Connect(e) => e.as_ref(),
        Failure::Unsent(e) | Failure::Sent(e) => e,
    };
    let connecting = matches!(failure, Failure::Connect(_));
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
            && connecting
        {
            return ProxyError::GatewayTimeout(format!(
                "connecting to {name} ({host}) timed out after {}s",
                connect_timeout.as_secs()
            ));
        }
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return ProxyError::bad_gateway(
                "upstream_tls_error",
                format!("TLS with {name} ({host}) failed: {tls}"),
            );
        }
        cause = current.source();
    }
    match failure {
        Failure::Connect(_) => {
            // "tcp connect error" says little; its cause says what happened.
            let reason = error.source().unwrap_or(error).to_string();
            ProxyError::bad_gateway(
                "upstream_unreachable",
                format!("could not connect to {name} ({host}): {reason}"),
            )
        }
        Failure::Unsent(_) => ProxyError::bad_gateway(
            "upstream_error",
            format!("the connection to {name} ({host}) failed before the request was sent"),
        ),
        Failure::Sent(_) => during_the_request(from),
    }
}

/// The upstream closed the connection after it had the request and before its answer came,
/// or broke a stream before its first event: it may have begun work on the request (and
/// billed it), so the proxy does not send it again. The client's SDK retries a 502 by
/// itself, at its own pace, which is where that choice belongs.
pub(super) fn during_the_request(from: Origin) -> ProxyError {
    ProxyError::bad_gateway(
        "upstream_error",
        format!(
            "{} closed the connection during the request, before its answer was complete; \
             it may have begun work on it, so the proxy did not send it again",
            from.subject()
        ),
    )
}
