//! Sending again what failed before the client saw a byte: which location each attempt goes
//! to, how long to wait between them (full-jitter backoff, `Retry-After`), and when to stop
//! (`MAX_ATTEMPTS`, `RETRY_BUDGET_SECS`, the server's shutdown). Each attempt is recorded for
//! the log.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::Notify;

use crate::config::RetryPolicy as Policy;
use crate::error::ProxyError;
use crate::log::{Attempt, RequestLog};

/// The first backoff's ceiling; each retry in place doubles it.
const BASE: Duration = Duration::from_secs(1);
const CEILING: Duration = Duration::from_secs(30);

/// The server's shutdown, as the requests in flight see it: from then on a wait between
/// attempts ends at once, and no attempt or fan-out call starts, so that every client has
/// an answer within the grace period. Cloning shares it.
#[derive(Clone, Default)]
pub struct Stopping(Arc<StoppingState>);

#[derive(Default)]
struct StoppingState {
    begun: AtomicBool,
    told: Notify,
}

impl Stopping {
    /// The server has begun to shut down.
    pub fn begin(&self) {
        self.0.begun.store(true, Ordering::Release);
        self.0.told.notify_waiters();
    }

    pub fn begun(&self) -> bool {
        self.0.begun.load(Ordering::Acquire)
    }

    /// Resolves once shutdown has begun.
    pub async fn wait(&self) {
        let told = self.0.told.notified();
        tokio::pin!(told);
        // Registered before the look, so that a `begin` between the two is not missed.
        told.as_mut().enable();
        if !self.begun() {
            told.await;
        }
    }
}

/// Where the transport records what a request's attempts came to: its log line.
pub trait Record {
    fn attempts(&mut self) -> &mut Vec<Attempt>;
    /// Shutdown ended the attempts.
    fn ended_by_shutdown(&mut self);

    /// Whether another attempt may follow one that failed with `status`, after `wait`, beyond
    /// what the request's own policy allows: a fan-out's calls share one allowance.
    fn may_retry(&mut self, _status: u16, _wait: Duration) -> bool {
        true
    }
}

impl Record for RequestLog {
    fn attempts(&mut self) -> &mut Vec<Attempt> {
        RequestLog::attempts(self)
    }

    fn ended_by_shutdown(&mut self) {
        RequestLog::ended_by_shutdown(self);
    }
}

/// Attempts recorded apart from a log line (a fan-out's calls).
impl Record for Vec<Attempt> {
    fn attempts(&mut self) -> &mut Vec<Attempt> {
        self
    }

    fn ended_by_shutdown(&mut self) {}
}

/// What one attempt came to.
pub enum Outcome<T> {
    /// An answer to relay: content, or an error not worth repeating.
    Done(T),
    /// A failure that another attempt may not have, and that cannot have started work: 429,
    /// 5xx, a connection that failed before the request was sent, an error event before any
    /// content. `after` is the upstream's `Retry-After`.
    Retry {
        error: ProxyError,
        status: u16,
        after: Option<Duration>,
    },
    /// A failure that would happen again: the client's own mistake, a refused credential.
    Fail(ProxyError),
}

impl<T> Outcome<T> {
    /// An attempt that ended in `error`: worth another if its status says "not now".
    pub fn failed(error: ProxyError, status: u16, after: Option<Duration>) -> Outcome<T> {
        if retryable(status) {
            Outcome::Retry {
                error,
                status,
                after,
            }
        } else {
            Outcome::Fail(error)
        }
    }
}

/// Where each attempt goes and how long to wait before it. The caller loops: attempt at
/// [`Retries::location`], then ask [`Retries::after`] whether to return or wait and go again.
/// Dropping the caller's future (the client left) ends the retries, waits included.
pub struct Retries<'a> {
    policy: Policy,
    /// Vertex's locations; none for a service, whose attempts all go to its one URL.
    locations: &'a [String],
    /// Attempts made.
    made: usize,
    /// The wait before the attempt being made, and all waits so far.
    wait: Duration,
    waited: Duration,
    backoffs: u32,
}

impl<'a> Retries<'a> {
    pub fn new(policy: Policy, locations: &'a [String]) -> Retries<'a> {
        Retries {
            policy,
            locations,
            made: 0,
            wait: Duration::ZERO,
            waited: Duration::ZERO,
            backoffs: 0,
        }
    }

    /// Where the next attempt goes: the locations in turn, from the first; `service` when
    /// there are none.
    pub fn location(&self) -> &'a str {
        match self.locations.len() {
            0 => "service",
            n => self.locations[self.made % n].as_str(),
        }
    }

    /// After an attempt: the result to return, or the next attempt's wait, with the error
    /// that is the answer if it is not made after all. Every attempt is pushed to `log` once
    /// a second one is made: a first success costs nothing.
    pub fn after<T>(
        &mut self,
        outcome: Outcome<T>,
        log: &mut Vec<Attempt>,
    ) -> ControlFlow<Result<T, ProxyError>, Next> {
        let at = self.location();
        let first = self.made == 0;
        self.made += 1;
        let (error, status, after) = match outcome {
            Outcome::Done(answer) => {
                if !first {
                    log.push(record(at, 200, self.wait));
                }
                return ControlFlow::Break(Ok(answer));
            }
            Outcome::Fail(error) => {
                if !first {
                    log.push(record(at, error.status().as_u16(), self.wait));
                }
                return ControlFlow::Break(Err(error));
            }
            Outcome::Retry {
                error,
                status,
                after,
            } => (error, status, after),
        };
        let attempt = record(at, status, self.wait);
        // One attempt, and no other to follow, is no list.
        let give_up = |log: &mut Vec<Attempt>, error| {
            if !first {
                log.push(attempt.clone());
            }
            ControlFlow::Break(Err(error))
        };
        if self.made >= self.policy.max_attempts as usize {
            return give_up(log, error);
        }
        // Another location's capacity is its own: the first time round, it is tried at once.
        let wait = if self.made < self.locations.len() {
            Duration::ZERO
        } else {
            self.backoffs += 1;
            after.unwrap_or_else(|| jittered(self.backoffs - 1))
        };
        // Saturating: `Retry-After` is any number of seconds an upstream cares to send.
        if self.waited.saturating_add(wait) > self.policy.budget {
            return give_up(log, error);
        }
        log.push(attempt);
        self.waited += wait;
        self.wait = wait;
        ControlFlow::Continue(Next {
            wait,
            error,
            status,
        })
    }
}

/// Another attempt, as [`Retries::after`] allows it.
pub struct Next {
    pub wait: Duration,
    /// The last attempt's error: the answer, if no other attempt is made.
    pub error: ProxyError,
    /// Its status: the upstream's, or the proxy's own for a failed connection.
    pub status: u16,
}

fn record(location: &str, status: u16, wait: Duration) -> Attempt {
    Attempt {
        location: location.to_owned(),
        status,
        wait,
    }
}

/// Full jitter: uniform between nothing and a ceiling that doubles with each backoff, so
/// that instances refused together do not come back together.
fn jittered(backoff: u32) -> Duration {
    let ceiling = BASE.saturating_mul(1 << backoff.min(16)).min(CEILING);
    ceiling.mul_f64(random_fraction())
}

/// A fraction in `[0, 1)`. `RandomState` is seeded per process and stepped per call, which
/// is all the randomness jitter needs, without a crate for it.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a status is worth another attempt: too many requests, and the server errors that
/// say "not now" rather than "not this" (529 is Claude's "overloaded").
pub fn retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504 | 529)
}

/// `Retry-After` in seconds. Google sends seconds; a date is taken as absent.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(after: Option<u64>) -> Outcome<&'static str> {
        Outcome::Retry {
            error: ProxyError::Busy("busy".into()),
            status: 429,
            after: after.map(Duration::from_secs),
        }
    }

    const POLICY: Policy = Policy {
        max_attempts: 3,
        budget: Duration::from_secs(20),
    };

    fn places(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Runs with the outcomes given, in order, and returns the result, the locations tried
    /// and the log.
    async fn scripted(
        policy: Policy,
        locations: &[&str],
        outcomes: Vec<Outcome<&'static str>>,
    ) -> (Result<&'static str, ProxyError>, Vec<String>, Vec<Attempt>) {
        let locations = places(locations);
        let mut retries = Retries::new(policy, &locations);
        let (mut tried, mut log) = (Vec::new(), Vec::new());
        for outcome in outcomes {
            tried.push(retries.location().to_owned());
            match retries.after(outcome, &mut log) {
                ControlFlow::Break(result) => return (result, tried, log),
                ControlFlow::Continue(next) => tokio::time::sleep(next.wait).await,
            }
        }
        panic!("more attempts than outcomes: {tried:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_success_records_nothing() {
        let (result, tried, log) = scripted(POLICY, &["global"], vec![Outcome::Done("ok")]).await;
        assert_eq!(result.unwrap(), "ok");
        assert_eq!(tried, ["global"]);
        assert!(log.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_in_place_with_jitter_within_a_doubling_ceiling() {
        let outcomes = vec![busy(None), busy(None), Outcome::Done("ok")];
        let (result, tried, log) = scripted(POLICY, &["global"], outcomes).await;
        assert_eq!(result.unwrap(), "ok");
        assert_eq!(tried, ["global"; 3]);
        let waits: Vec<Duration> = log.iter().map(|a| a.wait).collect();
        assert_eq!(waits[0], Duration::ZERO);
        assert!(waits[1] <= Duration::from_secs(1), "{waits:?}");
        assert!(waits[2] <= Duration::from_secs(2), "{waits:?}");
        let statuses: Vec<u16> = log.iter().map(|a| a.status).collect();
        assert_eq!(statuses, [429, 429, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let outcomes = vec![busy(Some(7)), Outcome::Done("ok")];
        let (result, _, log) = scripted(POLICY, &["global"], outcomes).await;
        assert_eq!(result.unwrap(), "ok");
        assert_eq!(log[1].wait, Duration::from_secs(7));
    }

    /// An upstream may send any number of seconds; after a first wait, the largest still
    /// only ends the retries.
    #[tokio::test(start_paused = true)]
    async fn a_huge_retry_after_ends_the_retries() {
        let outcomes = vec![busy(Some(1)), busy(Some(u64::MAX)), Outcome::Done("ok")];
        let (result, tried, _) = scripted(POLICY, &["global"], outcomes).await;
        assert_eq!(result.unwrap_err(), ProxyError::Busy("busy".into()));
        assert_eq!(tried.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_attempts_or_the_budget_with_the_last_error() {
        let outcomes = vec![busy(None), busy(None), busy(None)];
        let (result, tried, _) = scripted(POLICY, &["global"], outcomes).await;
        assert_eq!(result.unwrap_err(), ProxyError::Busy("busy".into()));
        assert_eq!(tried.len(), 3);
        // A wait past what is left of the budget is not waited: the error goes back at once.
        let outcomes = vec![busy(Some(15)), busy(Some(15))];
        let (result, tried, log) = scripted(POLICY, &["global"], outcomes).await;
        assert!(result.is_err());
        assert_eq!(tried.len(), 2);
        assert_eq!(log.len(), 2);
        let once = Policy {
            max_attempts: 1,
            ..POLICY
        };
        // One attempt is no list, whether retries are off or the first wait is too long.
        let (result, tried, log) = scripted(once, &["global"], vec![busy(None)]).await;
        assert!(result.is_err());
        assert_eq!((tried.len(), log.len()), (1, 0));
        let (result, tried, log) = scripted(POLICY, &["global"], vec![busy(Some(25))]).await;
        assert!(result.is_err());
        assert_eq!((tried.len(), log.len()), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn fails_over_across_locations_at_once_then_backs_off() {
        let outcomes = vec![busy(Some(9)), busy(None), Outcome::Done("ok")];
        let (result, tried, log) = scripted(POLICY, &["global", "us-central1"], outcomes).await;
        assert_eq!(result.unwrap(), "ok");
        assert_eq!(tried, ["global", "us-central1", "global"]);
        assert_eq!(log[1].wait, Duration::ZERO, "failover does not wait");
        assert!(log[2].wait <= Duration::from_secs(1));
        assert_eq!(log[2].location, "global");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_that_would_repeat_is_not_retried() {
        let outcomes = vec![Outcome::Fail(ProxyError::NotFound("no".into()))];
        let (result, tried, log) = scripted(POLICY, &["global", "us-central1"], outcomes).await;
        assert_eq!(result.unwrap_err().status().as_u16(), 404);
        assert_eq!(tried, ["global"]);
        assert!(log.is_empty());
    }

    #[test]
    fn retry_after_in_seconds_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
        assert!(retryable(429) && retryable(503) && !retryable(400) && !retryable(501));
    }

    #[tokio::test]
    async fn shutdown_is_seen_by_waiters_and_latecomers() {
        let stopping = Stopping::default();
        assert!(!stopping.begun());
        let waiter = tokio::spawn({
            let stopping = stopping.clone();
            async move { stopping.wait().await }
        });
        tokio::task::yield_now().await;
        stopping.begin();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is told")
            .unwrap();
        assert!(stopping.begun());
        tokio::time::timeout(Duration::from_secs(5), stopping.wait())
            .await
            .expect("a wait after the start returns at once");
    }

    #[test]
    fn jitter_stays_under_its_ceiling_and_varies() {
        let samples: Vec<Duration> = (0..64).map(|_| jittered(0)).collect();
        assert!(samples.iter().all(|d| *d < BASE));
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
        assert!(jittered(40) < CEILING);
    }
}
