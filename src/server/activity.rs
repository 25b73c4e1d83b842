//! What one client connection is doing, so that the server can close the ones that never
//! send a request, the HTTP/1.1 ones that stop sending them, and the h2c ones left idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

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
