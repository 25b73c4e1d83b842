//! What one client connection is doing, so that the server can close the ones that never
//! send a request and the h2c ones left idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Shared by a connection's service (which reports requests) and its watcher.
#[derive(Default)]
pub struct Activity {
    first_request: AtomicBool,
    http2: AtomicBool,
    /// Open HTTP/2 streams: from a request's arrival to the end (or drop) of its response.
    streams: AtomicUsize,
    /// Wakes the watcher; `notify_one` keeps a permit, so no change is missed.
    changed: Notify,
}

/// Held by an HTTP/2 response body; the stream is open until it drops.
pub struct Stream(Arc<Activity>);

impl Drop for Stream {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_one();
        }
    }
}

impl Activity {
    /// A request has arrived. Over HTTP/2 its stream is counted until the returned guard
    /// drops; HTTP/1.1 connections are not watched for idleness (one request at a time, and
    /// the client or Cloud Run's front end closes them).
    pub fn request(self: &Arc<Self>, http2: bool) -> Option<Stream> {
        let first = !self.first_request.swap(true, Ordering::AcqRel);
        if http2 {
            self.http2.store(true, Ordering::Release);
            self.streams.fetch_add(1, Ordering::AcqRel);
        }
        if first || http2 {
            self.changed.notify_one();
        }
        http2.then(|| Stream(self.clone()))
    }

    /// Resolves once the first request has arrived.
    pub async fn first_request(&self) {
        while !self.first_request.load(Ordering::Acquire) {
            self.changed.notified().await;
        }
    }

    /// Resolves once an HTTP/2 connection has had no open stream for `limit`; never for
    /// HTTP/1.1.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            if !self.http2.load(Ordering::Acquire) || self.streams.load(Ordering::Acquire) > 0 {
                self.changed.notified().await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(limit) => {
                    if self.streams.load(Ordering::Acquire) == 0 {
                        return;
                    }
                }
                () = self.changed.notified() => {}
            }
        }
    }
}
