//! What the `:predict` calls of one embeddings request share: one allowance of retries, a
//! pause on new calls while one is refused 429, and the counts the log line shows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::FAN_OUT;
use crate::config::RetryPolicy;
use crate::error::ProxyError;
use crate::log::{Attempt, Calls};
use crate::upstream::Record;

/// What the calls of one request share: one allowance of retries, whatever the fan-out
/// (`MAX_ATTEMPTS - 1` for each call that may run at once, and `RETRY_BUDGET_SECS` from the
/// start), and a pause on new calls while one is refused 429.
pub(super) struct Allowance {
    retries_left: AtomicUsize,
    deadline: tokio::time::Instant,
    /// Calls being retried after a 429: no new call starts meanwhile.
    throttled: AtomicUsize,
    resumed: tokio::sync::Notify,
    /// A call has failed, so the request has: no other starts.
    pub(super) failed: AtomicBool,
    /// The request's log line counts the calls.
    pub(super) calls: Arc<Calls>,
}

impl Allowance {
    pub(super) fn new(policy: RetryPolicy, calls: Arc<Calls>) -> Allowance {
        let per_call = policy.max_attempts.saturating_sub(1) as usize;
        Allowance {
            retries_left: AtomicUsize::new(per_call * FAN_OUT),
            deadline: tokio::time::Instant::now() + policy.budget,
            throttled: AtomicUsize::new(0),
            resumed: tokio::sync::Notify::new(),
            failed: AtomicBool::new(false),
            calls,
        }
    }

    /// One retry, after `wait`, if the request has one left.
    fn take(&self, wait: Duration) -> bool {
        if tokio::time::Instant::now() + wait > self.deadline {
            return false;
        }
        (self.retries_left)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    pub(super) fn resume(&self) {
        self.throttled.fetch_sub(1, Ordering::AcqRel);
        self.resumed.notify_waiters();
    }

    /// Resolves when no call is being refused 429.
    pub(super) async fn unthrottled(&self) {
        loop {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if self.throttled.load(Ordering::Acquire) == 0 {
                return;
            }
            resumed.await;
        }
    }
}

/// What one call's attempts draw on: the request's allowance.
pub(super) struct CallRecord<'a> {
    pub(super) shared: &'a Allowance,
    /// The call's own attempts; the request's line counts them, not each.
    pub(super) attempts: Vec<Attempt>,
    /// This call has been refused 429, and new calls wait for its answer.
    pub(super) throttling: bool,
}

impl Record for CallRecord<'_> {
    fn attempts(&mut self) -> &mut Vec<Attempt> {
        &mut self.attempts
    }

    fn ended_by_shutdown(&mut self) {
        (self.shared.calls.ended_by_shutdown).store(true, Ordering::Relaxed);
    }

    fn may_retry(&mut self, status: u16, wait: Duration) -> bool {
        if status == 429 && !self.throttling {
            self.throttling = true;
            self.shared.throttled.fetch_add(1, Ordering::AcqRel);
        }
        let allowed = self.shared.take(wait);
        if allowed {
            self.shared.calls.made.fetch_add(1, Ordering::Relaxed);
            self.shared.calls.retried.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }
}

/// The answer of a fan-out that shutdown stopped before all its calls had started.
pub(super) fn shutting_down() -> ProxyError {
    ProxyError::Busy(
        "the proxy is shutting down and started no more of this request's calls; retry in a moment"
            .into(),
    )
}
