//! The accept loop: HTTP/1.1 and h2c on one port, and a graceful shutdown with a bounded drain.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::log;
use crate::routes::{self, State};

/// A client has this long to send its request headers; slowloris cannot hold a connection.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish for up to `SHUTDOWN_GRACE_SECS` before returning.
///
/// The listener is bound by the caller, so tests run the real server on port 0.
pub async fn run(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let grace = state.config.shutdown_grace;
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, most likely: back off instead of spinning.
                        log::error(&format!("accept failed: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(routes::handle(state, request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection.into_owned());
                tokio::spawn(async move {
                    // Connection errors (resets, bad requests) are the client's business.
                    let _ = connection.await;
                });
            }
            () = &mut shutdown => break,
        }
    }

    // Closing the listener makes new connections fail at once instead of queueing.
    drop(listener);
    log::info(&format!(
        "shutdown: no longer accepting; waiting up to {}s for requests in flight",
        grace.as_secs()
    ));
    tokio::select! {
        () = graceful.shutdown() => log::info("shutdown: all requests finished"),
        () = tokio::time::sleep(grace) => log::warning(
            "shutdown: grace period over; cutting the requests still in flight",
        ),
    }
}

/// Resolves on SIGTERM (Cloud Run's stop signal) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
