//! The bounded read of a request body, within the process's memory budget and the key's share
//! of it, at a pace that does not hold memory for nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why a request body could not be read; `error.rs` maps each to its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// Declared or sent past `MAX_BODY_BYTES`.
    TooLarge { limit: usize },
    /// `MAX_BUFFERED_BYTES` are held by other requests, and were not freed in time.
    OverBudget { budget: usize },
    /// The key's own requests hold its share (`MAX_BUFFERED_BYTES_PER_KEY`), and did not free
    /// enough of it in time.
    OverShare { share: usize },
    /// Not all there within `BODY_READ_TIMEOUT_SECS`.
    TooSlow { timeout: Duration },
    /// Arriving at less than `MIN_BODY_BYTES_PER_SEC`, on average since its first byte.
    Trickle { min_rate: u64 },
    /// The connection failed mid-body.
    Broken,
}

/// How a body is read: `MAX_BODY_BYTES`, `BODY_READ_TIMEOUT_SECS`, `MIN_BODY_BYTES_PER_SEC`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
    /// 0: any pace, within the timeout.
    pub min_rate: u64,
}

/// The process's budget of request bytes held in memory at once (`MAX_BUFFERED_BYTES`), and
/// each key's share of it (`MAX_BUFFERED_BYTES_PER_KEY`): without the budget, a few large
/// bodies at once would take an instance past its memory limit, and Cloud Run would kill it
/// with every stream on it; without the share, one key could take the budget from every
/// other.
#[derive(Clone)]
pub struct Budget {
    all: Arc<Semaphore>,
    bytes: usize,
    share: usize,
    /// Each key's share, made when the key first sends a body. Keys are the operator's list,
    /// so the map stays small.
    keys: Arc<Mutex<HashMap<Box<str>, Arc<Semaphore>>>>,
}

/// One request's bytes of the budget and of its key's share, taken as its bytes arrive and
/// given back when it is dropped.
pub struct Held {
    all: Arc<Semaphore>,
    bytes: usize,
    key: Arc<Semaphore>,
    share: usize,
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    /// What is left of the time the request may wait, in all, for room to free up.
    wait: Duration,
}

/// How long a request may wait, in all, for its bytes to fit before it gets 503.
const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// The pace of a body is checked this often, from its first byte.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// A body's buffer starts no larger than this, whatever its declared length: memory follows
/// the bytes that came, not the ones promised.
const FIRST_CAPACITY: usize = 64 * 1024;

impl Budget {
    pub fn new(bytes: usize, share: usize) -> Budget {
        let bytes = bytes.min(Semaphore::MAX_PERMITS);
        Budget {
            all: Arc::new(Semaphore::new(bytes)),
            bytes,
            share: share.min(bytes),
            keys: Arc::default(),
        }
    }

    /// A claim for a request of `key`'s, holding nothing yet.
    pub fn hold(&self, key: &str) -> Held {
        let share = self.share;
        // The map is whole whatever a holder did: an entry is only ever added.
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let key = match keys.get(key) {
            Some(semaphore) => semaphore.clone(),
            None => (keys.entry(key.into()))
                .or_insert_with(|| Arc::new(Semaphore::new(share)))
                .clone(),
        };
        drop(keys);
        Held {
            all: self.all.clone(),
            bytes: self.bytes,
            key,
            share,
            permits: None,
            wait: BUDGET_WAIT,
        }
    }
}

impl Held {
    /// An empty claim on the same budget and key's share, with a wait of its own: for what
    /// a request holds beside its body (the answers of an embeddings fan-out, say).
    pub fn another(&self) -> Held {
        Held {
            all: self.all.clone(),
            bytes: self.bytes,
            key: self.key.clone(),
            share: self.share,
            permits: None,
            wait: BUDGET_WAIT,
        }
    }

    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.permits
            .as_ref()
            .map_or(0, |(key, _)| key.num_permits())
    }

    /// Holds `bytes` from now on: gives back what is held beyond, or takes what is missing.
    pub async fn resize(&mut self, bytes: usize) -> Result<(), ReadError> {
        let held = self.bytes();
        if bytes >= held {
            return self.take(bytes - held).await;
        }
        if let Some((key, all)) = &mut self.permits {
            // Dropped at once: the surplus goes back to the budget and the share.
            drop((key.split(held - bytes), all.split(held - bytes)));
        }
        Ok(())
    }

    /// Takes `bytes` more, waiting (at most what is left of the request's one wait) for its
    /// key's requests, then every request, to give some back.
    pub async fn take(&mut self, bytes: usize) -> Result<(), ReadError> {
        if bytes == 0 {
            return Ok(());
        }
        let share = ReadError::OverShare { share: self.share };
        let over = ReadError::OverBudget { budget: self.bytes };
        let wanted = u32::try_from(bytes).map_err(|_| share.clone())?;
        let (key, waited) = acquire(&self.key, wanted, self.wait).await;
        self.wait = self.wait.saturating_sub(waited);
        let all = match key {
            Some(_) => {
                let (all, waited) = acquire(&self.all, wanted, self.wait).await;
                self.wait = self.wait.saturating_sub(waited);
                all
            }
            None => None,
        };
        let key = key.ok_or(share)?;
        let all = all.ok_or(over)?;
        match &mut self.permits {
            Some((held_key, held_all)) => {
                held_key.merge(key);
                held_all.merge(all);
            }
            None => self.permits = Some((key, all)),
        }
        Ok(())
    }
}

/// `wanted` permits of `semaphore`, at once or within `wait`, and how long that took. The
/// clock is read only when there is a wait: most requests find their permits at once.
async fn acquire(
    semaphore: &Arc<Semaphore>,
    wanted: u32,
    wait: Duration,
) -> (Option<OwnedSemaphorePermit>, Duration) {
    if let Ok(permit) = semaphore.clone().try_acquire_many_owned(wanted) {
        return (Some(permit), Duration::ZERO);
    }
    let started = Instant::now();
    let acquire = semaphore.clone().acquire_many_owned(wanted);
    let permit = tokio::time::timeout(wait, acquire)
        .await
        .ok()
        .and_then(Result::ok);
    (permit, started.elapsed())
}

/// Reads the whole body into one buffer, never past the limit and within the timeout, at a
/// pace of at least the minimum rate: the model must be found before anything goes upstream.
/// A declared length past the limit is refused at once; the bytes are counted in `held` as
/// they arrive, never before.
pub async fn read_bounded(
    headers: &HeaderMap,
    body: Incoming,
    limits: BodyLimits,
    held: Held,
) -> Result<(Bytes, Held), ReadError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = limits.max_bytes;
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ReadError::TooLarge { limit });
    }
    let capacity = declared.map_or(0, |len| (len as usize).min(FIRST_CAPACITY));
    let timeout = limits.timeout;
    // One reading of the clock for both of the read's timers.
    let now = Instant::now();
    tokio::time::timeout_at(now + timeout, read(body, limits, capacity, held, now))
        .await
        .map_err(|_| ReadError::TooSlow { timeout })?
}

async fn read(
    mut body: Incoming,
    limits: BodyLimits,
    capacity: usize,
    mut held: Held,
    now: Instant,
) -> Result<(Bytes, Held), ReadError> {
    let mut buffer = BytesMut::with_capacity(capacity);
    // The body's first byte, and the next look at its pace. The timer is set only once a body
    // has begun and not ended with its first bytes, so that a body that comes whole (most do)
    // never sets it: set, it would be due sooner than any other timer of the worker's, and
    // tokio would wake the worker's poll to say so, an `eventfd` write and an `epoll_wait` a
    // request.
    let mut first: Option<Instant> = None;
    let mut pacing = false;
    let check = tokio::time::sleep_until(now + RATE_WINDOW);
    tokio::pin!(check);
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            () = &mut check, if pacing && limits.min_rate > 0 => {
                let since = first.map_or(Duration::ZERO, |at| at.elapsed());
                if (buffer.len() as f64) < limits.min_rate as f64 * since.as_secs_f64() {
                    return Err(ReadError::Trickle { min_rate: limits.min_rate });
                }
                check.as_mut().reset(Instant::now() + RATE_WINDOW);
                continue;
            }
        };
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(|_| ReadError::Broken)?.into_data() else {
            continue;
        };
        if buffer.len() + data.len() > limits.max_bytes {
            return Err(ReadError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        if first.is_none() && !data.is_empty() {
            let now = Instant::now();
            first = Some(now);
            if !body.is_end_stream() {
                check.as_mut().reset(now + RATE_WINDOW);
                pacing = true;
            }
        }
        if let Err(over) = held.take(data.len()).await {
            drop((buffer, held));
            return Err(drained(body, over).await);
        }
        buffer.extend_from_slice(&data);
    }
    Ok((buffer.freeze(), held))
}

/// Reads the rest of a refused body and throws it away, so that the client, which sends its
/// whole body before it reads, gets the answer rather than a reset connection. It costs no
/// memory, and the body read timeout still bounds it.
async fn drained(mut body: Incoming, error: ReadError) -> ReadError {
    while let Some(Ok(_)) = body.frame().await {}
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_holds_at_most_its_share_and_the_rest_is_for_the_others() {
        let budget = Budget::new(1000, 600);
        let mut one = budget.hold("one");
        one.take(500).await.unwrap();
        // The same key, past its share: a wait of at most a second in all, then refused.
        let mut again = budget.hold("one");
        let started = Instant::now();
        assert_eq!(
            again.take(200).await,
            Err(ReadError::OverShare { share: 600 })
        );
        assert_eq!(started.elapsed(), BUDGET_WAIT);
        // The wait is the request's, in all: spent, it is not waited again.
        assert_eq!(
            again.take(200).await,
            Err(ReadError::OverShare { share: 600 })
        );
        assert_eq!(started.elapsed(), BUDGET_WAIT);
        again.take(100).await.unwrap();
        // Another key has the rest of the budget, and no more.
        let mut other = budget.hold("other");
        other.take(400).await.unwrap();
        let mut third = budget.hold("third");
        assert_eq!(
            third.take(100).await,
            Err(ReadError::OverBudget { budget: 1000 })
        );
        // What a request held comes back when it is dropped.
        drop((one, again));
        third.take(100).await.unwrap();
        budget.hold("one").take(600).await.unwrap_err();
        budget.hold("one").take(400).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_grows_shrinks_and_has_siblings_on_the_same_share() {
        let budget = Budget::new(1000, 500);
        let mut body = budget.hold("one");
        body.take(300).await.unwrap();
        let mut answer = body.another();
        answer.resize(200).await.unwrap();
        assert_eq!((body.bytes(), answer.bytes()), (300, 200));
        // The key's share is spent between the two...
        assert!(budget.hold("one").take(1).await.is_err());
        // ...until the answer gives some back.
        answer.resize(50).await.unwrap();
        assert_eq!(answer.bytes(), 50);
        budget.hold("one").take(150).await.unwrap();
    }
}
