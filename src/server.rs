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
use tokio::sync::Semaphore;

use crate::log;
use crate::routes::{self, State};

/// Serves `listener` until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish for up to `SHUTDOWN_GRACE_SECS` before returning.
///
/// The listener is bound by the caller, so tests run the real server on port 0.
pub async fn run(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // A client that trickles its headers (slowloris) cannot hold a connection.
        .header_read_timeout(state.config.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // With `--use-http2`, Cloud Run may multiplex up to its maximum concurrency (1000) on
        // one connection; hyper's default of 200 streams would queue the rest.
        .max_concurrent_streams(1000);
    let graceful = GracefulShutdown::new();
    let grace = state.config.shutdown_grace;
    tokio::pin!(shutdown);

    // Each connection holds a permit. At the cap the loop stops accepting, so new connections
    // wait in the kernel's listen queue instead of taking memory here.
    let permits = Arc::new(Semaphore::new(state.config.max_connections));
    // At most one warning a minute while the cap is reached.
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    last_warning = Some(tokio::time::Instant::now());
                    log::warning(&format!(
                        "connection limit reached (MAX_CONNECTIONS={}); new connections wait",
                        state.config.max_connections
                    ));
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break, // the semaphore is never closed
                    },
                    () = &mut shutdown => break,
                }
            }
        };
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
                    drop(permit);
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
