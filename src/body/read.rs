//! The bounded read of a request body, within the process's memory budget.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request body could not be read; `error.rs` maps each to its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// Declared or sent past `MAX_BODY_BYTES`.
    TooLarge { limit: usize },
    /// `MAX_BUFFERED_BYTES` are held by other requests, and were not freed in time.
    OverBudget { budget: usize },
    /// Not all there within `BODY_READ_TIMEOUT_SECS`.
    TooSlow { timeout: Duration },
    /// The connection failed mid-body.
    Broken,
}

/// The process's budget of request bytes held in memory at once (`MAX_BUFFERED_BYTES`):
/// without it, a few large bodies at once would take an instance past its memory limit, and
/// Cloud Run would kill it with every stream on it.
#[derive(Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    bytes: usize,
}

/// Bytes of the budget held by one request, given back when dropped.
pub struct Held(Option<OwnedSemaphorePermit>);

/// How long a request waits for its share of the budget before it gets 503.
const BUDGET_WAIT: Duration = Duration::from_secs(1);

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        let bytes = bytes.min(Semaphore::MAX_PERMITS);
        Budget {
            permits: Arc::new(Semaphore::new(bytes)),
            bytes,
        }
    }

    /// Takes `bytes` more for `held`, waiting a moment for other requests to give some back.
    async fn take(&self, held: &mut Held, bytes: usize) -> Result<(), ReadError> {
        if bytes == 0 {
            return Ok(());
        }
        let over = ReadError::OverBudget { budget: self.bytes };
        let wanted = u32::try_from(bytes).map_err(|_| over.clone())?;
        let acquire = self.permits.clone().acquire_many_owned(wanted);
        let permit = match self.permits.clone().try_acquire_many_owned(wanted) {
            Ok(permit) => permit,
            Err(_) => match tokio::time::timeout(BUDGET_WAIT, acquire).await {
                Ok(Ok(permit)) => permit,
                _ => return Err(over),
            },
        };
        match &mut held.0 {
            Some(all) => all.merge(permit),
            None => held.0 = Some(permit),
        }
        Ok(())
    }
}

/// Reads the whole body into one buffer, sized from `Content-Length` when there is one, never
/// past `limit` and within `timeout`: the model must be found before anything goes upstream.
/// The bytes are counted against `budget` until the returned [`Held`] is dropped.
pub async fn read_bounded(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    timeout: Duration,
    budget: &Budget,
) -> Result<(Bytes, Held), ReadError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ReadError::TooLarge { limit });
    }
    let capacity = declared.map_or(0, |len| len.min(limit as u64) as usize);
    tokio::time::timeout(timeout, read(body, limit, capacity, budget))
        .await
        .map_err(|_| ReadError::TooSlow { timeout })?
}

async fn read(
    mut body: Incoming,
    limit: usize,
    capacity: usize,
    budget: &Budget,
) -> Result<(Bytes, Held), ReadError> {
    let mut held = Held(None);
    // A declared length is taken whole, before the buffer is allocated; bytes past it (or of a
    // body with none) are taken as they come.
    if let Err(over) = budget.take(&mut held, capacity).await {
        return Err(drained(body, over).await);
    }
    let mut buffer = BytesMut::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|_| ReadError::Broken)?.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(ReadError::TooLarge { limit });
            }
            let beyond = (buffer.len() + data.len()).saturating_sub(capacity.max(buffer.len()));
            if let Err(over) = budget.take(&mut held, beyond).await {
                drop((buffer, held));
                return Err(drained(body, over).await);
            }
            buffer.extend_from_slice(&data);
        }
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
