//! What one client connection is doing, and its watcher, which closes the ones that never
//! send a request, the HTTP/1.1 ones that stop sending them, the h2c ones left idle, and all
//! of them when the server stops.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::config::Timeouts;

/// Shared by a connection's service (which reports requests) and its watcher.
pub struct Activity {
    first_request: AtomicBool,
    http2: AtomicBool,
    /// Requests in progress (open streams over HTTP/2): from a request's arrival to the end
    /// (or drop) of its response.
    streams: AtomicUsize,
    /// When the last of them ended, in nanoseconds after `since`.
    last_end: AtomicU64,
    since: Instant,
    /// Wakes the watcher when the first request comes; `notify_one` keeps a permit.
    first: Notify,
}

/// Held by a response body; its request is in progress until it drops.
pub struct Stream(Arc<Activity>);

impl Drop for Stream {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            let since = activity.since.elapsed().as_nanos();
            let since = u64::try_from(since).unwrap_or(u64::MAX);
            activity.last_end.store(since, Ordering::Release);
        }
    }
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            first_request: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            since: Instant::now(),
            first: Notify::new(),
        })
    }

    /// A request has arrived; it is in progress until the returned guard drops.
    pub fn request(self: &Arc<Self>, http2: bool) -> Stream {
        if http2 {
            self.http2.store(true, Ordering::Release);
        }
        self.streams.fetch_add(1, Ordering::AcqRel);
        if !self.first_request.swap(true, Ordering::AcqRel) {
            self.first.notify_one();
        }
        Stream(self.clone())
    }

    /// Resolves once the first request has arrived.
    pub async fn first_request(&self) {
        while !self.first_request.load(Ordering::Acquire) {
            self.first.notified().await;
        }
    }

    pub fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Acquire)
    }

    /// Resolves once the connection has had no request in progress for `limit`.
    ///
    /// One timer serves the connection's life: when it fires it is moved on to `limit` after
    /// the end of the last request, or checked again in `limit` while one is in progress. So
    /// the timer wheel is touched once a `limit`, not twice a request, and requests never
    /// wake the watcher.
    pub async fn idle_for(&self, limit: Duration) {
        let timer = tokio::time::sleep(limit);
        tokio::pin!(timer);
        loop {
            timer.as_mut().await;
            let deadline = match self.streams.load(Ordering::Acquire) {
                0 => {
                    let last_end = Duration::from_nanos(self.last_end.load(Ordering::Acquire));
                    self.since + last_end + limit
                }
                _ => Instant::now() + limit,
            };
            if deadline <= Instant::now() {
                return;
            }
            timer.as_mut().reset(deadline);
        }
    }
}

/// How a connection is to end, as its watcher decides.
#[derive(Debug, PartialEq, Eq)]
pub enum Close {
    /// At once: no request is in progress (none has come, or an HTTP/1.1 connection is
    /// between two).
    Now,
    /// GOAWAY (HTTP/2) or no more keep-alive (HTTP/1.1), and the requests in progress finish.
    Graceful,
}

/// Decides when a connection ends, and says so on `close`; returns early if the connection
/// ends first. `stop` resolves when the server stops serving. A task of its own: the
/// connection's task wakes for each read and write, a few times a request, and would poll
/// these timers and the server's phase each time if they shared its `select!` (about 1 k
/// instructions a request).
pub async fn watch(
    activity: Arc<Activity>,
    timeouts: Timeouts,
    stop: impl Future<Output = ()>,
    mut close: oneshot::Sender<Close>,
) {
    tokio::pin!(stop);
    let decided = async {
        // A connection must send its first request within the header timeout from accept,
        // whatever its protocol: telling HTTP/1.1 from h2c has no timeout of its own. One that
        // does not, or has sent none when the server stops, is closed.
        tokio::select! {
            () = &mut stop => return Close::Now,
            sent = tokio::time::timeout(timeouts.header_read, activity.first_request()) => {
                if sent.is_err() {
                    return Close::Now;
                }
            }
        }
        // With no request in progress, an HTTP/1.1 connection has the header timeout to send
        // its next one, or is closed; an h2c one left idle, or any at shutdown, is asked to
        // finish: GOAWAY, then its open streams run to their end.
        let http2 = activity.is_http2();
        let idle = match http2 {
            true => timeouts.idle_connection,
            false => timeouts.header_read,
        };
        tokio::select! {
            () = activity.idle_for(idle) => match http2 {
                true => Close::Graceful,
                false => Close::Now,
            },
            () = &mut stop => Close::Graceful,
        }
    };
    let decided = tokio::select! {
        decided = decided => decided,
        () = close.closed() => return,
    };
    let _ = close.send(decided);
}
