//! The accept loop: HTTP/1.1 and h2c on one port, one worker thread per core, and a graceful
//! shutdown with a bounded drain.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::state::State;
use crate::{lock, log, routes};

mod activity;

use activity::{Activity, Close};

/// Serves `listener` until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish for up to `SHUTDOWN_GRACE_SECS` before returning.
///
/// Thread per core: the calling thread, which must be on a current-thread runtime, and
/// `WORKER_THREADS - 1` more threads each run a runtime of their own, accept from the shared
/// socket, and keep their own pool of upstream connections. A request then stays on one thread
/// from accept to Vertex and back: no work stealing, no cross-thread wake-ups, and memory freed
/// on the thread that allocated it, for about 1.4x the throughput of one work-stealing runtime
/// (BENCHMARKS.md). h2c streams, which may all arrive on one connection, are spread instead.
///
/// The listener is bound by the caller, so tests run the real server on port 0, in process
/// (`tests/support`) as well as in the binary.
pub async fn run(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(e) => return log::error(&format!("cannot share the listening socket: {e}")),
    };
    let mut runtimes = Vec::new();
    for _ in 1..state.config.worker_threads {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|runtime| Ok((runtime, listener.try_clone()?)));
        match runtime {
            Ok(runtime) => runtimes.push(runtime),
            Err(e) => {
                log::warning(&format!("serving with fewer worker threads: {e}"));
                break;
            }
        }
    }
    let (phase, phases) = watch::channel(Phase::Serving);
    // Each worker holds a sender until it has closed its copy of the listening socket.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    let shared = Arc::new(Shared {
        permits: Arc::new(Semaphore::new(state.config.max_connections)),
        last_warning: Mutex::new(None),
        workers: Mutex::new(vec![Handle::current()]),
        next: AtomicUsize::new(0),
    });

    let mut reports = Vec::new();
    let mut threads = Vec::new();
    for (index, (runtime, listener)) in runtimes.into_iter().enumerate() {
        let worker = Worker {
            // Each worker reaches Vertex over connections of its own, and reuses its own copy
            // of the token.
            state: Arc::new(state.for_worker()),
            shared: shared.clone(),
            phases: phases.clone(),
            open: open.clone(),
        };
        let (report, reported) = oneshot::channel();
        let mut phases = phases.clone();
        let handle = runtime.handle().clone();
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{}", index + 1))
            .spawn(move || {
                runtime.block_on(async move {
                    let _ = report.send(worker.serve(listener).await);
                    // Keep running until every worker is done: this runtime may hold h2c
                    // streams of a connection that another worker is still draining.
                    let _ = phases.wait_for(|p| *p == Phase::Exit).await;
                });
            });
        match spawned {
            Ok(thread) => {
                threads.push(thread);
                reports.push(reported);
                // Only a runtime that runs gets streams.
                lock(&shared.workers).push(handle);
            }
            Err(e) => log::warning(&format!("serving with fewer worker threads: {e}")),
        }
    }

    let grace = state.config.timeouts.shutdown_grace;
    let stopping = state.upstream.stopping().clone();
    let serving = Worker {
        state,
        shared,
        phases,
        open,
    }
    .serve(listener);
    tokio::pin!(serving);
    let mut ended = None;
    tokio::select! {
        // Only if this worker cannot listen at all; the others stop with it.
        drained = &mut serving => ended = Some(drained),
        () = shutdown => {}
    }
    let _ = phase.send(Phase::Draining);
    // Requests in flight stop retrying, and answer with what they have.
    stopping.begin();
    // Every worker drains at once, within the same grace period. "No longer accepting" is
    // said only once every copy of the socket is closed and new connections are refused.
    let closed = async {
        while all_closed.recv().await.is_some() {}
        log::info(&format!(
            "shutdown: no longer accepting; waiting up to {}s for requests in flight",
            grace.as_secs()
        ));
    };
    let first = async {
        match ended {
            Some(drained) => drained,
            None => serving.await,
        }
    };
    let (mut drained, ()) = tokio::join!(first, closed);
    for reported in reports {
        drained &= reported.await.unwrap_or(false);
    }
    let _ = phase.send(Phase::Exit);
    let _ =
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    if drained {
        log::info("shutdown: all requests finished");
    } else {
        log::warning("shutdown: grace period over; cutting the requests still in flight");
    }
}

/// Resolves once the server stops serving.
async fn stopping(phases: &mut watch::Receiver<Phase>) {
    // The guard `wait_for` returns is not `Send`: it must not live across an await.
    let _ = phases.wait_for(|p| *p != Phase::Serving).await;
}

/// The most an HTTP/1.1 request's line and headers may take; HTTP/2's header list is
/// hyper's 16 KiB.
pub const MAX_HEAD_BYTES: usize = 72 * 1024;
/// How often an h2c connection is pinged, and how long the answer may take.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining,
    Exit,
}

/// What the workers share.
struct Shared {
    /// One per connection, whichever worker accepted it: `MAX_CONNECTIONS`.
    permits: Arc<Semaphore>,
    /// When the connection cap was last reported, so that it is at most once a minute.
    last_warning: Mutex<Option<Instant>>,
    /// Every running worker's runtime, for spreading h2c streams; the next one to use.
    workers: Mutex<Vec<Handle>>,
    next: AtomicUsize,
}

/// One thread's share of the server.
struct Worker {
    state: Arc<State>,
    shared: Arc<Shared>,
    phases: watch::Receiver<Phase>,
    /// Dropped once this worker's copy of the listening socket is closed.
    open: mpsc::Sender<()>,
}

impl Worker {
    /// Accepts until told to stop, then drains this worker's connections for up to the grace
    /// period. True when every request finished in time.
    async fn serve(mut self, listener: std::net::TcpListener) -> bool {
        let open = self.open;
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                log::error(&format!("a worker cannot listen: {e}"));
                return true;
            }
        };
        let state = self.state;
        if state.config.upstream_preconnect {
            // Beside the token's warm-up, and after the socket is listening.
            state.upstream.preconnect(state.kinds.origins());
        }
        let mut builder = auto::Builder::new(Spread(self.shared.clone()));
        // A client that trickles its headers (slowloris) cannot hold a connection: the
        // connection's watcher closes one with no request in progress (below), which for
        // HTTP/1.1 is hyper's header read timeout without its cost. Hyper's own arms a new
        // timer for each request: an allocation, and, being due sooner than the timers the
        // worker sleeps on while the upstream answers, a wake-up of the worker's poll by
        // `eventfd`: two system calls a request.
        builder
            .http1()
            .header_read_timeout(None)
            // A request's head waits in this buffer before any key is checked: hyper's default
            // (about 400 KB) would let unauthenticated connections hold 800 MB at the default
            // MAX_CONNECTIONS. Clients' heads are a few KB; a larger one gets 431.
            .max_buf_size(MAX_HEAD_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            // With `--use-http2`, Cloud Run may multiplex up to its maximum concurrency (1000)
            // on one connection; hyper's default of 200 streams would queue the rest.
            .max_concurrent_streams(1000)
            // A peer that has gone without closing (a dead front end, a cut network) is found
            // by an unanswered ping.
            .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
        // Each connection's task holds a clone until it ends: all are gone when this closes.
        let (connections, mut all_ended) = mpsc::channel::<()>(1);
        let phases = self.phases.clone();
        let stop = self.phases.wait_for(|p| *p != Phase::Serving);
        tokio::pin!(stop);

        loop {
            // At the cap the loop stops accepting, so new connections wait in the kernel's
            // listen queue instead of taking memory here.
            let permit = match self.shared.permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    self.shared.warn_at_cap(state.config.max_connections);
                    tokio::select! {
                        permit = self.shared.permits.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break, // the semaphore is never closed
                        },
                        _ = &mut stop => break,
                    }
                }
            };
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of file descriptors, most likely: back off, do not spin.
                            log::error(&format!("accept failed: {e}"));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let timeouts = state.config.timeouts;
                    let state = state.clone();
                    let activity = Activity::new();
                    let watched = activity.clone();
                    let service = service_fn(move |request: Request<Incoming>| {
                        let state = state.clone();
                        let stream = activity.request(request.version() == Version::HTTP_2);
                        async move { Ok::<_, Infallible>(routes::handle(state, request, stream).await) }
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let connection = connection.into_owned();
                    let (mut phases, ended) = (phases.clone(), connections.clone());
                    let (close, closing) = oneshot::channel();
                    let stop = async move { stopping(&mut phases).await };
                    tokio::spawn(activity::watch(watched, timeouts, stop, close));
                    tokio::spawn(async move {
                        tokio::pin!(connection);
                        tokio::select! {
                            biased;
                            // Connection errors (resets, bad requests) are the client's business.
                            _ = connection.as_mut() => {}
                            close = closing => if close == Ok(Close::Graceful) {
                                connection.as_mut().graceful_shutdown();
                                let _ = connection.await;
                            },
                        }
                        drop(ended);
                        drop(permit);
                    });
                }
                _ = &mut stop => break,
            }
        }

        // Closing the listener (every worker's copy) makes new connections fail at once
        // instead of queueing.
        drop(listener);
        drop(open);
        drop(connections);
        tokio::select! {
            _ = all_ended.recv() => true,
            () = tokio::time::sleep(state.config.timeouts.shutdown_grace) => false,
        }
    }
}

impl Shared {
    fn warn_at_cap(&self, max_connections: usize) {
        let mut last = lock(&self.last_warning);
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            log::warning(&format!(
                "connection limit reached (MAX_CONNECTIONS={max_connections}); new connections wait"
            ));
        }
    }
}

/// Runs each h2c stream on the next worker in turn: one HTTP/2 connection may carry every
/// request, and its streams should not all share one core.
#[derive(Clone)]
struct Spread(Arc<Shared>);

impl<F> hyper::rt::Executor<F> for Spread
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let workers = lock(&self.0.workers);
        let index = self.0.next.fetch_add(1, Ordering::Relaxed) % workers.len();
        workers[index].spawn(future);
    }
}

/// Installs the handlers for SIGTERM (Cloud Run's stop signal) and SIGINT (Ctrl-C) now, and
/// returns a future that resolves on either. Call it before the "listening" line: until a
/// handler is installed, SIGTERM kills the process with no drain, and a handler installed lazily,
/// on the future's first poll, comes after the worker threads have started.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn received(signal: std::io::Result<Signal>) {
            match signal {
                Ok(mut signal) => drop(signal.recv().await),
                // Without this handler the signal keeps its default action.
                Err(_) => std::future::pending().await,
            }
        }
        let terminate = received(signal(SignalKind::terminate()));
        let interrupt = received(signal(SignalKind::interrupt()));
        async move {
            tokio::select! {
                () = terminate => {}
                () = interrupt => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
